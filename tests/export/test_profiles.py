from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from export.formats import FORMATS
from export.profiles import (
    ProfileUnavailableError,
    UnknownProfileError,
    check_exportable,
    check_family,
    get_profile,
    load_profiles,
)

NAMES = ["phone-ios", "phone-android", "laptop-cpu", "mac", "raspberry-pi-5", "browser-webgpu", "gpu-server"]


def test_all_seven_profiles_load_with_liquids_defaults() -> None:
    profiles = load_profiles()
    assert list(profiles) == NAMES
    assert {name: (p.format, p.quantization) for name, p in profiles.items()} == {
        "phone-ios": ("gguf", "Q4_K_M"),
        "phone-android": ("gguf", "Q4_0"),
        "laptop-cpu": ("gguf", "Q4_K_M"),
        "mac": ("gguf", "Q4_K_M"),
        "raspberry-pi-5": ("gguf", "Q4_0"),
        "browser-webgpu": ("onnx", "q4"),
        "gpu-server": ("safetensors", "none"),
    }
    for profile in profiles.values():
        assert profile.name and profile.description and profile.runtime
        assert profile.context_cap > 0 and profile.max_artifact_mb > 0 and profile.min_ram_mb > 0
        assert profile.available and profile.format in FORMATS
        # every device that runs the artifact has memory and speed budgets; size always refuses
        assert (profile.max_ram_mb is None) == (profile.format == "safetensors")
        assert profile.on_over_budget.max_artifact_mb == "refuse"


def test_unknown_profile_is_a_key_error_listing_valid_names() -> None:
    with pytest.raises(KeyError) as err:
        get_profile("toaster")
    assert isinstance(err.value, UnknownProfileError)
    message = str(err.value)
    assert "toaster" in message and all(name in message for name in NAMES)


def test_unavailable_profiles_are_refused_with_their_reason() -> None:
    described = get_profile("browser-webgpu").model_copy(
        update={"available": False, "unavailable_reason": "no exporter on this server"}
    )
    with pytest.raises(ProfileUnavailableError, match="no exporter on this server"):
        check_exportable(described)
    check_exportable(get_profile("laptop-cpu"))  # no error


def test_a_profile_may_limit_the_model_families_it_exports() -> None:
    browser = get_profile("browser-webgpu")
    check_family(browser, "lfm2")
    check_family(browser, "lfm2.5")
    with pytest.raises(ProfileUnavailableError, match="lfm2, lfm2.5 models only, not smollm2"):
        check_family(browser, "smollm2")
    check_family(get_profile("laptop-cpu"), "smollm2")  # GGUF: every family


def test_operators_can_point_at_their_own_profiles_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from infra.settings import get_settings

    path = tmp_path / "profiles.yaml"
    path.write_text(
        "kiosk:\n  description: d\n  format: gguf\n  quantization: Q8_0\n  context_cap: 512\n"
        "  max_artifact_mb: 64\n  min_ram_mb: 1024\n  max_ram_mb: 256\n  runtime: llama.cpp\n"
        "  on_over_budget: {min_decode_tokens_per_s: refuse}\n"
    )
    monkeypatch.setenv("EDGETUNE_PROFILES", str(path))
    get_settings.cache_clear()
    try:
        assert list(load_profiles()) == ["kiosk"]
        kiosk = get_profile("kiosk")
        assert kiosk.max_ram_mb == 256 and kiosk.on_over_budget.min_decode_tokens_per_s == "refuse"
        assert kiosk.on_over_budget.max_ram_mb == "refuse"  # the default for the rules not given
    finally:
        monkeypatch.delenv("EDGETUNE_PROFILES")
        get_settings.cache_clear()


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("format: gguf\nquantization: Q3_K_S\n", "Q3_K_S"),  # not a quantization we publish
        ("format: onnx\nquantization: q4f16\n", "ONNX quantization 'q4f16'"),  # fp16 export not built
        ("format: gguf\nquantization: Q4_0\non_over_budget: {max_ram_mb: warn}\n", "refuse"),
        ("format: onnx\nquantization: q4\navailable: false\n", "unavailable_reason"),
    ],
)
def test_profile_file_is_validated(tmp_path: Path, body: str, error: str) -> None:
    common = "  description: d\n  context_cap: 1\n  max_artifact_mb: 1\n  min_ram_mb: 1\n  runtime: r\n"
    path = tmp_path / "profiles.yaml"
    path.write_text("bad:\n" + "".join(f"  {line}\n" for line in body.splitlines()) + common)
    with pytest.raises(ValidationError, match=error):
        load_profiles(path)
