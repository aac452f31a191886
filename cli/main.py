"""`edgetune`: the one command-line entry point (API server, worker, migrations, keys, demo, the MCP
stdio server, and the `jobs` / `artifacts` verbs for people from cli/client_commands.py)."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click


@click.group()
def main() -> None:
    """edgetune: fine-tuning as a service for Liquid AI's LFM models."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
def serve(host: str, port: int) -> None:
    """Run the REST API (OpenAI-compatible under /v1)."""
    import uvicorn

    uvicorn.run("api.main:app", host=host, port=port, log_level="info")


@main.command()
@click.option("--loglevel", default="INFO", show_default=True)
@click.option("--beat", is_flag=True, help="Also run Celery beat (the periodic billing push); run one only.")
def worker(loglevel: str, beat: bool) -> None:
    """Run a Celery worker: one job at a time (a GPU, or the CPU, runs one training at once), on
    the queue of its compute class (EDGETUNE_WORKER_COMPUTE; infra/queue.py worker_queue)."""
    from infra.queue import worker_queue
    from infra.settings import get_settings
    from worker.celery_app import celery_app

    celery_app.worker_main(
        [
            "worker",
            # One task thread: the job runs there (its stages in child processes), while the main
            # thread keeps answering remote control, so `edgetune pools` sees a busy worker as live
            # (a solo pool answers only between jobs).
            "--pool=threads",
            "--concurrency=1",
            f"--loglevel={loglevel}",
            "-Q",
            worker_queue(),
            # a node name per process (Celery's default, celery@<host>, is the same for every worker
            # of a host, and remote control's replies would merge them): class, pid and host
            f"--hostname={get_settings().worker_compute}.{os.getpid()}@%h",
            "--without-gossip",
            "--without-mingle",
            *(["--beat"] if beat else []),
        ]
    )


@main.command()
def migrate() -> None:
    """Upgrade the database to the newest schema (alembic upgrade head)."""
    from infra.migrate import upgrade_head

    upgrade_head()
    click.echo("database is at the newest schema")


@main.group()
def keys() -> None:
    """API keys."""


@keys.command("create")
@click.option("--org", "org_name", required=True, help="Organisation name (created if new).")
@click.option("--name", default="default", show_default=True, help="A label to tell the org's keys apart.")
@click.option("--expires-days", type=float, default=None, help="Refuse the key after this many days.")
def keys_create(org_name: str, name: str, expires_days: float | None) -> None:
    """Create an API key; it is printed once and stored only as a hash."""
    from infra.db import session_scope
    from services.api_keys import create_key, resolve_expiry

    with _service_errors(), session_scope() as session:
        org, key = create_key(
            session=session,
            org_name=org_name,
            name=name,
            expires_at=resolve_expiry(expires_in_days=expires_days),
        )
        org_id = org.id
    click.echo(f"org: {org_name} ({org_id})", err=True)
    click.echo(key)


@keys.command("list")
@click.option("--org", "org_name", required=True)
def keys_list(org_name: str) -> None:
    """The org's keys, newest first: id, name, prefix, status, created, expires, last used (UTC)."""
    from sqlalchemy import select

    from infra.db import session_scope
    from infra.models import Org
    from services.api_keys import list_keys, to_public

    with _service_errors(), session_scope() as session:
        org = session.scalar(select(Org).where(Org.name == org_name))
        if org is None:
            raise click.ClickException(f"no org named {org_name!r}")
        rows, after = [], None
        while True:
            page, has_more = list_keys(session=session, org=org, after=after, limit=100)
            rows += [to_public(row) for row in page]
            if not has_more:
                break
            after = page[-1].id
    for k in rows:
        when = [_utc(k[f]) for f in ("created_at", "expires_at", "last_used_at")]
        click.echo("\t".join([k["id"], k["name"], k["prefix"], k["status"], *when]))


@keys.command("revoke")
@click.argument("key_id")
def keys_revoke(key_id: str) -> None:
    """Revoke a key (any org's): it is refused from now on."""
    from infra.db import session_scope
    from services.api_keys import find_key_any_org, revoke

    with _service_errors(), session_scope() as session:
        org, _ = find_key_any_org(session=session, key_id=key_id)
        row = revoke(session=session, org=org, key_id=key_id)
        click.echo(f"{row.id}\trevoked\t{org.name}")


@keys.command("rotate")
@click.argument("key_id")
@click.option(
    "--grace-seconds", type=int, default=0, show_default=True, help="How long the old key still works."
)
@click.option(
    "--expires-days", type=float, default=None, help="The new key's expiry (default: the old one's lifetime)."
)
def keys_rotate(key_id: str, grace_seconds: int, expires_days: float | None) -> None:
    """Replace a key with a new one (same name, new secret printed once); the old one is revoked now
    or after --grace-seconds."""
    from infra.db import session_scope
    from services.api_keys import find_key_any_org, rotate

    with _service_errors(), session_scope() as session:
        org, _ = find_key_any_org(session=session, key_id=key_id)
        row, key, old = rotate(
            session=session,
            org=org,
            key_id=key_id,
            grace_period_seconds=grace_seconds,
            expires_in_days=expires_days,
        )
        click.echo(
            f"{row.id} replaces {old.id} (revoked from {_utc(old.revoked_at)}), org {org.name}", err=True
        )
    click.echo(key)


def _utc(t: int | None) -> str:
    import datetime as dt

    return "-" if t is None else dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@contextmanager
