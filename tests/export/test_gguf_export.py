from __future__ import annotations

import math
from pathlib import Path

import llama_cpp
import pytest

from export.gguf_export import GGUFExportError, convert_to_gguf, quantize_gguf
from tests.export.tiny_artifacts import TinyArtifacts

FTYPES = {"Q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0, "Q4_K_M": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M}


def _load(path: Path, logits_all: bool = False) -> llama_cpp.Llama:
    return llama_cpp.Llama(
        model_path=str(path), n_ctx=512, n_threads=1, verbose=False, seed=0, logits_all=logits_all
    )


def test_f16_conversion_uses_vendored_converter_and_pre_tokenizer_fallback(tiny: TinyArtifacts) -> None:
    assert tiny.f16.read_bytes()[:4] == b"GGUF"
    assert not list(tiny.f16.parent.glob("*.partial"))
    # The test tokenizer's hash is unknown to llama.cpp: converted with the GPT-2 split, and said so.
    assert any("pre-tokenizer" in w and "gpt-2" in w for w in tiny.convert_warnings)
    llm = _load(tiny.f16)
    assert llm.metadata["general.architecture"] == "lfm2"
    assert llm.metadata["tokenizer.ggml.pre"] == "gpt-2"
    assert llm.metadata["tokenizer.chat_template"] == (tiny.hf_dir / "chat_template.jinja").read_text()
    llm.close()


@pytest.mark.parametrize("quant", ["Q8_0", "Q4_K_M"])
def test_quantized_gguf_loads_and_generates(
    quant: str, quantized: dict[str, Path], tiny: TinyArtifacts
) -> None:
    path = quantized[quant]
    assert path.name == f"model-{quant}.gguf"
    assert 0 < path.stat().st_size < tiny.f16.stat().st_size
    llm = _load(path, logits_all=True)
    assert int(llm.metadata["general.file_type"]) == FTYPES[quant]

    completion = llm.create_completion("the capital of france is", max_tokens=4, temperature=0, logprobs=1)
    logprobs: list[float] = completion["choices"][0]["logprobs"]["token_logprobs"]  # type: ignore[index,assignment]
    assert logprobs and all(math.isfinite(lp) and lp <= 0 for lp in logprobs)

    chat = llm.create_chat_completion(
        messages=[{"role": "user", "content": "classify: great product"}], temperature=0, max_tokens=8
    )
    assert chat["usage"]["completion_tokens"] > 0  # type: ignore[index]
    assert isinstance(chat["choices"][0]["message"]["content"], str)  # type: ignore[index]
    llm.close()


def test_unknown_tokenizer_without_fallback_fails_with_converter_stderr(
    tiny: TinyArtifacts, tmp_path: Path
) -> None:
    out = tmp_path / "model.gguf"
    with pytest.raises(GGUFExportError, match="pre-tokenizer was not recognized") as err:
        convert_to_gguf(tiny.hf_dir, out, pre_tokenizer_fallback=None)
    assert "exit 1" in str(err.value)
    assert not out.exists() and not list(tmp_path.glob("*.partial"))


def test_bad_arguments_fail_before_any_work(tiny: TinyArtifacts, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="outtype"):
        convert_to_gguf(tiny.hf_dir, tmp_path / "m.gguf", outtype="q4_k_m")
    with pytest.raises(ValueError, match="Q3_K"):
        quantize_gguf(tiny.f16, tmp_path / "m.gguf", "Q3_K")
    with pytest.raises(FileNotFoundError):
        quantize_gguf(tmp_path / "absent.gguf", tmp_path / "m.gguf", "Q8_0")
