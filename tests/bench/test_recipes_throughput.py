"""bench/recipes_throughput.py: the FLOP arithmetic by hand, the real LFM2 shapes, rows that fit
their lengths, the chat-length sampler, the variants' speed setting, a hung case killed, and the
report. Timings are never asserted; nothing here trains."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from argparse import Namespace
from pathlib import Path
from types import SimpleNamespace

import pytest
from pydantic import BaseModel

from bench.recipes_throughput import (
    CHAT_MEDIAN_TOKENS,
    MIN_ROW_TOKENS,
    SHAPES,
    add_speedups,
    bench_tokenizer,
    chat_lengths,
    first_line,
    fit_conversation,
    length_stats,
    lfm2_config,
    model_flops_per_token,
    rendered_length,
    report,
    row_lengths,
    run_child,
    speed_kwargs,
    speed_plan,
    summarize,
    write_outputs,
)
from recipes.estimate import ModelShape

# 4 layers of which 2 attention, d=16, N=1000 matmul parameters (tied), mean sequence 10 tokens
TOY = ModelShape(
    params=1000, hidden=16, intermediate=32, layers=4, attention_layers=2, vocab=8, tied_embeddings=True
)
ATTENTION = 12 * 2 * 16 * 10  # 12 * L_attn * d * S = 3840


def test_flops_per_token_by_hand() -> None:
    assert model_flops_per_token(TOY, "full_sft", 10) == 6 * 1000 + ATTENTION  # 9840
    assert model_flops_per_token(TOY, "lora_sft", 10) == 4 * 1000 + ATTENTION  # 7840
    # DPO (LoRA): the policy's 4N + attention, plus the reference's forward, a third of 6N + attention
    assert model_flops_per_token(TOY, "dpo", 10) == 7840 + (6000 + ATTENTION) / 3  # 11120


def test_mfu_arithmetic() -> None:
    # 3 timed steps x 2 rows = 6 sequences of 10 tokens in 2 s -> 30 tokens/s x 9840 FLOPs = 295,200 FLOP/s
    measured = {"recipe": "full_sft", "timed_steps": 3, "batch_size": 2, "tokens": 60, "seconds": 2.0}
    row = summarize(measured, TOY, peak_flops=1e6, measured_flops=5e5)
    assert row["mean_seq"] == 10
    assert row["tokens_per_s"] == 30
    assert row["mfu_pct"] == pytest.approx(100 * 295_200 / 1e6)
    assert row["mfu_measured_pct"] == pytest.approx(100 * 295_200 / 5e5)
    # DPO steps run chosen and rejected: twice the sequences for the same batch size
    assert summarize({**measured, "recipe": "dpo", "tokens": 120}, TOY, 1e6)["mean_seq"] == 10


def test_attention_length_is_token_weighted() -> None:
    """Rows of 1 and 3 tokens: attention costs 1^2 + 3^2 = 10 over 4 tokens, S = 2.5 per token,
    not the plain mean 2; the run's S replaces tokens per sequence in the FLOPs."""
    stats = length_stats([1, 3])
    assert stats["attn_seq"] == 2.5 and stats["mean"] == 2
    measured = {"recipe": "full_sft", "timed_steps": 3, "batch_size": 2, "tokens": 60, "seconds": 2.0}
    assert summarize({**measured, "attn_seq": 20.0}, TOY, 1e6)["gflop_per_token"] == pytest.approx(
        (6000 + 2 * ATTENTION) / 1e9  # S = 20: twice the attention term of S = 10
    )


@pytest.mark.parametrize(("name", "params"), [("350m", 354_483_968), ("1.2b", 1_170_340_608)])
def test_real_lfm2_shapes(name: str, params: int) -> None:
    """The configs give exactly the published parameter counts (built on the meta device)."""
    import torch
    from transformers import Lfm2ForCausalLM

    special = SimpleNamespace(pad_token_id=0, bos_token_id=1, eos_token_id=7)
    config = lfm2_config(SHAPES[name], special)
    with torch.device("meta"):
        model = Lfm2ForCausalLM(config)
    assert sum(p.numel() for p in model.parameters()) == params
    assert sum(t == "full_attention" for t in config.layer_types) == 6


