from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from registry.profiles import (
    SUPPORTED_FORMATS,
    ProfileUnavailableError,
    UnknownProfileError,
    check_exportable,
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
        "browser-webgpu": ("onnx", "q4f16"),
        "gpu-server": ("safetensors", "none"),
    }
    for profile in profiles.values():
        assert profile.name and profile.description and profile.runtime
        assert profile.context_cap > 0 and profile.max_artifact_mb > 0 and profile.min_ram_mb > 0
        assert profile.available == (profile.format in SUPPORTED_FORMATS)


def test_unknown_profile_is_a_key_error_listing_valid_names() -> None:
    with pytest.raises(KeyError) as err:
        get_profile("toaster")
    assert isinstance(err.value, UnknownProfileError)
    message = str(err.value)
    assert "toaster" in message and all(name in message for name in NAMES)


def test_browser_webgpu_is_described_but_refused_with_a_reason() -> None:
    profile = get_profile("browser-webgpu")
    assert not profile.available and "ONNX" in (profile.unavailable_reason or "")
    with pytest.raises(ProfileUnavailableError, match="ONNX export is not implemented"):
        check_exportable(profile)
    check_exportable(get_profile("laptop-cpu"))  # no error


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("format: gguf\nquantization: Q3_K_S\n", "Q3_K_S"),  # not a quantization we publish
        ("format: onnx\nquantization: q4\n", "available: false"),  # ONNX cannot be exported
        ("format: onnx\nquantization: q4\navailable: false\n", "unavailable_reason"),
    ],
)
def test_profile_file_is_validated(tmp_path: Path, body: str, error: str) -> None:
    common = "  description: d\n  context_cap: 1\n  max_artifact_mb: 1\n  min_ram_mb: 1\n  runtime: r\n"
    path = tmp_path / "profiles.yaml"
    path.write_text("bad:\n" + "".join(f"  {line}\n" for line in body.splitlines()) + common)
    with pytest.raises(ValidationError, match=error):
        load_profiles(path)
