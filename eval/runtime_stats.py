"""How an artifact ran on this host while it was scored: decode speed and memory.

These are host figures, labelled with the host: a phone or a Raspberry Pi decodes slower than the
worker's x86 cores, and the device profile's budgets are compared against them only as a proxy
(the gate says so in every budget check). What they do catch on any host is an artifact that is
far too big or slow for its class, e.g. a 2.6B model sent to a 4 GB phone.

Memory is the growth of the process's peak resident set (VmHWM) over its resident set before the
artifact was loaded, with the peak reset first (/proc/self/clear_refs, Linux >= 4.0). It covers the
mapped weights the decode touched, the KV cache (llama.cpp allocates and clears it for the whole
context at load, so this is the figure at the configured context) and the compute buffers. Where
/proc is missing (macOS) it is None and the RAM budget is reported as not measured.
"""

from __future__ import annotations

import contextlib
import os
import platform
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

_STATUS = Path("/proc/self/status")


def host_label() -> str:
    """e.g. 'x86_64 Linux, 2 CPUs (AMD EPYC 7B13)': what the budget figures were measured on."""
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = f" ({line.split(':', 1)[1].strip()})"
                break
    return f"{platform.machine()} {platform.system()}, {os.cpu_count()} CPUs{cpu}"


def default_threads() -> int:
    """Half the logical CPUs (llama-cpp-python's own default, roughly the physical cores), for both
    artifact runtimes so their speeds compare: llama.cpp's threads spin-wait on each other, and
    asking for every logical CPU on a busy machine made decoding 5-30x slower in our measurements."""
    return max((os.cpu_count() or 2) // 2, 1)


@dataclass
class RuntimeStats:
    """Filled in by the eval runners while they score an artifact."""

    runtime: str  # "llama.cpp" or "onnxruntime"
    context: int | None = None  # the context length the runtime was configured with
    decode_tokens: int = 0  # single-token decode steps timed (eval/runners.py's fixed speed run)
    decode_seconds: float = 0.0
    peak_rss_growth_mb: float | None = None
    # llama.cpp allocates the KV cache for the whole context at load; onnxruntime's grows with the
    # sequence, so its memory is that of the longest sequence run, recorded here
    longest_sequence: int = 0
    over_context: int = 0  # eval prompts that did not fit the context (answered "", as on the device)
    host: str = field(default_factory=host_label)

    def measured_at(self) -> str:
        """Where and how the memory and speed figures were taken, for budget checks."""
        if self.runtime == "llama.cpp":
            return f"host {self.host}, llama.cpp with its cache allocated for context {self.context}"
        return (
            f"host {self.host}, {self.runtime} with its cache grown to {self.longest_sequence} tokens "
            f"(context cap {self.context})"
        )

    @property
    def decode_tokens_per_s(self) -> float | None:
        return (
            self.decode_tokens / self.decode_seconds
            if self.decode_tokens and self.decode_seconds > 0
            else None
        )

    def to_dict(self) -> dict[str, Any]:
        tps = self.decode_tokens_per_s
        speed = round(tps, 2) if tps is not None else None
        return {**asdict(self), "decode_tokens_per_s": speed, "measured_at": self.measured_at()}


def _status_mb(key: str) -> float | None:
    try:
        match = re.search(rf"^{key}:\s+(\d+) kB", _STATUS.read_text(), re.MULTILINE)
    except OSError:
        return None
    return int(match.group(1)) / 1024 if match else None


def _reset_peak() -> bool:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # 5: reset the peak RSS to the current RSS
    except OSError:
        return False
    return True


@contextlib.contextmanager
def measure_peak_memory(stats: RuntimeStats | None) -> Iterator[None]:
    """Record in `stats` how far the block raised the process's peak resident memory."""
    before = _status_mb("VmRSS") if stats is not None and _reset_peak() else None
    yield
    peak = _status_mb("VmHWM")
    if stats is not None and before is not None and peak is not None:
        stats.peak_rss_growth_mb = round(max(peak - before, 0.0), 1)
