"""How fast does the bundled local teacher make rows, and does client concurrency help? Serves
SmolLM2-135M-Instruct with llama.cpp (synth.llama_server.serve_gguf, as a run with no teacher
configured does), synthesizes each task at each concurrency with the same seed, and prints a
markdown table: rows kept per minute, completion tokens per second, drop rate by reason.

    .venv/bin/python -m bench.synth_throughput [--tasks classification,chat] [--concurrency 1,4]
        [--rows 24] [--seed 11] [--threads N] [--repeats 1] [--round-trip off,measure,filter]

`--round-trip` runs each task that has one (classification, routing, extraction) once per mode
(domain/job_config.py TaskSpec.round_trip; tasks without one, tool calls and chat, run in `off`
only): with `measure` the rows are those of `off` plus one answering request each, so the
difference in teacher tokens is what the round trip costs, and its agreement rate is how often
the teacher, held to the answer's schema (synth/llama_server.py STRUCTURED_OUTPUT), gives the
answer the row was written for.

What to expect from concurrency: `llama_cpp.server` (llama-cpp-python) has one model object behind
a global lock, so it decodes one completion at a time; it has no parallel-slot setting (llama.cpp's
own `llama-server --parallel N` does, but the pip package does not ship it). Requests in flight
above 1 only overlap HTTP and prompt handling with the decode of another request. The same seed
gives the same requests at every concurrency (chunks are at least 16 requests either way), so kept
rows and drops should match across concurrencies and only the time differs. On a shared machine
the load drifts during a run: `--repeats 2` runs the levels forward, then backward (1,4 then 4,1),
so drift does not favour one level.
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from importlib.metadata import version
from typing import Any

from bench.task_quality import ROUTING
from domain.job_config import TaskSpec
from synth.generate import synthesize
from synth.llama_server import (
    STRUCTURED_OUTPUT,
    bundled_teacher_gguf,
    default_threads,
    model_alias,
    serve_gguf,
)
from synth.teacher import TeacherClient, TeacherSettings

TASKS: dict[str, dict[str, Any]] = {
    "classification": {
        "type": "classification",
        "description": "Classify the sentiment of a product review.",
        "labels": ["positive", "negative", "neutral"],
    },
    "routing": ROUTING,  # bench/task_quality.py's 4-label task
    "extraction": {
        "type": "extraction",
        "description": "Extract the destination city and the number of nights from a hotel booking request.",
        "output_schema": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "nights": {"type": "integer", "minimum": 1}},
            "required": ["city", "nights"],
        },
    },
    "chat": {
        "type": "chat",
        "description": "Answer short questions from customers of an online bookshop, politely and briefly.",
    },
}


def run_one(base_url: str, name: str, task: TaskSpec, concurrency: int, seed: int) -> dict[str, Any]:
    """One synthesis run at `concurrency` requests in flight; its counts and timings."""
    settings = TeacherSettings(
        base_url=base_url,
        model=model_alias(bundled_teacher_gguf()),
        max_concurrency=concurrency,
        structured_output=STRUCTURED_OUTPUT,
    )
    started = time.perf_counter()
    with TeacherClient(settings) as client:
        result = synthesize(task, client, seed)
    wall = time.perf_counter() - started
    report = result.report
    return {
        "task": name,
        "concurrency": concurrency,
        "load": os.getloadavg()[0],
        "kept": report["kept"],
        "wanted": task.num_examples,
        "wall_s": wall,
        "requests": result.usage.requests,
        "generated": report["generated"],
        "completion_tokens": result.usage.completion_tokens,
        "total_tokens": result.usage.total_tokens,
        "dropped": report["dropped_by_reason"],
        "round_trip": report.get("round_trip"),
    }


def warm_up(base_url: str) -> None:
    """One short completion first, so the first measured run does not pay for loading the model's
    pages from disk."""
    settings = TeacherSettings(base_url=base_url, model=model_alias(bundled_teacher_gguf()))
    with TeacherClient(settings) as client:
        client.complete([{"role": "user", "content": "Say hello."}], max_tokens=8)


def drops(row: dict[str, Any]) -> str:
    """Drop rate of generated candidates, then each reason's share, largest first."""
    generated = row["generated"] or 1
    total = sum(row["dropped"].values())
    reasons = sorted(row["dropped"].items(), key=lambda kv: -kv[1])
    parts = ", ".join(f"{reason} {n} ({n / generated:.0%})" for reason, n in reasons)
    return f"{total / generated:.0%}: {parts}" if parts else "0%"


def table(rows: list[dict[str, Any]]) -> str:
    head = (
        "| task | concurrency | rows kept | wall | rows kept/min | requests | completion tok/s "
        "| teacher tokens | drop rate (of generated): reasons | round trip: agreed/checked "
        "| 1-min load after |\n"
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
    )
    lines = [
        f"| {r['task']} | {r['concurrency']} | {r['kept']}/{r['wanted']} | {r['wall_s']:.1f} s "
        f"| {r['kept'] / r['wall_s'] * 60:.1f} | {r['requests']} "
        f"| {r['completion_tokens'] / r['wall_s']:.1f} | {r['total_tokens']:,} | {drops(r)} "
        f"| {round_trip(r['round_trip'])} | {r['load']:.1f} |"
        for r in rows
    ]
    return head + "\n".join(lines)


def round_trip(rt: dict[str, Any] | None) -> str:
    if rt is None:
        return "off"
    rate = "-" if rt["agreement_rate"] is None else f"{rt['agreement_rate']:.0%}"
    return f"{rt['mode']}: {rt['agreed']}/{rt['checked']} ({rate})"


def machine(threads: int) -> str:
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")), "?"
    )
    return (
        f"{os.cpu_count()} cores ({cpu}), Python {platform.python_version()}, "
        f"llama-cpp-python {version('llama_cpp_python')}, server threads {threads}"
    )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tasks", default="classification,chat", help=f"comma-separated, of {sorted(TASKS)}")
    p.add_argument("--concurrency", default="1,4", help="comma-separated requests in flight")
    p.add_argument("--rows", type=int, default=24, help="num_examples of each task")
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: half the cores)")
    p.add_argument("--repeats", type=int, default=1, help="passes over the levels, alternating order")
    p.add_argument("--round-trip", default="off", help="comma-separated modes, for the types that have one")
    args = p.parse_args()
    threads = args.threads or default_threads()
    levels = [int(c) for c in args.concurrency.split(",")]
    results: list[dict[str, Any]] = []
    load_before = os.getloadavg()[0]
    with serve_gguf(bundled_teacher_gguf(), n_threads=threads) as base_url:
        warm_up(base_url)
        for name in args.tasks.split(","):
            for mode in args.round_trip.split(","):
                spec = {**TASKS[name], "num_examples": args.rows, "round_trip": mode}
                task = TaskSpec.model_validate(spec)
                if mode != "off" and not task.round_trips:
                    continue  # tool calls and chat have none
                for rep in range(args.repeats):
                    for level in levels if rep % 2 == 0 else levels[::-1]:
                        results.append(run_one(base_url, name, task, level, args.seed))
                        print(f"done: {name} ({mode}) at concurrency {level}", flush=True)  # noqa: T201
    load_after = os.getloadavg()[0]
    print(f"\n{machine(threads)}; 1-min load {load_before:.2f} before, {load_after:.2f} after\n")  # noqa: T201
    print(table(results))  # noqa: T201


if __name__ == "__main__":
    main()
