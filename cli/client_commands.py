"""`edgetune jobs …`, `edgetune artifacts …` and `edgetune api-keys …`: the verbs for people, over the
REST API through `cli.client` (EDGETUNE_API_URL, EDGETUNE_API_KEY). Machine-readable results go to
stdout (a job id, JSON, file paths); progress, summaries and notes go to stderr."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click
import yaml

from cli.client import ApiError, EdgetuneClient
from domain.lists import STAGES

# worker/stages/'s order, for the progress bar only: a stage not listed leaves the bar where it is


@contextmanager
def _api() -> Iterator[EdgetuneClient]:
    try:
        client = EdgetuneClient()
        try:
            yield client
        finally:
            client.close()
    except ApiError as exc:
        raise click.ClickException(str(exc)) from None


def _echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2))


def _wait(client: EdgetuneClient, job_id: str, timeout: float | None, poll: float) -> dict[str, Any]:
    """Follow the job with a progress bar over its stages; returns the final job. The bar moves on
    each event as it arrives (the stream names a stage when it starts) and fills on success."""
    shown = {"pos": 0}

    def label(item: dict[str, Any] | None) -> str:
        if item is None:
            return ""
        if item.get("object") == "fine_tuning.job.event":
            return str(item["message"])[:60]
        return f"{item['status']} {item.get('stage') or ''}".strip()

    # update_min_steps=0: every update redraws, so each event's message shows, not only a new stage
    with click.progressbar(
        length=len(STAGES),
        label=job_id,
        show_eta=False,
        item_show_func=label,
        file=sys.stderr,
        update_min_steps=0,
    ) as bar:

        def update(item: dict[str, Any]) -> None:
            # an event names its stage in data.stage; a job (the last update, or each poll) in stage
            event = item.get("object") == "fine_tuning.job.event"
            stage = (item.get("data") or {}).get("stage") if event else item.get("stage")
            pos = len(STAGES) if item.get("status") == "succeeded" else shown["pos"]
            if stage in STAGES:
                pos = max(pos, STAGES.index(stage))
            bar.update(pos - shown["pos"], item)
            shown["pos"] = pos

        try:
            return client.wait(job_id, poll_s=poll, timeout_s=timeout, on_update=update)
        except TimeoutError as exc:
            raise click.ClickException(str(exc)) from None


def _finish(job: dict[str, Any]) -> None:
    cost = f"${job.get('total_cost_usd', 0.0):.4f}"
    click.echo(f"{job['id']}: {job['status']} ({cost})", err=True)
    if job["status"] != "succeeded":
        if job.get("error"):
            click.echo(f"error: {job['error'].get('message')}", err=True)
        raise SystemExit(1)


@click.group()
def jobs() -> None:
    """Fine-tuning jobs on an edgetune API (EDGETUNE_API_URL, EDGETUNE_API_KEY)."""


def _body(config: Path | None, options: dict[str, Any]) -> dict[str, Any]:
    """The create body: a JSON/YAML file if given, then each option given on the command line."""
    body: dict[str, Any] = yaml.safe_load(config.read_text()) if config else {}
    labels, examples = options.pop("labels"), options.pop("num_examples")
    body |= {k: v for k, v in options.items() if v not in (None, ())}
    if "targets" in body:
        body["targets"] = list(body["targets"])
    if isinstance(body.get("task"), str):
        body["task"] = {"description": body["task"]} | ({"labels": list(labels)} if labels else {})
        if examples:
            body["task"]["num_examples"] = examples
    if "n_epochs" in body:
        hp = {"n_epochs": body.pop("n_epochs")}
        body["method"] = {"type": "supervised", "supervised": {"hyperparameters": hp}}
    return body


@jobs.command("create")
@click.option(
    "--config", type=click.Path(exists=True, dir_okay=False, path_type=Path), help="Body as JSON/YAML."
)
@click.option("--model", help="Base model id, e.g. LiquidAI/LFM2-350M.")
@click.option(
    "--file",
    "upload",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Upload this JSONL and train on it.",
)
@click.option("--training-file", help="An uploaded file id (file-...).")
@click.option("--validation-file", help="An uploaded file id for evaluation.")
@click.option("--task", help="Plain-language task: data is synthesized when there is no training file.")
@click.option("--label", "labels", multiple=True, help="A classification label for --task (repeat).")
@click.option("--examples", "num_examples", type=int, help="Rows to synthesize for --task.")
@click.option("--target", "targets", multiple=True, help="Device target (repeat), e.g. laptop-cpu.")
@click.option("--epochs", "n_epochs", type=int)
@click.option("--suffix")
@click.option("--seed", type=int)
@click.option("--budget-usd", type=float, help="Refuse the job if its quote is over this; stop it there.")
@click.option("--idempotency-key", help="Retrying with the same key returns the same job.")
@click.option("--dry-run", is_flag=True, help="Only plan: print the quote, fit and time; start nothing.")
@click.option("--wait", is_flag=True, help="Wait for the job to end, with a progress bar.")
@click.option("--timeout", type=float, default=None, help="Seconds to --wait before giving up.")
@click.option(
    "--poll",
    type=float,
    default=2.0,
    show_default=True,
    help="Seconds between polls, when the server has no event stream to follow.",
)
def jobs_create(
    config: Path | None,
    upload: Path | None,
    idempotency_key: str | None,
    dry_run: bool,
    wait: bool,
    timeout: float | None,
    poll: float,
    **options: Any,
) -> None:
    """Create a job (or plan it with --dry-run); prints the job id."""
    with _api() as client:
        if upload:
            options["training_file"] = client.upload_file(upload)["id"]
            click.echo(f"uploaded {upload} as {options['training_file']}", err=True)
        body = _body(config, options)
        if dry_run:
            plan = client.plan_job(body)
            _echo_json(plan)
            fits = "fits" if plan["fits"] else f"does not fit: {plan['no_fit_reason']}"
            click.echo(
                f"quote ${plan['quote']['total_usd']:.4f}, about {plan['estimated_seconds']['total']:.0f}s, "
                f"{fits}; budget: {plan['budget']['reason'] or 'ok'}",
                err=True,
            )
            return
        job = client.create_job(body, idempotency_key)
        click.echo(job["id"])
        if wait:
            _finish(_wait(client, job["id"], timeout, poll))


@jobs.command("list")
@click.option("--limit", type=int, default=20, show_default=True)
@click.option("--after", help="Cursor: the last job id of the previous page.")
def jobs_list(limit: int, after: str | None) -> None:
    """Jobs, newest first: id, status, stage, base model, cost."""
    with _api() as client:
        for j in client.list_jobs(limit, after)["data"]:
            click.echo(
                f"{j['id']}\t{j['status']}\t{j.get('stage') or '-'}\t{j['model']}\t${j['total_cost_usd']:.4f}"
            )


@jobs.command("get")
@click.argument("job_id")
@click.option("--wait", is_flag=True, help="Wait for the job to end, with a progress bar.")
@click.option("--timeout", type=float, default=None)
@click.option(
    "--poll", type=float, default=2.0, show_default=True, help="Seconds between polls, without a stream."
)
def jobs_get(job_id: str, wait: bool, timeout: float | None, poll: float) -> None:
    """One job as JSON (after it ends, with --wait)."""
    with _api() as client:
        job = _wait(client, job_id, timeout, poll) if wait else client.get_job(job_id)
        _echo_json(job)
        if wait:
            _finish(job)


@jobs.command("cancel")
@click.argument("job_id")
def jobs_cancel(job_id: str) -> None:
    """Cancel a job that has not finished."""
    with _api() as client:
        click.echo(f"{job_id}\t{client.cancel_job(job_id)['status']}")


@jobs.command("events")
@click.argument("job_id")
@click.option("--limit", type=int, default=20, show_default=True, help="The newest N, printed oldest first.")
def jobs_events(job_id: str, limit: int) -> None:
    """A job's newest events: time, level, message."""
    with _api() as client:
        for e in reversed(client.list_events(job_id, limit)["data"]):
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["created_at"]))
            click.echo(f"{stamp}\t{e['level']}\t{e['message']}")


