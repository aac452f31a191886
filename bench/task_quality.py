"""Quality over the task types (issue 20, items 2 and 6): for each task type, synthesize one data
set with the bundled teacher, then fine-tune it under each variant of the recipe's defaults on the
same rows and seed, through the real API and worker on embedded defaults (infra/local_stack.py), and
print one markdown row per job: bare base, prompted base, fine-tuned, each artifact with and without
its grammar, the probe drop, the step shipped, rows kept, wall time, cost and the gate's verdict.

    .venv/bin/python -m bench.task_quality
        [--tasks classification,classification-seeded,routing,routing-seeded,extraction,tool_calling,chat]
        [--variants defaults,plain] [--shuffled] [--flipped] [--rows 64] [--out var/bench/task_quality.json]

Variants (the same training and held-out files, the same job seed):
- `defaults`: the job config's defaults (replay of the base's own general answers, the best
  held-out checkpoint with early stopping);
- `plain`: what a job did before issue 20 (no replay, the last step shipped), as plain TRL does.
`--shuffled` adds, to each classification task (sentiment, 2 labels; routing and routing-seeded,
4), a job whose training answers are permuted among its rows (the held-out file untouched): on two
labels half the answers stay right by chance, so it is noise a base that already knows the task can
see through; on four about a quarter do. `--flipped` adds one whose labels are renamed the same way
in every row (positive <-> negative): the model learns the wrong mapping, and the
gate must refuse it. `--variants ""` runs only those.

The state goes to its own var dir (`--var`, default var/bench-task-quality, wiped first), so a
run never mixes with `make demo`'s. Each job is one sample: the held-out sets are 16-20 rows and
the probe 64 items (32 before 2026-12-07), so one row of the table is noise of about ±0.08 on
the probe (measured, from the items that moved; about ±0.13 with 32).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from domain.gate_policy import GatePolicy

DATASET_TIMEOUT_S = 1800
JOB_TIMEOUT_S = 4800  # a chat job on 2 shared cores trained for 1891 s alone (docs/benchmarks.md)
MIN_EVAL_ROWS = GatePolicy().min_eval_rows  # what a job's gate judges on by default

ROUTING_SEEDS = {
    "billing": (
        "I was charged twice for my subscription this month.",
        "Can I get my money back for the order I cancelled?",
        "The invoice shows the wrong amount.",
    ),
    "technical": (
        "The app crashes every time I open the camera.",
        "My device will not turn on after the update.",
        "I get an error when I try to sync my files.",
    ),
    "shipping": (
        "Where is my parcel? It was due on Monday.",
        "The tracking page says delivered but nothing arrived.",
        "Can you change the delivery date of my order?",
    ),
    "account": (
        "I forgot my password and the reset email never comes.",
        "How do I change the email address on my profile?",
        "I cannot log in since yesterday.",
    ),
}

SENTIMENT_SEEDS = {
    "positive": (
        "Works perfectly and the battery lasts all week.",
        "Great value, I would buy it again.",
        "The sound is clear and it arrived a day early.",
    ),
    "negative": (
        "It broke after two days and support never answered.",
        "Cheap plastic, the lid does not even close.",
        "Stopped charging within a week, waste of money.",
    ),
}

SENTIMENT = {
    "type": "classification",
    "description": "Classify the sentiment of a short customer product review as positive or negative.",
    "labels": ["positive", "negative"],
}


def seeded(task: dict[str, Any], seeds: Mapping[str, Sequence[str]]) -> dict[str, Any]:
    """The task with the customer's examples, each labelled (TaskSpec.seed_examples)."""
    examples = [{"input": text, "output": label} for label, texts in seeds.items() for text in texts]
    return {**task, "seed_examples": examples}


ROUTING = {
    "type": "classification",
    "description": "Route a customer support message to the team that should handle it: "
    "billing (charges, refunds, invoices), technical (the app or device does not work), "
    "shipping (where a parcel is, delivery dates) or account (login, password, profile).",
    "labels": ["billing", "technical", "shipping", "account"],
}

