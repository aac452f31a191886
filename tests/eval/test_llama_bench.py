"""eval/llama_bench.py: a device agent's measurement with llama.cpp's own llama-bench binary (the
one `make install` builds at the llama.cpp commit llama-cpp-python vendors), run for real."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from eval.llama_bench import LlamaBenchError, llama_bench_version, measure_llama_bench, parse_report
from export.profiles import gguf_parameters

LLAMA_BENCH = Path(sys.executable).with_name("llama-bench")


@pytest.fixture(scope="module")
def gguf(tmp_path_factory) -> Path:
    from tests.export.tiny_artifacts import tiny_quantized

    return tiny_quantized(tmp_path_factory.mktemp("llama-bench-gguf"), "Q8_0")


def test_prefill_and_decode_as_llama_bench_times_them(gguf: Path) -> None:
    r = measure_llama_bench(LLAMA_BENCH, gguf, context=512, prompt_tokens=64, decode_tokens=16, threads=1)
    assert r["prefill_tokens_per_s"] > 0 and r["decode_tokens_per_s"] > 0
    assert (r["prompt_tokens"], r["decode_tokens"], r["context"], r["threads"]) == (64, 16, 64, 1)
    assert r["model_n_params"] == gguf_parameters(gguf)
    assert r["runtime"] == "llama.cpp (llama-bench)" and r["runtime_version"].startswith("llama-bench ")
    assert r["peak_memory_mb"] is None and r["load_seconds"] is None  # not measured, not invented
    # the prompt is cut as the Python runner cuts it, so prompt and decode fit the context
    cut = measure_llama_bench(LLAMA_BENCH, gguf, context=64, prompt_tokens=500, decode_tokens=8, threads=1)
    assert cut["prompt_tokens"] == 55
    version = llama_bench_version(LLAMA_BENCH)
    assert version is not None and version.startswith("llama-bench ")


def test_a_file_it_cannot_load_fails_with_its_message(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-model.gguf"
    bad.write_bytes(b"GGUF but not really")
    with pytest.raises(LlamaBenchError, match="llama-bench exited"):
        measure_llama_bench(LLAMA_BENCH, bad, context=512, prompt_tokens=8, decode_tokens=4, threads=1)


def test_a_report_without_both_tests_is_refused() -> None:
    with pytest.raises(LlamaBenchError, match="no JSON report"):
        parse_report("main: error")
    with pytest.raises(LlamaBenchError, match="no tests"):
        parse_report("[]")
    from eval.llama_bench import figures

    only_prefill = [{"n_prompt": 64, "n_gen": 0, "avg_ts": 100.0, "model_n_params": 10}]
    with pytest.raises(LlamaBenchError, match="lacks a prefill or a decode"):
        figures(only_prefill, 1)
