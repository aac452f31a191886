"""A device model (issue 18): a predicted decode speed, prefill speed and memory for a GGUF on a
profile's device, shown where no device agent measured it, with how far off it has been where
agents did.

Decode speed. A small model's decode reads every weight once per token (LFM2 ties its embeddings,
so the output head reads the whole embedding table too), so on a CPU it is memory-bound:

    tokens/s = efficiency x bandwidth / bytes read per token ~= efficiency x bandwidth / file size

`bandwidth` is the profile's nominal peak (export/profiles.yaml `memory_bandwidth_gbps`);
`efficiency` is the share of it llama.cpp reaches, DEFAULT_EFFICIENCY until the org's agents of the
profile have measured something, then the median over their measurements (each gives tokens/s x
size / bandwidth), at most 1. The error shown is the median relative miss of that fitted
efficiency on those same measurements: how far a prediction has been from a measurement on this
class of device.

Memory. The runtime allocates the same things on any device for the same file and context (the
mapped weights, the KV cache for the whole context, compute buffers), so the host's measured peak
(eval/runtime_stats.py, never below the file's size) is the prediction.

Prefill speed. A prompt's tokens go through the weights together, as matrix-matrix products, so
prefill is compute-bound: each weight is one multiply-add (2 operations) per token, the tied output
head included, so

    tokens/s = prefill efficiency x peak operations/s / (2 x parameters)

`compute_gops` is the profile's nominal peak (export/profiles.yaml: cores x clock x int8 or fp16
operations per cycle of its floor device; the GPU's for a Metal profile); `parameters` is the
GGUF's element count, which is what llama.cpp's `llama_model_n_params` and llama-bench's
`model_n_params` report. Attention over the prompt adds 4 x attention layers x width x prompt
tokens per token: on LFM2-350M's 6 attention layers, width 1024 and a 128-token prompt about 3M
against 700M of weights, under 1%, left out. The share of the peak llama.cpp reaches depends on
the kernels a device has (dotprod, i8mm, Metal's simdgroup matrices) far more than decode does, so
DEFAULT_PREFILL_EFFICIENCY is a rougher start than decode's and is fitted the same way, on the
agent measurements that report the model's parameter count.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Any, NamedTuple

from export.profiles import DeviceProfile

# llama.cpp's CPU decode reaches roughly half the nominal peak bandwidth on small models (the rest
# goes to per-token overhead and the bus's practical ceiling); a starting point that agent
# measurements replace.
DEFAULT_EFFICIENCY = 0.5
# Quantized matrix-matrix kernels on a CPU reach a quarter of the nominal int8 peak or less (the
# weights are unpacked per block, and the activations re-quantized, between the dot products); an
# assumption, like DEFAULT_EFFICIENCY, that agent measurements replace.
DEFAULT_PREFILL_EFFICIENCY = 0.25
MAX_EFFICIENCY = 1.0


@dataclass(frozen=True)
class Calibration:
    efficiency: float
    samples: int  # agent measurements it was fitted on (0: the default)
    median_abs_error: float | None  # relative, on those measurements; None without any
    prefill_efficiency: float = DEFAULT_PREFILL_EFFICIENCY
    prefill_samples: int = 0  # measurements that gave the model's parameter count
    prefill_median_abs_error: float | None = None


class Measurement(NamedTuple):
    """One agent measurement of one GGUF (services/device_benchmarks.py calibration_points)."""

    file_bytes: int
    decode_tokens_per_s: float
    parameters: int | None = None  # the agent's model_n_params; older agents do not send it
    prefill_tokens_per_s: float | None = None


def _fit(each: list[float], default: float) -> tuple[float, int, float | None]:
    """(efficiency, samples, median relative error) from one efficiency per measurement."""
    if not each:
        return default, 0, None
    # no device goes past its peak: an efficiency above 1 is a mismeasure (or a profile's peak set
    # too low), clamped so a prediction never promises more than the hardware carries
    fitted = min(statistics.median(each), MAX_EFFICIENCY)
    error = statistics.median(abs(fitted / e - 1) for e in each)  # predicted / measured - 1
    return fitted, len(each), round(error, 4)


def calibrate(profile: DeviceProfile, measured: list[Measurement]) -> Calibration:
    """The efficiencies for `profile` from the org's agent measurements on it."""
    bandwidth, compute = profile.memory_bandwidth_gbps, profile.compute_gops
    decode = [
        m.decode_tokens_per_s * m.file_bytes / (bandwidth * 1e9)
        for m in measured
        if bandwidth and m.file_bytes > 0 and m.decode_tokens_per_s > 0
    ]
    prefill = [
        m.prefill_tokens_per_s * 2 * m.parameters / (compute * 1e9)
        for m in measured
        if compute and m.parameters and m.prefill_tokens_per_s
    ]
    return Calibration(*_fit(decode, DEFAULT_EFFICIENCY), *_fit(prefill, DEFAULT_PREFILL_EFFICIENCY))


