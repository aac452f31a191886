from __future__ import annotations

import shutil
from pathlib import Path

import llama_cpp
import pytest

from registry import export
from registry.export import ArtifactTooLargeError, export_target
from registry.profiles import ProfileUnavailableError, get_profile
from tests.registry.tiny_artifacts import TinyArtifacts


@pytest.fixture
def counted_conversions(tiny: TinyArtifacts, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Stand in for the (already tested, 5 s) conversion with a copy of the session's F16 GGUF."""
    calls: list[Path] = []

    def fake_convert(hf_dir: Path, out_path: Path, outtype: str = "f16") -> Path:
        calls.append(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tiny.f16, out_path)
        return out_path

    monkeypatch.setattr(export, "convert_to_gguf", fake_convert)
    return calls


def test_gguf_targets_share_one_f16_conversion(
    tiny: TinyArtifacts, tmp_path: Path, counted_conversions: list[Path]
) -> None:
    android = export_target(tiny.hf_dir, get_profile("phone-android"), tmp_path)
    laptop = export_target(tiny.hf_dir, get_profile("laptop-cpu"), tmp_path)

    assert counted_conversions == [tmp_path / "model-f16.gguf"]
    assert android == [tmp_path / "phone-android" / "model-Q4_0.gguf"]
    assert laptop == [tmp_path / "laptop-cpu" / "model-Q4_K_M.gguf"]
    llm = llama_cpp.Llama(model_path=str(laptop[0]), n_ctx=256, verbose=False)
    assert int(llm.metadata["general.file_type"]) == llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M
    llm.close()


def test_quality_quantization_override(
    tiny: TinyArtifacts, tmp_path: Path, counted_conversions: list[Path]
) -> None:
    profile = get_profile("phone-android")
    files = export_target(tiny.hf_dir, profile, tmp_path, quantization=profile.quality_quantization)
    assert [f.name for f in files] == ["model-Q8_0.gguf"]


def test_gpu_server_gets_the_merged_hf_checkpoint(tiny: TinyArtifacts, tmp_path: Path) -> None:
    merged = tmp_path / "merged"
    shutil.copytree(tiny.hf_dir, merged)
    (merged / "optimizer.pt").write_bytes(b"training leftovers")
    (merged / "trainer_state.json").write_text("{}")

    files = export_target(merged, get_profile("gpu-server"), tmp_path / "work")

    assert all(f.parent == tmp_path / "work" / "gpu-server" for f in files)
    names = {f.name for f in files}
    assert {"model.safetensors", "config.json", "tokenizer.json", "tokenizer_config.json"} <= names
    assert "chat_template.jinja" in names
    assert not names & {"optimizer.pt", "trainer_state.json"}
    for f in files:
        assert f.read_bytes() == (merged / f.name).read_bytes()


def test_unavailable_and_oversized_targets_are_refused(
    tiny: TinyArtifacts, tmp_path: Path, counted_conversions: list[Path]
) -> None:
    with pytest.raises(ProfileUnavailableError, match="browser-webgpu"):
        export_target(tiny.hf_dir, get_profile("browser-webgpu"), tmp_path)
    small_device = get_profile("raspberry-pi-5").model_copy(update={"max_artifact_mb": 1})
    with pytest.raises(ArtifactTooLargeError, match="over the profile's 1 MB"):
        export_target(tiny.hf_dir, small_device, tmp_path)
