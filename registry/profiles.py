"""Device profiles: the readable table in profiles.yaml, validated into `DeviceProfile`s."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from registry.gguf_export import QUANT_TYPES

PROFILES_PATH = Path(__file__).with_name("profiles.yaml")
# Formats export_target can produce today. ONNX is described (browser-webgpu) but not built.
SUPPORTED_FORMATS = {"gguf", "safetensors"}


class DeviceProfile(BaseModel):
    """One export target: artifact format, default quantization and the device's limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str
    format: Literal["gguf", "onnx", "safetensors"]
    quantization: str = Field(description="Default quantization; for gguf one of QUANT_TYPES.")
    quality_quantization: str | None = Field(default=None, description="Higher-fidelity alternative.")
    context_cap: int = Field(gt=0, description="Context length to configure on the device, in tokens.")
    max_artifact_mb: int = Field(gt=0, description="Largest artifact the device class should receive.")
    min_ram_mb: int = Field(gt=0)
    runtime: str
    available: bool = True
    unavailable_reason: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> DeviceProfile:
        if self.format == "gguf":
            for quant in (self.quantization, self.quality_quantization):
                if quant is not None and quant not in QUANT_TYPES:
                    raise ValueError(f"{self.name}: GGUF quantization {quant!r} is not one of {QUANT_TYPES}")
        if self.available and self.format not in SUPPORTED_FORMATS:
            raise ValueError(
                f"{self.name}: format {self.format!r} cannot be exported; mark it available: false"
            )
        if not self.available and not self.unavailable_reason:
            raise ValueError(f"{self.name}: an unavailable profile needs an unavailable_reason")
        return self


class UnknownProfileError(KeyError):
    def __str__(self) -> str:  # KeyError's own str() wraps the message in quotes
        return str(self.args[0])


class ProfileUnavailableError(ValueError):
    """The profile is described but cannot be exported yet; the message carries the reason."""


def load_profiles(path: Path = PROFILES_PATH) -> dict[str, DeviceProfile]:
    """All profiles by name, in file order."""
    raw = yaml.safe_load(path.read_text())
    return {name: DeviceProfile(name=name, **fields) for name, fields in raw.items()}


def get_profile(name: str, path: Path = PROFILES_PATH) -> DeviceProfile:
    """The profile called `name`.

    Raises:
        UnknownProfileError (a `KeyError`): no such profile; the message lists the valid names.
    """
    profiles = load_profiles(path)
    if name not in profiles:
        raise UnknownProfileError(f"unknown device profile {name!r}; valid profiles: {', '.join(profiles)}")
    return profiles[name]


def check_exportable(profile: DeviceProfile) -> None:
    """Raise `ProfileUnavailableError` (with the reason) for a profile we cannot export to."""
    if not profile.available:
        raise ProfileUnavailableError(
            f"device profile {profile.name!r} is not available: {profile.unavailable_reason}"
        )


# Average stored bits per weight, from llama.cpp's quantize table (block scales included; K-quant
# mixes keep some tensors at higher precision, hence Q4_K_M's 4.9 rather than 4.5).
BITS_PER_WEIGHT = {"F16": 16.0, "Q8_0": 8.5, "Q5_K_M": 5.7, "Q4_K_M": 4.9, "Q4_0": 4.55, "q4f16": 4.9}


def estimated_artifact_bytes(profile: DeviceProfile, params: int, gpu: bool = False) -> int:
    """Artifact size before it exists, for quotes and budgets: params x bits per weight. A merged
    safetensors checkpoint is saved in bf16 when trained on a GPU, fp32 on a CPU."""
    if profile.format == "safetensors":
        return params * (2 if gpu else 4)
    return int(params * BITS_PER_WEIGHT.get(profile.quantization, 16.0) / 8)
