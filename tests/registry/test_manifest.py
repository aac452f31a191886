from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from eval.metrics import score
from infra.job_config import JobConfig, TaskSpec
from registry.export import export_target
from registry.manifest import (
    build_manifest,
    chat_template,
    license_info,
    model_card,
    sha256_file,
    verify_manifest,
    write_manifest,
)
from registry.profiles import get_profile
from tests.registry.tiny_artifacts import TinyArtifacts

CONFIG = JobConfig(
    model="LiquidAI/LFM2-350M",
    suffix="sentiment",
    task=TaskSpec(description="Classify review sentiment.", labels=["positive", "negative"]),
)


@pytest.fixture
def gguf_export(tiny: TinyArtifacts, quantized: dict[str, Path], tmp_path: Path) -> tuple[Path, list[Path]]:
    """A laptop-cpu target folder holding the session's Q4_K_M file (no re-quantization)."""
    target = tmp_path / "laptop-cpu"
    target.mkdir()
    return tmp_path, [Path(shutil.copy2(quantized["Q4_K_M"], target / "model-Q4_K_M.gguf"))]


def _manifest(
    tiny: TinyArtifacts, root: Path, files: list[Path], profile: str = "laptop-cpu"
) -> dict[str, Any]:
    eval_scores = {
        "gguf": score("classification", ["positive", "negative"], ["positive", "positive"]).to_dict()
    }
    return build_manifest(
        "job-123",
        CONFIG,
        get_profile(profile),
        files,
        root,
        eval_scores,
        {"dataset_sha256": "ab" * 32},
        merged_dir=tiny.hf_dir,
    )


def test_sha256_file_streams_large_files(tmp_path: Path) -> None:
    data = bytes(range(256)) * 9000  # > 2 chunks of 1 MiB
    (tmp_path / "blob").write_bytes(data)
    assert sha256_file(tmp_path / "blob") == hashlib.sha256(data).hexdigest()


def test_manifest_records_files_provenance_and_license(
    tiny: TinyArtifacts, gguf_export: tuple[Path, list[Path]]
) -> None:
    root, files = gguf_export
    manifest = _manifest(tiny, root, files)

    assert manifest["files"] == [
        {
            "path": "laptop-cpu/model-Q4_K_M.gguf",
            "bytes": files[0].stat().st_size,
            "sha256": sha256_file(files[0]),
        }
    ]
    assert manifest["base_model"] == "LiquidAI/LFM2-350M"
    assert (manifest["format"], manifest["quantization"]) == ("gguf", "Q4_K_M")
    assert manifest["min_runtime"] == "llama.cpp (llama-cpp-python 0.3.36)"
    assert manifest["tool_call_format"] == "lfm-pythonic"
    template = (tiny.hf_dir / "chat_template.jinja").read_text()
    assert manifest["chat_template_sha256"] == hashlib.sha256(template.encode()).hexdigest()
    assert JobConfig.model_validate(manifest["job_config"]) == CONFIG
    assert manifest["license"]["license_name"] == "lfm1.0"
    assert "LFM Open License v1.0" in manifest["license"]["attribution"]
    assert manifest["eval"]["gguf"]["metric"] == "accuracy"
    json.dumps(manifest)  # serialisable as-is


