"""A new artifact format is one module plus one line in FORMATS: a format defined here, and added to
the table the way its line would, is validated in profiles, exported, sized for the plan, and
described by the manifest and model card, with no other file knowing its name."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from domain.job_config import JobConfig, TaskSpec
from export.formats import FORMATS
from export.formats.spec import ArtifactFormat, ExportJob, HubFacts
from export.manifest import build_manifest, model_card, verify_manifest
from export.profiles import estimated_artifact_bytes, load_profiles, runtime_of
from export.targets import export_target
from tests.export.tiny_artifacts import TinyArtifacts


def _make(job: ExportJob) -> list[Path]:
    """The toy format ships the merged config under a name of its own (stands in for a converter)."""
    job.out_dir.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy2(job.merged_dir / "config.json", job.out_dir / f"model-{job.quantization}.toy"))]


TOY = ArtifactFormat(
    name="toy",
    quantizations=("t2", "t8"),
    make=_make,
    bits_per_weight={"t2": 2.5, "t8": 8.0},
    min_runtime=lambda: "toyrt>=1.0",
    how_to_run=lambda manifest: f"toyrt run {manifest['files'][0]['path']}\n",
    hub=HubFacts(library="toylib", relation="quantized", tags=("lfm2", "toy")),
)
PROFILE = (
    "toy-device:\n  description: d\n  format: toy\n  quantization: {quant}\n  context_cap: 512\n"
    "  max_artifact_mb: 10\n  min_ram_mb: 64\n  runtime: toyrt\n"
)


def _profiles(tmp_path: Path, quant: str = "t2") -> Path:
    path = tmp_path / "profiles.yaml"
    path.write_text(PROFILE.format(quant=quant))
    return path


def test_a_format_outside_the_table_cannot_be_exported(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="format 'toy' cannot be exported; mark it available: false"):
        load_profiles(_profiles(tmp_path))


def test_one_module_and_one_line_make_a_working_format(
    tiny: TinyArtifacts, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(FORMATS, "toy", TOY)  # the format's line in export/formats/__init__.py
    with pytest.raises(ValidationError, match=r"TOY quantization 'q4' is not one of \('t2', 't8'\)"):
        load_profiles(_profiles(tmp_path, quant="q4"))
    profile = load_profiles(_profiles(tmp_path))["toy-device"]

    files = export_target(tiny.hf_dir, profile, tmp_path / "export")
    assert [f.relative_to(tmp_path / "export") for f in files] == [Path("toy-device/model-t2.toy")]
    t8 = export_target(tiny.hf_dir, profile, tmp_path / "export", quantization="t8")
    assert t8[0].name == "model-t8.toy"
    # the plan's size estimate: 2.5 bits per weight; no runtime, so the artifact is not re-scored
    assert estimated_artifact_bytes(profile, 8_000_000) == 2_500_000 and runtime_of(profile) is None

    config = JobConfig(
        model="LiquidAI/LFM2-350M", task=TaskSpec(description="Sort toys by kind.", labels=["a", "b"])
    )
    manifest = build_manifest("job-1", config, profile, files, tmp_path / "export", merged_dir=tiny.hf_dir)
    assert verify_manifest(manifest, tmp_path / "export") == []
    assert (manifest["format"], manifest["min_runtime"]) == ("toy", "toyrt>=1.0")
    card = model_card(manifest)
    meta = yaml.safe_load(card.split("---\n", 2)[1])
    assert (meta["library_name"], meta["base_model_relation"], meta["tags"]) == (
        "toylib",
        "quantized",
        ["lfm2", "toy"],
    )
    assert "toyrt run toy-device/model-t2.toy" in card
