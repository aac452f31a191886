"""HF checkpoint -> GGUF (llama.cpp's converter) -> quantized GGUF (llama.cpp's quantizer).

Two steps because they come from two places: `convert_hf_to_gguf.py` (Python, from the
llama-cpp-python sdist, see export/converter.py) writes F16/BF16/F32/Q8_0 only; K-quants such as
Q4_K_M need the C++ `llama_model_quantize`, which llama-cpp-python exposes through ctypes. Both come
from the same llama.cpp commit, so the file we quantize is one the quantizer understands.
"""

from __future__ import annotations

import ctypes
import logging
import os
import subprocess
import sys
from pathlib import Path

from export._convert_runner import WARNING_PREFIX
from export.converter import converter_dir

logger = logging.getLogger(__name__)

_RUNNER = Path(__file__).with_name("_convert_runner.py")
CONVERT_OUTTYPES = ("f32", "f16", "bf16", "q8_0")
# The quantizations we publish: Liquid's own GGUF repos ship these (plus Q6_K).
QUANT_TYPES = ("F16", "Q8_0", "Q5_K_M", "Q4_K_M", "Q4_0")
_STDERR_TAIL_LINES = 25


class GGUFExportError(RuntimeError):
    """Conversion or quantization failed; the message says why."""


def _tail(text: str, lines: int = _STDERR_TAIL_LINES) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def convert_to_gguf(
    hf_dir: Path,
    out_path: Path,
    outtype: str = "f16",
    *,
    pre_tokenizer_fallback: str | None = "gpt-2",
    llama_cpp_dir: Path | None = None,
) -> Path:
    """Convert a merged HF checkpoint directory to one GGUF file.

    Args:
        hf_dir (`Path`): `save_pretrained` output (config, safetensors, tokenizer files).
        out_path (`Path`): GGUF file to write; written under a temporary name and renamed at the end,
            so an existing `out_path` is always a complete file.
        outtype (`str`, *optional*, defaults to `"f16"`): one of `CONVERT_OUTTYPES`.
        pre_tokenizer_fallback (`str` or `None`, *optional*, defaults to `"gpt-2"`): `tokenizer.ggml.pre`
            to write when llama.cpp does not recognise the tokenizer (logged as a warning); `None`
            makes an unknown tokenizer an error instead.
        llama_cpp_dir (`Path`, *optional*): converter location; defaults to `converter_dir()`.

    Raises:
        GGUFExportError: the converter exited non-zero; the message ends with its stderr tail.
    """
    if outtype not in CONVERT_OUTTYPES:
        raise ValueError(
            f"outtype {outtype!r} is not one of {CONVERT_OUTTYPES}; use quantize_gguf for others"
        )
    llama_cpp_dir = llama_cpp_dir or converter_dir()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(out_path.name + ".partial")
    cmd = [sys.executable, str(_RUNNER), str(llama_cpp_dir), pre_tokenizer_fallback or "", str(hf_dir)]
    cmd += ["--outfile", str(partial), "--outtype", outtype]
    # The converter reads NO_LOCAL_GGUF to prefer an installed gguf; ours would be the wrong one.
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    for line in proc.stderr.splitlines():
        if line.startswith(WARNING_PREFIX):
            logger.warning("%s: %s", hf_dir, line.removeprefix(WARNING_PREFIX))
    if proc.returncode != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        raise GGUFExportError(
            f"convert_hf_to_gguf.py failed (exit {proc.returncode}) on {hf_dir}:\n{_tail(proc.stderr)}"
        )
    partial.replace(out_path)
    return out_path


def _ftype(quant: str) -> int:
    import llama_cpp

    ftypes = {
        "F16": llama_cpp.LLAMA_FTYPE_MOSTLY_F16,
        "Q8_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q8_0,
        "Q5_K_M": llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_K_M,
        "Q4_K_M": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_K_M,
        "Q4_0": llama_cpp.LLAMA_FTYPE_MOSTLY_Q4_0,
    }
    if quant.upper() not in ftypes:
        raise ValueError(f"quantization {quant!r} is not one of {QUANT_TYPES}")
    return int(ftypes[quant.upper()])


def quantize_gguf(src: Path, dst: Path, quant: str) -> Path:
    """Quantize an F16/F32 GGUF with llama.cpp's `llama_model_quantize` (K-quants included).

    Mixed types such as Q4_K_M keep sensitive tensors (the tied embedding, parts of the FFN) at
    higher precision; that choice is llama.cpp's, exactly as `llama-quantize` makes it.

    Raises:
        FileNotFoundError: `src` does not exist.
        GGUFExportError: llama.cpp returned a non-zero status (its log went to stderr).
    """
    import llama_cpp

    if not src.is_file():
        raise FileNotFoundError(f"no GGUF to quantize at {src}")
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = _ftype(quant)
    params.nthread = os.cpu_count() or 1
    dst.parent.mkdir(parents=True, exist_ok=True)
    partial = dst.with_name(dst.name + ".partial")
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(partial).encode(), ctypes.byref(params))
    if rc != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        raise GGUFExportError(
            f"llama_model_quantize({src.name} -> {quant}) returned {rc}; see llama.cpp's log"
        )
    partial.replace(dst)
    return dst
