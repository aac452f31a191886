"""eval/device_bench.py, what a device agent measures: llama-bench's prefill and decode on a real
GGUF, and memory also where /proc cannot reset the peak (macOS)."""

from __future__ import annotations

from pathlib import Path

import pytest

from eval import runtime_stats
from eval.device_bench import device_facts, measure_gguf
from export.profiles import gguf_parameters


@pytest.fixture(scope="module")
def gguf(tmp_path_factory) -> Path:
    from tests.export.tiny_artifacts import tiny_quantized

    return tiny_quantized(tmp_path_factory.mktemp("bench-gguf"), "Q8_0")


def test_prefill_decode_load_and_memory_are_measured(gguf: Path) -> None:
    r = measure_gguf(gguf, context=512, prompt_tokens=64, decode_tokens=16, threads=1)
    assert r["prompt_tokens"] == 64 and r["decode_tokens"] == 16 and r["context"] == 512
    assert r["prefill_tokens_per_s"] > 0 and r["decode_tokens_per_s"] > 0 and r["load_seconds"] > 0
    assert r["peak_memory_mb"] is not None and r["peak_memory_mb"] > 0
    # llama.cpp's count, which the device model's prefill prediction reads from the GGUF itself
    assert r["model_n_params"] == gguf_parameters(gguf) > 0
    # the prompt is cut so prompt and decode fit the context
    assert (
        measure_gguf(gguf, context=64, prompt_tokens=500, decode_tokens=16, threads=1)["prompt_tokens"] == 47
    )


def test_without_proc_memory_comes_from_getrusage(gguf: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime_stats, "_reset_peak", lambda: False)  # as on macOS: no clear_refs
    r = measure_gguf(gguf, context=8192, prompt_tokens=32, decode_tokens=8, threads=1)
    assert r["peak_memory_mb"] is not None and r["peak_memory_mb"] >= 0


def test_the_device_says_what_it_is() -> None:
    facts = device_facts(3)
    assert facts["threads"] == 3 and facts["cores"] and facts["ram_mb"] > 0
    assert facts["runtime"] == "llama.cpp" and facts["runtime_version"].startswith("llama-cpp-python ")
