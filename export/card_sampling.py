"""The recommended sampling settings of a manifest, written as each runtime takes them: llama.cpp's
command-line flags, Python keyword arguments, transformers' `generate` arguments. Model cards of
every format (export/formats/, export/manifest.py) write their commands with these."""

from __future__ import annotations

from typing import Any

SAMPLING_KEYS = ("temperature", "top_k", "top_p", "min_p", "repetition_penalty")
_LLAMA_CLI_FLAGS = {
    "temperature": "--temp",
    "top_k": "--top-k",
    "top_p": "--top-p",
    "min_p": "--min-p",
    "repetition_penalty": "--repeat-penalty",
}
# llama-cpp-python names repetition_penalty `repeat_penalty`
LLAMA_CPP_PYTHON_NAMES = {"repetition_penalty": "repeat_penalty"}


def sampling_settings(manifest: dict[str, Any]) -> dict[str, float]:
    """The manifest's recommended sampling values alone; greedy for a manifest made before it
    recorded any."""
    rec = manifest.get("sampling") or {"temperature": 0.0}
    return {k: rec[k] for k in SAMPLING_KEYS if k in rec}


def llama_cli_flags(manifest: dict[str, Any]) -> str:
    return " ".join(f"{_LLAMA_CLI_FLAGS[k]} {v:g}" for k, v in sampling_settings(manifest).items())


def python_kwargs(manifest: dict[str, Any], rename: dict[str, str] | None = None) -> str:
    return ", ".join(f"{(rename or {}).get(k, k)}={v!r}" for k, v in sampling_settings(manifest).items())


def generate_kwargs(manifest: dict[str, Any]) -> str:
    """transformers' generate arguments: greedy unless the recommendation samples."""
    if not sampling_settings(manifest).get("temperature"):
        return "do_sample=False"
    return f"do_sample=True, {python_kwargs(manifest)}"