# The 135M bundled teacher's yield depends on the seed for extraction and tool calling (see
# tests/synth/test_real_teacher.py); each task keeps the seed its test found to give a full set.
TASKS: dict[str, dict[str, Any]] = {
    "classification": {"seed": 42, "task": SENTIMENT},
    # the same with three of the customer's reviews a label: seeded labels are asked as lists of
    # texts "like these" (synth-v3), a prompt chosen on routing; this measures it on sentiment
    "classification-seeded": {"seed": 42, "task": seeded(SENTIMENT, SENTIMENT_SEEDS)},
    # four labels, so answers permuted among rows leave about a quarter right (two labels leave half,
    # which a base that knows sentiment sees through: docs/benchmarks.md): the shuffled check's task
    "routing": {"seed": 42, "task": ROUTING},
    # the same task with three of the customer's own messages per team (TaskSpec.seed_examples): the
    # teacher writes new inputs from them, which is what a customer can do when a weak teacher's
    # rows for a task are noise (docs/benchmarks.md, "Four labels")
    "routing-seeded": {"seed": 42, "task": seeded(ROUTING, ROUTING_SEEDS)},
    "extraction": {
        "seed": 5,
        "task": {
            "type": "extraction",
            "description": "Extract the customer's name and city from a support message.",
            "output_schema": {
                "type": "object",
                "properties": {"name": {"type": "string"}, "city": {"type": "string"}},
                "required": ["name", "city"],
            },
        },
    },
    "tool_calling": {
        "seed": 3,
        "task": {
            "type": "tool_calling",
            "description": "Answer weather requests.",
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "description": "Get the weather forecast for a city.",
                        "parameters": {
                            "type": "object",
                            "properties": {
                                "city": {"type": "string"},
                                "days": {"type": "integer", "minimum": 1, "maximum": 7},
                            },
                            "required": ["city", "days"],
                        },
                    },
                }
            ],
        },
    },
    "chat": {
        "seed": 42,
        "task": {
            "type": "chat",
            "description": "Answer short questions from customers of an online bookshop, politely and "
            "briefly.",
        },
    },
}

VARIANTS: dict[str, dict[str, Any]] = {
    "defaults": {},
    "plain": {"replay": {"fraction": 0}, "checkpoints": {"select": "last"}},
    # against forgetting, one lever each: a replay row per training row, half the learning rate
    "replay-full": {"replay": {"fraction": 1.0}},
    "lr-half": {
        "method": {"type": "supervised", "supervised": {"hyperparameters": {"learning_rate_multiplier": 0.5}}}
    },
}


def say(msg: str) -> None:
    print(f"[bench] {msg}", flush=True)  # noqa: T201 - progress for the person running it


def wait_for(client: httpx.Client, path: str, timeout: int) -> dict[str, Any]:
    """Poll a job or dataset until it ends."""
    deadline = time.monotonic() + timeout
    while True:
        obj: dict[str, Any] = client.get(path).json()
        if obj["status"] in ("succeeded", "failed", "cancelled"):
            return obj
        if time.monotonic() > deadline:
            raise TimeoutError(f"{path} still {obj['status']} after {timeout}s")
        time.sleep(3)


def synthesize(client: httpx.Client, name: str, rows: int) -> dict[str, Any]:
    """One data set per task, shared by every variant's job."""
    spec = TASKS[name]
    # hold out what a job's gate judges on (gate.min_eval_rows), as a job synthesizing its own
    # data does (domain/job_config.py eval_quota); the dataset API takes the fraction as given
    task = {**spec["task"], "num_examples": rows, "eval_fraction": min(0.5, max(0.25, MIN_EVAL_ROWS / rows))}
    resp = client.post("/synthetic_datasets", json={"task": task, "seed": spec["seed"]})
    resp.raise_for_status()
    return wait_for(client, f"/synthetic_datasets/{resp.json()['id']}", DATASET_TIMEOUT_S)