# ---- row lengths ---------------------------------------------------------------------------------


def test_chat_lengths_bounds_and_clipping() -> None:
    lengths = chat_lengths(5000, 2048, seed=0)
    assert min(lengths) >= MIN_ROW_TOKENS and max(lengths) <= 2048
    # ~8 % of the log-normal lies above 2048 (z > 1.40): those rows are clipped to exactly seq_len
    assert 0.05 < sum(n == 2048 for n in lengths) / len(lengths) < 0.11
    short = chat_lengths(500, 256, seed=0)
    assert min(short) >= MIN_ROW_TOKENS and max(short) == 256  # most rows clip at a short max length


def test_chat_lengths_seeded() -> None:
    assert chat_lengths(50, 2048, seed=3) == chat_lengths(50, 2048, seed=3)
    assert chat_lengths(50, 2048, seed=3) != chat_lengths(50, 2048, seed=4)
    assert row_lengths("fixed", 3, 128, seed=0) == [128, 128, 128]


def test_chat_lengths_follow_the_fitted_distribution() -> None:
    """Median 636 tokens (clipping at 2048 leaves it alone); the clipped mean ~850. The median of
    5000 draws has a standard error of ~1.5 % (1.25 sigma / sqrt(n) in log space), so +-8 % is wide."""
    lengths = chat_lengths(5000, 2048, seed=0)
    assert 0.92 * CHAT_MEDIAN_TOKENS < statistics.median(lengths) < 1.08 * CHAT_MEDIAN_TOKENS
    assert 780 < statistics.fmean(lengths) < 920


def test_rows_fit_their_lengths() -> None:
    """Each row is fitted to just under its own length: the drawn length is what the row renders
    to, never over it (the max length would truncate the assistant answer that carries the loss)."""
    tok = bench_tokenizer()
    for row, target in enumerate((64, 128, 200, 64, 100)):
        n = rendered_length(tok, fit_conversation(tok, target, row))
        assert 0.9 * target < n <= target, (target, n)


# ---- variants and what the recipe reports -------------------------------------------------------


class WithSpeed(BaseModel):
    speed: str = "auto"


class WithoutSpeed(BaseModel):
    max_length: int = 512


def test_speed_passed_only_when_the_config_has_it() -> None:
    assert speed_kwargs(WithSpeed, "before") == {"speed": "reference"}
    assert speed_kwargs(WithSpeed, "now") == {"speed": "auto"}
    assert speed_kwargs(WithSpeed, "trl") == {}
    assert speed_kwargs(WithoutSpeed, "now") == {}  # a recipe from before the field runs as it is


def test_speed_plan_read_defensively() -> None:
    plan = {"padding_free": True, "grad_accum": 2}
    assert speed_plan(SimpleNamespace(speed_plan=plan)) == plan
    assert speed_plan(SimpleNamespace(training=SimpleNamespace(speed_plan=plan))) == plan  # DPOResult
    assert speed_plan(SimpleNamespace(trainable_params=3)) is None

    class Plan(BaseModel):  # a SpeedPlan-like model: dumped to a dict, its reasons kept for --json
        grad_accum: int = 2
        reasons: list[str] = ["memory model"]

    dumped = speed_plan(SimpleNamespace(training=SimpleNamespace(speed_plan=Plan())))
    assert dumped == {"grad_accum": 2, "reasons": ["memory model"]}


def test_first_line_of_an_error() -> None:
    exc = RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB.\nSee the documentation ...")
    assert first_line(exc) == "RuntimeError: CUDA out of memory. Tried to allocate 2.00 GiB."