def test_verify_detects_tampered_truncated_and_missing_files(
    tiny: TinyArtifacts, gguf_export: tuple[Path, list[Path]]
) -> None:
    root, files = gguf_export
    manifest = _manifest(tiny, root, files)
    assert verify_manifest(manifest, root) == []

    data = bytearray(files[0].read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one flipped byte
    files[0].write_bytes(bytes(data))
    assert verify_manifest(manifest, root) == [
        "laptop-cpu/model-Q4_K_M.gguf: sha256 differs from the manifest"
    ]

    files[0].write_bytes(bytes(data[:100]))
    assert "100 bytes" in verify_manifest(manifest, root)[0]
    files[0].unlink()
    assert verify_manifest(manifest, root) == ["laptop-cpu/model-Q4_K_M.gguf: missing"]


def test_files_outside_the_root_are_rejected(tiny: TinyArtifacts, tmp_path: Path) -> None:
    (tmp_path / "elsewhere.gguf").write_bytes(b"x")
    with pytest.raises(ValueError, match="not under the manifest root"):
        _manifest(tiny, tmp_path / "root", [tmp_path / "elsewhere.gguf"])


def test_model_card_for_gguf(tiny: TinyArtifacts, gguf_export: tuple[Path, list[Path]]) -> None:
    root, files = gguf_export
    written = write_manifest(_manifest(tiny, root, files), root)
    assert [p.name for p in written] == ["manifest.json", "README.md"]
    card = (root / "README.md").read_text()

    _, front, body = card.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert meta["base_model"] == "LiquidAI/LFM2-350M"
    assert meta["base_model_relation"] == "quantized"
    assert meta["library_name"] == "gguf"
    assert meta["tags"] == ["lfm2", "edge", "llama.cpp", "gguf"]
    assert (meta["license"], meta["license_name"]) == ("other", "lfm1.0")
    assert "# sentiment" in body and "laptop-cpu/model-Q4_K_M.gguf" in body
    assert "llama-cli -m laptop-cpu/model-Q4_K_M.gguf" in body
    assert "accuracy = 0.500" in body
    assert json.loads((root / "manifest.json").read_text())["job_id"] == "job-123"


def test_model_card_for_merged_safetensors(tiny: TinyArtifacts, tmp_path: Path) -> None:
    files = export_target(tiny.hf_dir, get_profile("gpu-server"), tmp_path)
    manifest = _manifest(tiny, tmp_path, files, profile="gpu-server")
    assert verify_manifest(manifest, tmp_path) == []
    assert manifest["min_runtime"].startswith("transformers>=4.54.0")
    meta = yaml.safe_load(model_card(manifest).split("---\n", 2)[1])
    assert (meta["base_model_relation"], meta["library_name"]) == ("finetune", "transformers")


def test_chat_template_from_older_tokenizer_config(tmp_path: Path) -> None:
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps(
            {"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]}
        )
    )
    assert chat_template(tmp_path) == "D"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "S"}))
    assert chat_template(tmp_path) == "S"
    (tmp_path / "tokenizer_config.json").write_text("{}")
    assert chat_template(tmp_path) is None


def test_license_attribution_by_base() -> None:
    assert license_info("LiquidAI/LFM2-1.2B")["license_link"].endswith("LiquidAI/LFM2-1.2B/blob/main/LICENSE")
    assert license_info("HuggingFaceTB/SmolLM2-135M-Instruct")["license"] == "apache-2.0"
    assert license_info("someone/model")["license_name"] == "unknown"


def test_without_merged_dir_the_gguf_embedded_template_is_hashed(
    tiny: TinyArtifacts, gguf_export: tuple[Path, list[Path]]
) -> None:
    root, files = gguf_export
    manifest = build_manifest("job-1", CONFIG, get_profile("laptop-cpu"), files, root)
    assert manifest["chat_template_sha256"] == _manifest(tiny, root, files)["chat_template_sha256"]
    assert manifest["eval"] == {} and manifest["extra"] == {}


def test_model_card_renders_the_workers_base_vs_fine_tuned_scores(
    tiny: TinyArtifacts, gguf_export: tuple[Path, list[Path]]
) -> None:
    root, files = gguf_export
    manifest = _manifest(tiny, root, files)
    manifest["eval"] = {
        "metric": "accuracy",
        "n": 12,
        "base": {"score": 0.25, "ci_low": 0.08, "ci_high": 0.5},
        "fine_tuned": {"score": 0.75, "ci_low": 0.5, "ci_high": 1.0},
        "delta": 0.5,
        "artifact": {"metric": "accuracy", "score": 0.6667, "ci_low": 0.4167, "ci_high": 0.9167},
    }
    card = model_card(manifest)
    assert "- base: accuracy = 0.250 (95% CI 0.080-0.500), n=12" in card
    assert "- fine_tuned: accuracy = 0.750" in card
    assert "- artifact: accuracy = 0.667" in card
    assert "- fine-tuned minus base: +0.500" in card
