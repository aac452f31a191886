"""Device profiles: the readable table in profiles.yaml, validated into `DeviceProfile`s."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from domain.job_config import JobConfig
from export.formats import FORMATS

PROFILES_PATH = Path(__file__).with_name("profiles.yaml")

BudgetRule = Literal["refuse", "flag"]


class BudgetRules(BaseModel):
    """What the gate does when an artifact misses each budget (see profiles.yaml's header)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_artifact_mb: BudgetRule = "refuse"
    max_ram_mb: BudgetRule = "refuse"
    min_decode_tokens_per_s: BudgetRule = "flag"
    min_prefill_tokens_per_s: BudgetRule = "flag"


class DeviceProfile(BaseModel):
    """One export target: artifact format, default quantization and the device's limits."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    description: str
    format: str = Field(description="One of export/formats FORMATS (any name when not available).")
    quantization: str = Field(description="Default quantization, one the format's module lists.")
    quality_quantization: str | None = Field(default=None, description="Higher-fidelity alternative.")
    context_cap: int = Field(gt=0, description="Context length to configure on the device, in tokens.")
    max_artifact_mb: int = Field(gt=0, description="Largest artifact the device class should receive.")
    min_ram_mb: int = Field(gt=0, description="Device RAM of the class (descriptive).")
    max_ram_mb: int | None = Field(default=None, gt=0, description="Memory the artifact may take to run.")
    min_decode_tokens_per_s: float | None = Field(default=None, gt=0, description="Decode speed floor.")
    min_prefill_tokens_per_s: float | None = Field(
        default=None,
        gt=0,
        description="Prompt-processing speed floor: a prompt of N tokens waits N / this seconds for "
        "its first answer token. Judged on the device's figures only (an agent's, or the device "
        "model's in a sweep): the worker host does not measure prefill.",
    )
    memory_bandwidth_gbps: float | None = Field(
        default=None,
        gt=0,
        description="Nominal peak memory bandwidth of the class (export/device_model.py).",
    )
    compute_gops: float | None = Field(
        default=None,
        gt=0,
        description="Nominal peak int8/fp16 operations per second of the class, in billions, for "
        "prefill (export/device_model.py).",
    )
    on_over_budget: BudgetRules = BudgetRules()
    runtime: str
    families: list[str] = Field(default_factory=list, description="Base families it exports; []: all.")
    available: bool = True
    unavailable_reason: str | None = None

    @model_validator(mode="after")
    def _consistent(self) -> DeviceProfile:
        fmt = FORMATS.get(self.format)
        if self.available and fmt is None:
            raise ValueError(
                f"{self.name}: format {self.format!r} cannot be exported; mark it available: false"
            )
        for quant in (self.quantization, self.quality_quantization):
            if fmt is not None and quant is not None and quant not in fmt.quantizations:
                allowed = fmt.quantizations
                raise ValueError(
                    f"{self.name}: {fmt.name.upper()} quantization {quant!r} is not one of {allowed}"
                )
        if not self.available and not self.unavailable_reason:
            raise ValueError(f"{self.name}: an unavailable profile needs an unavailable_reason")
        return self


class UnknownProfileError(KeyError):
    def __str__(self) -> str:  # KeyError's own str() wraps the message in quotes
        return str(self.args[0])


class ProfileUnavailableError(ValueError):
    """The profile is described but cannot be exported yet; the message carries the reason."""


def profiles_path() -> Path:
    """export/profiles.yaml, or the operator's own file (EDGETUNE_PROFILES)."""
    from infra.settings import get_settings

    return get_settings().profiles or PROFILES_PATH


def load_profiles(path: Path | None = None) -> dict[str, DeviceProfile]:
    """All profiles by name, in file order."""
    raw = yaml.safe_load((path or profiles_path()).read_text())
    return {name: DeviceProfile(name=name, **fields) for name, fields in raw.items()}


def get_profile(name: str, path: Path | None = None) -> DeviceProfile:
    """The profile called `name`.

    Raises:
        UnknownProfileError (a `KeyError`): no such profile; the message lists the valid names.
    """
    profiles = load_profiles(path)
    if name not in profiles:
        raise UnknownProfileError(f"unknown device profile {name!r}; valid profiles: {', '.join(profiles)}")
    return profiles[name]


def target_profile(config: JobConfig, name: str) -> DeviceProfile:
    """The profile a job's target is exported and judged against: the named profile, with any
    budget the target sets itself in place of the profile's (TargetBudgets)."""
    return get_profile(name).model_copy(update=config.target_budgets(name))


def check_exportable(profile: DeviceProfile) -> None:
    """Raise `ProfileUnavailableError` (with the reason) for a profile we cannot export to."""
    if not profile.available:
        raise ProfileUnavailableError(
            f"device profile {profile.name!r} is not available: {profile.unavailable_reason}"
        )


def check_family(profile: DeviceProfile, family: str) -> None:
    """Raise `ProfileUnavailableError` when the profile's exporter does not handle `family`."""
    if profile.families and family not in profile.families:
        raise ProfileUnavailableError(
            f"device profile {profile.name!r} exports {', '.join(profile.families)} models only, not {family}"
        )


def model_context_length(artifact: Path) -> int | None:
    """The context the model was trained to, read from the artifact: a GGUF's
    `<arch>.context_length`, or `max_position_embeddings` in an ONNX artifact's config.json."""
    if artifact.suffix == ".gguf":
        from gguf import GGUFReader

        fields = GGUFReader(artifact).fields
        arch = fields.get("general.architecture")
        length = fields.get(f"{arch.contents()}.context_length") if arch is not None else None
        return int(length.contents()) if length is not None else None
    config = artifact.parent.parent / "config.json"  # <artifact>/onnx/model_q4.onnx
    if config.is_file():
        value = json.loads(config.read_text()).get("max_position_embeddings")
        return int(value) if value else None
    return None


def gguf_parameters(artifact: Path) -> int:
    """The GGUF's parameter count: every tensor's elements, as llama.cpp's llama_model_n_params
    counts them (the device model's prefill cost per token is twice this)."""
    from gguf import GGUFReader

    return sum(int(t.n_elements) for t in GGUFReader(artifact).tensors)


def eval_context(profile: DeviceProfile, artifact: Path) -> int:
    """The context an artifact is scored at: the device's cap, or the model's trained context if
    that is shorter (a runtime configured past it would only warn and degrade)."""
    trained = model_context_length(artifact)
    return min(profile.context_cap, trained) if trained else profile.context_cap


def estimated_artifact_bytes(profile: DeviceProfile, params: int, gpu: bool = False) -> int:
    """Artifact size before it exists, for quotes and budgets: the format's own estimate (bits
    per weight of the quantization; a merged checkpoint's dtype)."""
    fmt = FORMATS.get(profile.format)  # None: a described, unavailable format; sized as 16-bit
    return fmt.estimate_bytes(params, profile.quantization, gpu) if fmt else params * 2


def runtime_of(profile: DeviceProfile) -> str | None:
    """The runtime the profile's artifact is scored in as shipped; None when it is not scored."""
    fmt = FORMATS.get(profile.format)
    return fmt.runtime if fmt is not None else None
