"""What a device agent measures (`edgetune device-agent`, issue 18): a GGUF's load time, prefill and
decode speed and peak memory through llama.cpp, as llama-bench measures them, plus the device's facts.

Runs on the device, so it needs only llama-cpp-python and the standard library. The method follows
llama-bench: prefill ("pp") evaluates `prompt_tokens` tokens in one call from an empty cache;
decode ("tg") evaluates one token per call for `decode_tokens` calls after that prompt, the tokens
fed back being the prompt's own (llama-bench feeds random ones: the work per step is the same,
only the sampler is skipped). The cache is allocated for `context` tokens at load, as the device's
app would configure it, so memory is the figure at that context.
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from eval.runtime_stats import RuntimeStats, host_label, measure_peak_memory

# A prompt long enough to cut any prompt length from, repeated: speed depends on the count of
# tokens, not their meaning.
_FILLER = (
    "The device agent measures how fast this model reads a prompt and writes an answer on the "
    "hardware it will ship on, because a proxy measured elsewhere is not the customer's device. "
)


def device_facts(threads: int) -> dict[str, Any]:
    """The agent's description of itself, sent on hello and stored with every result."""
    return {
        "cpu": host_label(),
        "cores": os.cpu_count(),
        "ram_mb": _ram_mb(),
        "os": f"{platform.system()} {platform.release()}",
        "machine": platform.machine(),
        "runtime": "llama.cpp",
        "runtime_version": _llama_cpp_version(),
        "threads": threads,
    }


def _ram_mb() -> int | None:
    with contextlib.suppress(OSError, ValueError, AttributeError):
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**20)
    return None


def _llama_cpp_version() -> str | None:
    try:
        import llama_cpp
    except ImportError:
        return None
    return f"llama-cpp-python {llama_cpp.__version__}"


def _max_rss_mb() -> float | None:
    """The process's peak resident set so far (getrusage; kilobytes on Linux, bytes on macOS):
    where /proc cannot reset the peak, the growth of this over a load is the measurement, an
    underestimate only if the process peaked higher before (the budget floors memory at the
    file's size)."""
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def prompt_ids(llm: Any, count: int) -> list[int]:
    """`count` tokens of filler text, beginning of sequence first."""
    text = _FILLER
    ids = llm.tokenize(text.encode(), add_bos=True, special=False)
    while len(ids) < count:
        text += _FILLER
        ids = llm.tokenize(text.encode(), add_bos=True, special=False)
    return list(ids[:count])


def fitting_prompt(context: int, prompt_tokens: int, decode_tokens: int) -> int:
    """The prompt cut so prompt + decode (and the first token) fit the context; at least 1."""
    return max(1, min(prompt_tokens, context - decode_tokens - 1))


def measure_gguf(
    path: Path, context: int, prompt_tokens: int, decode_tokens: int, threads: int
) -> dict[str, Any]:
    """Load `path` with a `context`-token cache and time a prefill and a decode (see the module's
    docstring). The prompt is cut so prompt + decode fit the context."""
    from llama_cpp import Llama, llama_model_n_params

    prompt_tokens = fitting_prompt(context, prompt_tokens, decode_tokens)
    stats = RuntimeStats(runtime="llama.cpp", context=context)
    peak_before = _max_rss_mb()
    with measure_peak_memory(stats):
        start = time.perf_counter()
        llm = Llama(model_path=str(path), n_ctx=context, n_threads=threads, n_batch=512, verbose=False)
        load_seconds = time.perf_counter() - start
        with contextlib.closing(llm):
            n_params = int(llama_model_n_params(llm.model))
            ids = prompt_ids(llm, prompt_tokens)
            llm.reset()
            start = time.perf_counter()
            llm.eval(ids)
            prefill_seconds = time.perf_counter() - start
            start = time.perf_counter()
            for i in range(decode_tokens):
                llm.eval([ids[i % len(ids)]])
            decode_seconds = time.perf_counter() - start
    peak = stats.peak_rss_growth_mb
    if peak is None and peak_before is not None:  # no /proc (macOS): the process's lifetime peak
        peak = round(max((_max_rss_mb() or 0.0) - peak_before, 0.0), 1)
    return {
        "prefill_tokens_per_s": round(len(ids) / prefill_seconds, 2),
        "decode_tokens_per_s": round(decode_tokens / decode_seconds, 2),
        "peak_memory_mb": peak,
        "load_seconds": round(load_seconds, 3),
        "context": context,
        "prompt_tokens": len(ids),
        "decode_tokens": decode_tokens,
        "runtime": "llama.cpp",
        "runtime_version": _llama_cpp_version(),
        "threads": threads,
        "model_n_params": n_params,
    }