def test_hung_child_killed_with_its_children(tmp_path: Path) -> None:
    """A case past its timeout is killed with what it started: the grandchild's pid is gone too."""
    pid_file = tmp_path / "grandchild.pid"
    code = (
        "import subprocess, sys, time; "
        "p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']); "
        f"open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(60)"
    )
    started = time.monotonic()
    assert run_child([sys.executable, "-c", code], tmp_path / "log", 3.0, {}) is None
    assert time.monotonic() - started < 20
    grandchild = int(pid_file.read_text())
    time.sleep(0.2)
    alive = subprocess.run(["ps", "-o", "stat=", "-p", str(grandchild)], capture_output=True, text=True)
    assert alive.stdout.strip() in ("", "Z")  # gone, or a zombie waiting for its dead parent's reaper
    assert run_child([sys.executable, "-c", "raise SystemExit(3)"], tmp_path / "log", 30.0, {}) == 3


# ---- the report ------------------------------------------------------------------------------------


def measured(variant: str, tokens: int, **extra: object) -> dict[str, object]:
    return {
        "shape": "350m", "recipe": "lora_sft", "variant": variant, "timed_steps": 2, "batch_size": 2,
        "tokens": tokens, "seconds": 1.0, "peak_bytes": 3 * 1024**3, "params": 354_483_968,
        "trainable": 3_000_000, "load": 0.5, "attn_seq": 10.0, **extra,
    }  # fmt: skip


def report_rows() -> list[dict[str, object]]:
    plan = {"padding_free": True, "micro_batch_size": 4, "grad_accum": 2, "activation_checkpointing": False}
    results = [
        measured("trl", 20_000),
        measured("before", 25_000, speed="reference"),
        measured("now", 50_000, speed="auto", speed_plan=plan),
    ]
    rows = [summarize(r, TOY, 1e6, 5e5) for r in results]
    failed = {
        "shape": "1.2b",
        "recipe": "full_sft",
        "variant": "trl",
        "error": "OutOfMemoryError: CUDA out of memory",
    }
    return add_speedups([*rows, failed])


def test_speedups_and_table() -> None:
    rows = report_rows()
    now = rows[2]
    assert now["vs_trl"] == pytest.approx(2.5) and now["vs_before"] == pytest.approx(2.0)
    text = report("header line", rows, 989.0)
    assert "| 350m | lora_sft | now | 50.0k |" in text
    assert (
        "| 2.50x | 2.00x | padding_free=True, micro_batch_size=4, grad_accum=2, "
        "activation_checkpointing=False |" in text
    )
    assert "| 1.2b | full_sft | trl | failed: OutOfMemoryError: CUDA out of memory |" in text
    assert "MFU (989 TFLOP/s)" in text and "MFU (measured matmul)" in text
    shown = summarize(
        measured("now", 1000, speed="auto", speed_plan={"mode": "auto", "reasons": ["x"], "fast": 0}),
        TOY,
        1e6,
    )
    assert "| fast=0 |" in report("", add_speedups([shown]), 989.0)  # mode and reasons are not in the column
    no_field = add_speedups([summarize(measured("now", 1000, speed=None), TOY, 1e6)])
    assert "recipe has no speed field" in report("", no_field, 989.0)


def test_out_and_json_files(tmp_path: Path) -> None:
    args = Namespace(out=tmp_path / "bench.md", json=tmp_path / "bench.json", peak_tflops=989.0)
    rows = report_rows()
    write_outputs(args, "- machine: test\n- command: `python -m bench.recipes_throughput`", rows, {"seed": 0})
    text = args.out.read_text()
    assert text.startswith("- machine: test")
    assert text.count("| 350m | lora_sft |") == 6  # three in the main table, three in the details
    raw = json.loads(args.json.read_text())
    assert (
        raw["seed"] == 0 and len(raw["results"]) == 4 and raw["results"][3]["error"].startswith("OutOfMemory")
    )
