"""The tiny LFM2 and its GGUFs, built once per test session for tests/export and tests/eval.

Both packages' conftests call these functions; `functools.cache` keyed on the session's base temp
dir makes the second caller reuse the first one's files (and its conversion log), so a combined
run converts once.
"""

from __future__ import annotations

import functools
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from export.converter import (
    SCRIPTS,
    ConverterNotFoundError,
    converter_dir,
    default_dir,
    fetch_converter,
)
from export.gguf_export import convert_to_gguf, quantize_gguf
from tests.support.tiny_lfm2 import build_tiny_lfm2

REPO = Path(__file__).resolve().parents[2]


def inference_template() -> str:
    """The LFM2 template without {% generation %} tags, as the recipes save it in merged models."""
    text = (REPO / "recipes" / "chat_templates" / "lfm2.jinja").read_text()
    return text.replace("{% generation %}", "").replace("{% endgeneration %}", "")


def ensure_converter() -> Path:
    """The configured converters; fetched into the default location (~77 MB download) when absent."""
    try:
        for script in SCRIPTS:
            converter_dir(script)
        return converter_dir()
    except ConverterNotFoundError:
        return fetch_converter(default_dir())


@dataclass(frozen=True)
class TinyArtifacts:
    hf_dir: Path
    f16: Path
    convert_seconds: float
    convert_warnings: tuple[str, ...]


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@functools.cache
def tiny_artifacts(base: Path) -> TinyArtifacts:
    ensure_converter()
    hf_dir = build_tiny_lfm2(base / "tiny-lfm2", inference_template())
    records = _Records()
    export_logger = logging.getLogger("export.gguf_export")
    export_logger.addHandler(records)
    try:
        start = time.perf_counter()
        f16 = convert_to_gguf(hf_dir, base / "tiny-gguf" / "model-f16.gguf", "f16")
        seconds = time.perf_counter() - start
    finally:
        export_logger.removeHandler(records)
    return TinyArtifacts(hf_dir, f16, seconds, tuple(records.messages))


@functools.cache
def tiny_quantized(base: Path, quant: str) -> Path:
    f16 = tiny_artifacts(base).f16
    return quantize_gguf(f16, f16.with_name(f"model-{quant}.gguf"), quant)