@click.group()
def artifacts() -> None:
    """Device artifacts of finished jobs."""


@artifacts.command("download")
@click.argument("artifact_ids", nargs=-1)
@click.option("--job", "job_id", help="Download every artifact of this job (or only --target).")
@click.option("--target", help="With --job: only this device target.")
@click.option(
    "-o", "--out", type=click.Path(file_okay=False, path_type=Path), default=Path("."), show_default=True
)
def artifacts_download(
    artifact_ids: tuple[str, ...], job_id: str | None, target: str | None, out: Path
) -> None:
    """Download artifacts (sha256-checked); prints each file's path."""
    if not artifact_ids and not job_id:
        raise click.UsageError("give artifact ids, or --job JOB_ID")
    with _api() as client:
        ids = list(artifact_ids)
        if job_id:
            listed = client.list_artifacts(job_id, limit=100)["data"]
            ids += [a["id"] for a in listed if target in (None, a["target"])]
            if not ids:
                raise click.ClickException(
                    f"job {job_id} has no artifacts" + (f" for {target}" if target else "")
                )
        for artifact_id in ids:
            size = client.get_artifact(artifact_id)["bytes"]
            with click.progressbar(length=size, label=artifact_id, file=sys.stderr) as bar:
                path = client.download_artifact(artifact_id, out, on_bytes=bar.update)
            click.echo(str(path))


