"""Base models and device targets a job may name. Thin over recipes.base_models and
export.profiles so the API, worker and agent tools apply the same rule."""

from __future__ import annotations

from typing import TYPE_CHECKING

from domain.job_config import JobConfig
from domain.lists import SWEEP_FORMAT
from infra.settings import get_settings
from services.errors import InvalidRequest

if TYPE_CHECKING:
    from export.profiles import DeviceProfile
    from recipes.base_models import BaseModelInfo


def check_base_model(model_id: str, param: str = "model") -> BaseModelInfo:
    """The catalog entry of a base a job may fine-tune (known, trainable, weights reachable);
    `param` names the field in a refusal (a sweep's other bases are `targets[i].models[j]`)."""
    from recipes.base_models import find_base_model

    s = get_settings()
    info = find_base_model(model_id, s.models_dir, s.model_cache_dir)
    if info is None:
        raise InvalidRequest(
            f"unknown base model {model_id!r}; GET /v1/models lists the supported ones",
            param=param,
            code="model_not_found",
        )
    if info.fine_tune_instead:
        raise InvalidRequest(
            f"{model_id} is a thinking model; fine-tune {info.fine_tune_instead} instead",
            param=param,
            code="model_not_trainable",
        )
    if not info.available:
        where = f"{s.models_dir}/{model_id}" if s.models_dir else f"$EDGETUNE_MODELS_DIR/{model_id}"
        raise InvalidRequest(
            f"weights for {model_id} are not on this server and no model hub is reachable; "
            f"put the Hugging Face checkpoint in {where} (or the HF cache)",
            param=param,
            code="model_weights_missing",
        )
    return info


def check_targets(cfg: JobConfig, family: str | None = None) -> None:
    """Every target names an available profile, once, whose exporter handles the base's `family`;
    a sweep (`select: best_within_budget`) only where the format has quantizations to sweep (GGUF)."""
    from export.profiles import ProfileUnavailableError, check_family, load_profiles

    profiles, targets = load_profiles(), cfg.target_names
    for i, name in enumerate(targets):
        profile = profiles.get(name)
        if profile is None:
            raise InvalidRequest(
                f"unknown device target {name!r}; valid targets: {sorted(profiles)}",
                param=f"targets[{i}]",
                code="target_not_found",
            )
        if not profile.available:
            raise InvalidRequest(
                f"device target {name!r} is not available yet: {profile.unavailable_reason}",
                param=f"targets[{i}]",
                code="target_unavailable",
            )
        try:
            if family is not None:
                check_family(profile, family)
        except ProfileUnavailableError as exc:
            raise InvalidRequest(str(exc), param=f"targets[{i}]", code="target_unsupported_model") from None
        if cfg.target_select(name) == "best_within_budget" and profile.format != SWEEP_FORMAT:
            raise InvalidRequest(
                f"select 'best_within_budget' sweeps GGUF quantizations; {name} ships {profile.format}",
                param=f"targets[{i}].select",
                code="target_select_unsupported",
            )
        _check_sweep_models(cfg, i, profile)
    if len(set(targets)) != len(targets):
        raise InvalidRequest("targets must not repeat", param="targets")


def _check_sweep_models(cfg: JobConfig, i: int, profile: DeviceProfile) -> None:
    """A sweep's other bases pass the job model's checks, each named by its place in the body,
    and each has an exporter for the target's format."""
    from export.profiles import ProfileUnavailableError, check_family

    spec = cfg.targets[i]
    for j, model_id in enumerate(spec.models or [] if not isinstance(spec, str) else []):
        if model_id == cfg.model:
            continue  # the job's own model, swept anyway
        param = f"targets[{i}].models[{j}]"
        info = check_base_model(model_id, param=param)
        try:
            check_family(profile, info.family)
        except ProfileUnavailableError as exc:
            raise InvalidRequest(str(exc), param=param, code="target_unsupported_model") from None
