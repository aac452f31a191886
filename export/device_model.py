"""A device model (issue 18): a predicted decode speed and memory for a GGUF on a profile's device,
shown where no device agent measured it, with how far off it has been where agents did.

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

Prefill is compute-bound and varies with the kernels a device has (dotprod, i8mm, Metal); it is not
predicted here.
"""

from __future__ import annotations

import statistics
from dataclasses import asdict, dataclass
from typing import Any

from export.profiles import DeviceProfile

# llama.cpp's CPU decode reaches roughly half the nominal peak bandwidth on small models (the rest
# goes to per-token overhead and the bus's practical ceiling); a starting point that agent
# measurements replace.
DEFAULT_EFFICIENCY = 0.5
MAX_EFFICIENCY = 1.0


@dataclass(frozen=True)
class Calibration:
    efficiency: float
    samples: int  # agent measurements it was fitted on (0: the default)
    median_abs_error: float | None  # relative, on those measurements; None without any


def calibrate(profile: DeviceProfile, measured: list[tuple[int, float]]) -> Calibration:
    """The efficiency for `profile` from agent measurements, each (file bytes, decode tokens/s)."""
    bandwidth = profile.memory_bandwidth_gbps
    points = [(size, tps) for size, tps in measured if size > 0 and tps > 0]
    if bandwidth is None or not points:
        return Calibration(DEFAULT_EFFICIENCY, 0, None)
    each = [tps * size / (bandwidth * 1e9) for size, tps in points]
    # no device reads faster than its bus: an efficiency above 1 is a mismeasure (or a profile's
    # bandwidth set too low), clamped so a prediction never promises more than the bus carries
    fitted = min(statistics.median(each), MAX_EFFICIENCY)
    error = statistics.median(abs(fitted / e - 1) for e in each)  # predicted / measured - 1
    return Calibration(fitted, len(each), round(error, 4))


def predict(
    profile: DeviceProfile, file_bytes: int, host_peak_mb: float | None, calibration: Calibration
) -> dict[str, Any] | None:
    """The predicted figures for one GGUF on `profile`'s device; None where the profile gives no
    bandwidth (a GPU or a browser: the model does not apply)."""
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
        "calibration": asdict(calibration),
    }


def compare(prediction: dict[str, Any], measured_tps: float) -> dict[str, Any]:
    """The prediction with its miss against a device agent's measurement of the same file."""
    error = prediction["decode_tokens_per_s"] / measured_tps - 1 if measured_tps > 0 else None
    return prediction | {"error_vs_measured": None if error is None else round(error, 4)}