@click.group("api-keys")
def api_keys() -> None:
    """Your org's API keys over the API (EDGETUNE_API_KEY is any of them). `edgetune keys` is the
    operator's equivalent, on the database."""


def _echo_secret(key: dict[str, Any], what: str) -> None:
    """The new key as JSON on stdout (its secret in `key`), and a note on stderr."""
    _echo_json(key)
    click.echo(f"{what}: the secret `key` above is shown only this once; store it now.", err=True)


@api_keys.command("create")
@click.option("--name", default="default", show_default=True, help="A label to tell your keys apart.")
@click.option("--expires-days", type=float, default=None, help="Refuse the key after this many days.")
def api_keys_create(name: str, expires_days: float | None) -> None:
    """Create a key; prints it as JSON, its secret included."""
    with _api() as client:
        made = client.create_api_key(name, expires_days)
    _echo_secret(made, f"created {made['id']}")


@api_keys.command("list")
@click.option("--limit", type=int, default=20, show_default=True)
@click.option("--after", help="Cursor: the last key id of the previous page.")
def api_keys_list(limit: int, after: str | None) -> None:
    """The org's keys as a JSON page (never their secrets): id, name, prefix, status, times."""
    with _api() as client:
        _echo_json(client.list_api_keys(limit, after))


@api_keys.command("get")
@click.argument("key_id")
def api_keys_get(key_id: str) -> None:
    """One key as JSON (never its secret)."""
    with _api() as client:
        _echo_json(client.get_api_key(key_id))


@api_keys.command("revoke")
@click.argument("key_id")
def api_keys_revoke(key_id: str) -> None:
    """Refuse a key from now on (cuts a rotation's grace period short); prints it as JSON."""
    with _api() as client:
        _echo_json(client.revoke_api_key(key_id))


@api_keys.command("rotate")
@click.argument("key_id")
@click.option(
    "--grace-seconds", type=int, default=0, show_default=True, help="How long the old key keeps working."
)
@click.option(
    "--expires-days", type=float, default=None, help="The new key's lifetime (default: the old one's)."
)
def api_keys_rotate(key_id: str, grace_seconds: int, expires_days: float | None) -> None:
    """A new key in place of KEY_ID (same name); prints it as JSON, its secret included."""
    with _api() as client:
        made = client.rotate_api_key(key_id, grace_seconds, expires_days)
    until = "now" if not grace_seconds else f"in {grace_seconds}s"
    _echo_secret(made, f"{made['id']} replaces {key_id}, which stops working {until}")