def shuffle_answers(rows: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """The rows with their answers permuted among them: a rotation of a shuffled order, so no row
    keeps its own answer (unless two rows had the same one) and the label counts stay the same."""
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    answers = [rows[i]["messages"][-1]["content"] for i in order]
    out = [json.loads(json.dumps(r)) for r in rows]
    for k, i in enumerate(order):
        out[i]["messages"][-1]["content"] = answers[(k + 1) % len(answers)]
    return out


def flip_labels(rows: list[dict[str, Any]], seed: int) -> list[dict[str, Any]]:
    """The rows with every label renamed to another one, the same way in every row (a shuffled
    rotation of the label set: no label keeps its name). Shuffling answers among rows only adds
    noise, which a base that already knows the task can shrug off (docs/benchmarks.md); a consistent
    wrong mapping is learned, and must then be refused by the gate."""
    labels = sorted({r["messages"][-1]["content"] for r in rows})
    random.Random(seed).shuffle(labels)
    rename = {label: labels[(i + 1) % len(labels)] for i, label in enumerate(labels)}
    out = [json.loads(json.dumps(r)) for r in rows]
    for r in out:
        r["messages"][-1]["content"] = rename[r["messages"][-1]["content"]]
    return out


def relabelled_file(client: httpx.Client, file_id: str, seed: int, flip: bool) -> str:
    """Upload the training file again with its answers shuffled among rows or its labels flipped."""
    rows = [json.loads(line) for line in client.get(f"/files/{file_id}/content").text.splitlines() if line]
    changed = flip_labels(rows, seed) if flip else shuffle_answers(rows, seed)
    body = "".join(json.dumps(r) + "\n" for r in changed).encode()
    resp = client.post("/files", data={"purpose": "fine-tune"}, files={"file": ("shuffled.jsonl", body)})
    resp.raise_for_status()
    return str(resp.json()["id"])


def fine_tune(
    client: httpx.Client, model: str, name: str, files: tuple[str, str], variant: str
) -> dict[str, Any]:
    body = {
        "model": model,
        "training_file": files[0],
        "validation_file": files[1],
        "task": TASKS[name]["task"],
        "targets": ["laptop-cpu"],
        "suffix": f"{name}-{variant}"[:64].replace("_", "-"),
        **VARIANTS.get(variant, {}),
    }
    resp = client.post("/fine_tuning/jobs", json=body)
    if resp.status_code != 200:
        raise RuntimeError(f"{name}/{variant}: job refused: {resp.status_code} {resp.text}")
    job = wait_for(client, f"/fine_tuning/jobs/{resp.json()['id']}", JOB_TIMEOUT_S)
    report: dict[str, Any] = client.get(f"/fine_tuning/jobs/{job['id']}/report").json()
    return {"job": job, "report": report}


def summarize(name: str, variant: str, dataset: dict[str, Any], run: dict[str, Any]) -> dict[str, Any]:
    """The figures of one job, from its report (services/schemas/reports.py)."""
    job, report = run["job"], run["report"]
    scores = {s["subject"]: s for s in report.get("scores") or []}
    probe = report.get("probe") or {}
    selection = report.get("checkpoint_selection") or {}
    gate = report.get("gate") or {}
    synth = dataset.get("report") or {}
    steps = [p["step"] for p in report.get("loss_curve") or []]
    return {
        "task": name,
        "variant": variant,
        "job_id": job["id"],
        "status": job["status"],
        "error": (job.get("error") or {}).get("code"),
        "metric": report.get("metric"),
        "scores": {
            k: {"score": v["score"], "parse_rate": v.get("parse_rate"), "n": v["n"]}
            for k, v in scores.items()
        },
        "shots": (scores.get("base-prompted") or {}).get("shots"),
        "probe_base": (probe.get("base") or {}).get("score"),
        "probe_fine_tuned": (probe.get("fine_tuned") or {}).get("score"),
        "probe_drop": probe.get("drop"),
        "best_step": selection.get("best_step"),
        "last_step": max(steps) if steps else None,
        "stopped_early": selection.get("stopped_early"),
        "rows_kept": synth.get("kept"),
        "rows_asked": synth.get("asked") or (dataset.get("task") or {}).get("num_examples"),
        "wall_s": (job["finished_at"] or 0) - job["created_at"] if job.get("finished_at") else None,
        "cost_usd": job.get("total_cost_usd"),
        "gate_passed": gate.get("passed"),
        "gate_reasons": gate.get("reasons") or [],
    }


def _f(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| task | variant | rows kept | base bare | base prompted (k) | fine-tuned | GGUF no grammar | "
        "GGUF + grammar | probe base → ft (drop) | step shipped / last | wall | cost | gate |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
    )
    lines = []
    for r in rows:
        s = {k: v["score"] for k, v in r["scores"].items()}
        gate = "passed" if r["gate_passed"] else f"refused: {'; '.join(r['gate_reasons'])[:160]}"
        if r["status"] != "succeeded" and r["gate_passed"] is None:
            gate = f"{r['status']} ({r['error']})"
        lines.append(
            f"| {r['task']} ({r['metric']}) | {r['variant']} | {r['rows_kept']}/{r['rows_asked']} | "
            f"{_f(s.get('base'))} | {_f(s.get('base-prompted'))} ({r['shots']}) | "
            f"{_f(s.get('fine-tuned'))} | "
            f"{_f(s.get('laptop-cpu (no grammar)', s.get('laptop-cpu')))} | {_f(s.get('laptop-cpu'))} | "
            f"{_f(r['probe_base'])} → {_f(r['probe_fine_tuned'])} ({_f(r['probe_drop'])}) | "
            f"{r['best_step']} / {r['last_step']} | {r['wall_s']} s | ${r['cost_usd'] or 0:.4f} | {gate} |"
        )
    return head + "\n".join(lines)


def machine() -> str:
    load = os.getloadavg()[0]
    return (
        f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, load {load:.1f}"
    )


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated, of {list(TASKS)}")
    p.add_argument("--variants", default="defaults,plain", help=f"comma-separated, of {list(VARIANTS)}")
    p.add_argument(
        "--shuffled", action="store_true", help="per classification task, a job on shuffled answers"
    )
    p.add_argument(
        "--flipped", action="store_true", help="per classification task, a job with labels renamed"
    )
    p.add_argument("--model", default="HuggingFaceTB/SmolLM2-135M-Instruct", help="the base (and student)")
    p.add_argument(
        "--rows", type=int, default=64, help="rows asked of the teacher per task (train + held out)"
    )
    p.add_argument("--var", default="var/bench-task-quality", help="the run's own state directory (wiped)")
    p.add_argument("--out", default="var/bench/task_quality.json")
    return p.parse_args()


def run(args: argparse.Namespace, api_url: str, key: str, model: str) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    headers = {"Authorization": f"Bearer {key}"}
    with httpx.Client(base_url=api_url, headers=headers, timeout=120) as client:
        for name in args.tasks.split(","):
            dataset = synthesize(client, name, args.rows)
            say(f"{name}: dataset {dataset['status']}, {(dataset.get('report') or {}).get('kept')} rows kept")
            if dataset["status"] != "succeeded":
                results.append({"task": name, "dataset": dataset})
                continue
            files = (dataset["training_file"], dataset["validation_file"])
            jobs = [(v, files) for v in args.variants.split(",") if v]
            seed = TASKS[name]["seed"]
            labelled = TASKS[name]["task"]["type"] == "classification"
            if args.shuffled and labelled:
                jobs.append(("shuffled", (relabelled_file(client, files[0], seed, flip=False), files[1])))
            if args.flipped and labelled:
                jobs.append(("flipped", (relabelled_file(client, files[0], seed, flip=True), files[1])))
            for variant, job_files in jobs:
                row = summarize(name, variant, dataset, fine_tune(client, model, name, job_files, variant))
                say(json.dumps(row))
                results.append(row)
                out.write_text(json.dumps({"machine": machine(), "rows": results}, indent=1))
    return results


def main() -> None:
    args = parse_args()
    var = Path(args.var)
    shutil.rmtree(var, ignore_errors=True)
    os.environ["EDGETUNE_VAR_DIR"] = str(var)  # before any setting is read; the children inherit it
    from infra.db import session_scope
    from infra.local_stack import local_stack
    from infra.migrate import upgrade_head
    from services.orgs import create_key

    upgrade_head()
    with session_scope() as session:
        _, key = create_key(session=session, org_name="bench")
    started = time.monotonic()
    with local_stack() as stack:
        rows = run(args, stack.api_url, key, args.model)
    print(f"\nMachine: {machine()}; {time.monotonic() - started:.0f} s in all\n")  # noqa: T201
    print(table([r for r in rows if "variant" in r]))  # noqa: T201


if __name__ == "__main__":
    main()
