from __future__ import annotations

import shutil
from pathlib import Path

import llama_cpp
import pytest

from export.formats import gguf as gguf_format
from export.profiles import ProfileUnavailableError, get_profile
from export.targets import export_target
from tests.export.tiny_artifacts import TinyArtifacts


@pytest.fixture
def counted_conversions(tiny: TinyArtifacts, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Stand in for the (already tested, 5 s) conversion with a copy of the session's F16 GGUF."""
    calls: list[Path] = []

    def fake_convert(hf_dir: Path, out_path: Path, outtype: str = "f16") -> Path:
        calls.append(out_path)
        out_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tiny.f16, out_path)
        return out_path

    monkeypatch.setattr(gguf_format, "convert_to_gguf", fake_convert)
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


def test_gpu_server_ships_a_lora_jobs_peft_adapter_beside_the_merged_weights(
    tiny: TinyArtifacts, tmp_path: Path
) -> None:
    adapter = tmp_path / "adapter-src"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"r": 8}')
    (adapter / "adapter_model.safetensors").write_bytes(b"weights")
    (adapter / "optimizer.pt").write_bytes(b"not shipped")
    files = export_target(tiny.hf_dir, get_profile("gpu-server"), tmp_path / "work", adapter_dir=adapter)
    shipped = {f.relative_to(tmp_path / "work" / "gpu-server").as_posix() for f in files}
    assert {
        "model.safetensors",
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
    } <= shipped
    assert "adapter/optimizer.pt" not in shipped


def test_browser_target_is_an_onnx_decoder_and_size_is_left_to_the_gate(
    tiny: TinyArtifacts, tmp_path: Path, counted_conversions: list[Path]
) -> None:
    files = export_target(tiny.hf_dir, get_profile("browser-webgpu"), tmp_path)
    assert files[0] == tmp_path / "browser-webgpu" / "onnx" / "model_q4.onnx"
    assert {f.name for f in files[1:]} >= {"config.json", "tokenizer.json", "chat_template.jinja"}
    # an artifact over its size budget is still written: the eval gate applies the profile's rule
    small_device = get_profile("raspberry-pi-5").model_copy(update={"max_artifact_mb": 1})
    (gguf,) = export_target(tiny.hf_dir, small_device, tmp_path)
    assert gguf.stat().st_size > 2**20
    unavailable = small_device.model_copy(update={"available": False, "unavailable_reason": "not today"})
    with pytest.raises(ProfileUnavailableError, match="not today"):
        export_target(tiny.hf_dir, unavailable, tmp_path)