def predict(
    profile: DeviceProfile,
    file_bytes: int,
    host_peak_mb: float | None,
    calibration: Calibration,
    parameters: int | None = None,
) -> dict[str, Any] | None:
    """The predicted figures for one GGUF on `profile`'s device; None where the profile gives no
    bandwidth (a GPU or a browser: the model does not apply). Prefill is predicted where the
    profile gives its compute and the GGUF's `parameters` are known."""
    bandwidth = profile.memory_bandwidth_gbps
    if bandwidth is None or file_bytes <= 0:
        return None
    tps = calibration.efficiency * bandwidth * 1e9 / file_bytes
    basis = (
        f"{bandwidth:g} GB/s nominal x efficiency {calibration.efficiency:.2f} "
        + (
            f"(fitted on {calibration.samples} agent measurement(s) of {profile.name}, "
            f"median error {calibration.median_abs_error:.0%})"
            if calibration.samples
            else "(default; no agent of this profile has measured yet)"
        )
        + f" / {file_bytes / 2**20:.0f} MB read per token"
    )
    file_mb = file_bytes / 2**20
    memory = max(host_peak_mb, file_mb) if host_peak_mb is not None else file_mb
    return {
        "decode_tokens_per_s": round(tps, 2),
        "peak_memory_mb": round(memory, 1),
        "basis": basis,
        **_prefill(profile, parameters, calibration),
        "calibration": asdict(calibration),
    }


def _prefill(profile: DeviceProfile, parameters: int | None, calibration: Calibration) -> dict[str, Any]:
    compute = profile.compute_gops
    if not compute or not parameters:
        return {}
    eff = calibration.prefill_efficiency
    fitted = (
        f"(fitted on {calibration.prefill_samples} agent measurement(s) of {profile.name}, "
        f"median error {calibration.prefill_median_abs_error:.0%})"
        if calibration.prefill_samples
        else "(default; no agent of this profile has measured it yet)"
    )
    return {
        "prefill_tokens_per_s": round(eff * compute * 1e9 / (2 * parameters), 2),
        "prefill_basis": f"{compute:g} GOPS nominal x efficiency {eff:.2f} {fitted} "
        f"/ 2 x {parameters / 1e6:.0f}M parameters per token",
    }


def compare(
    prediction: dict[str, Any], measured_tps: float, measured_prefill_tps: float | None = None
) -> dict[str, Any]:
    """The prediction with its misses (predicted / measured - 1) against a device agent's
    measurement of the same file."""
    out = prediction | {"error_vs_measured": _miss(prediction["decode_tokens_per_s"], measured_tps)}
    if "prefill_tokens_per_s" in prediction and measured_prefill_tps is not None:
        out["prefill_error_vs_measured"] = _miss(prediction["prefill_tokens_per_s"], measured_prefill_tps)
    return out


def _miss(predicted: float, measured: float) -> float | None:
    return round(predicted / measured - 1, 4) if measured > 0 else None
