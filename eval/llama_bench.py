"""A device agent's measurement with llama.cpp's own `llama-bench` binary (issue 18), for a device
with llama.cpp built but no Python binding: `edgetune device-agent --llama-bench PATH`.

llama-bench is the field's standard speed figure: `-p N` times a prefill of N tokens in one call
from an empty cache ("ppN"), `-n M` a decode of M tokens one per call ("tgM"), each repeated `-r`
times after a warm-up run, and `-o json` prints one object per test with the mean tokens/s
(`avg_ts`), its spread, the model's size and parameter count and the build. The batch is 512 tokens
as in eval/device_bench.py, so both runners time the same work.

What llama-bench does not give, and this runner does not invent:
- memory at the profile's context: llama-bench sizes each test's cache to that test's own tokens,
  so the process's peak is not the figure a device's app would see at `context`. `peak_memory_mb`
  is None, and the gate's memory budget stays on the host's measurement, labelled as such
  (export/device_budgets.py);
- load time: it is not timed apart from the warm-up, so `load_seconds` is None.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

from eval.device_bench import fitting_prompt

REPETITIONS = 3  # llama-bench's default is 5; 3 keeps a slow device's task short
TIMEOUT_S = 1800


class LlamaBenchError(RuntimeError):
    """llama-bench failed or printed something that is not its JSON report."""


def llama_bench_version(binary: Path) -> str | None:
    """`llama-bench <version> (build <n>, commit <sha>)` from the binary's `--version` (at most the
    64 characters the API keeps), None if it gives none."""
    try:
        out = subprocess.run([str(binary), "--version"], capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired):
        return None
    for line in (out.stdout + out.stderr).splitlines():
        if line.startswith("version:"):  # "version: 0.5.0-dev (build 1, commit 0c1e570)"
            return ("llama-bench " + line.removeprefix("version:").strip())[:64]
    return None


def measure_llama_bench(
    binary: Path, path: Path, context: int, prompt_tokens: int, decode_tokens: int, threads: int
) -> dict[str, Any]:
    """Time a prefill of `prompt_tokens` and a decode of `decode_tokens` with llama-bench, in the
    shape of eval/device_bench.py measure_gguf (the prompt cut the same way to fit `context`)."""
    prompt_tokens = fitting_prompt(context, prompt_tokens, decode_tokens)
    cmd = [
        str(binary), "-m", str(path), "-p", str(prompt_tokens), "-n", str(decode_tokens),
        "-t", str(threads), "-b", "512", "-ub", "512", "-r", str(REPETITIONS), "-o", "json",
    ]  # fmt: skip
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired as exc:
        raise LlamaBenchError(f"llama-bench ran past {TIMEOUT_S} s") from exc
    if out.returncode != 0:
        raise LlamaBenchError(f"llama-bench exited {out.returncode}: {out.stderr.strip()[-1000:]}")
    return figures(parse_report(out.stdout), threads)


def parse_report(stdout: str) -> list[dict[str, Any]]:
    """llama-bench's `-o json` report: a list of test objects."""
    try:
        tests = json.loads(stdout)
    except json.JSONDecodeError as exc:
        raise LlamaBenchError(f"llama-bench printed no JSON report: {stdout[:300]!r}") from exc
    if not isinstance(tests, list) or not tests:
        raise LlamaBenchError("llama-bench's report has no tests")
    return tests


def figures(tests: list[dict[str, Any]], threads: int) -> dict[str, Any]:
    """The agent's result from the report: the prefill test (`n_gen` 0) and the decode test
    (`n_prompt` 0)."""
    prefill = next((t for t in tests if t.get("n_prompt") and not t.get("n_gen")), None)
    decode = next((t for t in tests if t.get("n_gen") and not t.get("n_prompt")), None)
    if prefill is None or decode is None:
        raise LlamaBenchError("llama-bench's report lacks a prefill or a decode test")
    return {
        "prefill_tokens_per_s": round(float(prefill["avg_ts"]), 2),
        "decode_tokens_per_s": round(float(decode["avg_ts"]), 2),
        "peak_memory_mb": None,
        "load_seconds": None,
        # the cache each test allocated: its own tokens (the larger test's)
        "context": max(int(prefill["n_prompt"]), int(decode["n_gen"])),
        "prompt_tokens": int(prefill["n_prompt"]),
        "decode_tokens": int(decode["n_gen"]),
        "runtime": "llama.cpp (llama-bench)",
        "runtime_version": f"llama-bench commit {prefill.get('build_commit')}"[:64],
        "threads": int(prefill.get("n_threads") or threads),
        "model_n_params": int(prefill["model_n_params"]),
    }