def _service_errors() -> Iterator[None]:
    """A service's refusal (an unknown key, a bad expiry) as a CLI error, not a traceback."""
    from services.errors import EdgetuneError

    try:
        yield
    except EdgetuneError as exc:
        raise click.ClickException(exc.message) from None


@main.group()
def orgs() -> None:
    """Organisations."""


@orgs.command("budget")
@click.option("--org", "org_name", required=True)
@click.option("--usd", type=float, default=None, help="Total budget in USD; omit to remove the limit.")
def orgs_budget(org_name: str, usd: float | None) -> None:
    """Set an org's total budget: jobs whose quote exceeds what remains are refused (402)."""
    from sqlalchemy import select

    from infra.db import session_scope
    from infra.models import Org
    from services.spend_budgets import remaining_usd, set_org_budget

    with session_scope() as session:
        org = session.scalar(select(Org).where(Org.name == org_name))
        if org is None:
            raise click.ClickException(f"no org named {org_name!r}")
        set_org_budget(session=session, org=org, usd=usd)
        left = remaining_usd(session, org)
    click.echo(
        f"{org_name}: budget {'unlimited' if usd is None else f'${usd:.2f}'}"
        + ("" if left is None else f", ${left:.4f} remaining")
    )


@main.group()
def billing() -> None:
    """Billing: the usage ledger and the billing provider (Stripe when configured)."""


@billing.command("push")
def billing_push() -> None:
    """Push every pending ledger row to the billing provider now (what the periodic task does)."""
    from infra.db import session_scope
    from services.billing import push_pending

    with session_scope() as session:
        report = push_pending(session=session)
    click.echo(report.model_dump_json(indent=2))
    if report.provider is None:
        click.echo("billing is off: set EDGETUNE_STRIPE_API_KEY to push usage to Stripe", err=True)
    elif report.error:
        raise SystemExit(1)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON shape (GET /v1/operator/pools).")
def pools(as_json: bool) -> None:
    """The worker pools: each compute class's queue, messages waiting and live workers (asked of
    the workers over the broker; the embedded SQLite broker cannot say)."""
    from services.pools import pools_status

    status = pools_status()
    if as_json:
        click.echo(status.model_dump_json(indent=2))
        return
    click.echo(f"routing: {status.routing}")
    for pool in status.data:
        live = "unknown" if pool.live_workers is None else (", ".join(pool.live_workers) or "none")
        where = "+".join(pool.compute) + (f" x{pool.gpus}" if pool.gpus > 1 else "")
        click.echo(f"{pool.queue:<28} {where:<20} waiting {pool.depth:<5} live: {live}")


@main.command("device-agent")
@click.option("--profile", required=True, help="The device profile this machine measures for (its key's).")
@click.option(
    "--api", required=True, envvar="EDGETUNE_API_BASE", help="The API's address, e.g. https://host/v1."
)
@click.option(
    "--key", required=True, envvar="EDGETUNE_AGENT_KEY", help="The key POST /v1/device_agents gave."
)
@click.option(
    "--threads", type=click.IntRange(min=1), default=None, help="llama.cpp threads (default: half the CPUs)."
)
@click.option(
    "--poll", "poll_s", type=float, default=5.0, show_default=True, help="Seconds between empty claims."
)
@click.option("--once", is_flag=True, help="Take tasks until none is queued, then exit.")
@click.option(
    "--llama-bench",
    "llama_bench",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="Measure with this llama-bench binary instead of llama-cpp-python (no memory or load time).",
)
def device_agent(
    profile: str,
    api: str,
    key: str,
    threads: int | None,
    poll_s: float,
    once: bool,
    llama_bench: Path | None,
) -> None:
    """Measure this org's artifacts on this device: claim benchmark tasks for PROFILE, fetch each
    GGUF (sha256-checked), time its load, prefill and decode and its peak memory with llama.cpp
    (llama-cpp-python, or prefill and decode with the llama-bench binary), and post the figures back."""
    from cli.device_agent import AgentError, run_agent
    from eval.runtime_stats import default_threads

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        done = run_agent(api, key, profile, threads or default_threads(), poll_s, once, llama_bench)
    except AgentError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{done} task(s) measured")


@main.command("mcp")
def mcp_stdio() -> None:
    """Serve the agent tools over MCP on stdin/stdout, as the org of EDGETUNE_API_KEY (the API
    serves the same tools over HTTP at /mcp)."""
    from api.agent.mcp_server import build_mcp_server, check_stdio_key
    from services.errors import AuthenticationError

    try:
        check_stdio_key()
    except AuthenticationError as exc:
        hint = "set EDGETUNE_API_KEY to a key from `edgetune keys create`"
        raise click.ClickException(f"{exc.message} ({hint})") from None
    build_mcp_server().run("stdio")


@main.command()
@click.option("--task", default=None, help="Plain-language task description (default: review sentiment).")
@click.option("--timeout", default=1800, show_default=True, type=int, help="Seconds to wait for the job.")
def demo(task: str | None, timeout: int) -> None:
    """Start the API and a worker, fine-tune from a task description, print artifacts, eval and cost."""
    from cli.demo import run_demo

    raise SystemExit(run_demo(task, timeout))


def _add_client_verbs() -> None:
    # the verbs for people talk to the API over HTTP (cli/client.py): import nothing heavy
    from cli.client_commands import api_keys, artifacts, jobs

    main.add_command(jobs)
    main.add_command(artifacts)
    main.add_command(api_keys)


_add_client_verbs()

if __name__ == "__main__":
    main()
