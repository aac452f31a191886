"""A PEFT LoRA adapter -> a GGUF LoRA adapter, with llama.cpp's own `convert_lora_to_gguf.py`.

A device that already holds the base model's GGUF (Liquid's `LFM2-*-GGUF`, at any quantization)
needs only the adapter: a few MB instead of the whole fine-tune. llama.cpp adds `B @ A * alpha / r`
to every patched matmul at run time (`llama-cli -m base.gguf --lora adapter.gguf`, or
`Llama(model_path=..., lora_path=...)`), so the base file is never rewritten.

The converter maps PEFT's tensor names with the base architecture's `conversion/` class (q_proj ->
blk.N.attn_q, in_proj -> blk.N.shortconv.in_proj, ...), so it needs the base's config.json, not its
weights. It comes from the same llama-cpp-python sdist as the HF converter (export/converter.py),
so the file it writes is one our llama.cpp loads.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from export.converter import LORA_SCRIPT, converter_dir

ADAPTER_FORMAT = "gguf-lora"  # the artifact format of an adapter GGUF (the full model's is "gguf")
LORA_FLAG = "--lora"  # llama.cpp's option that applies an adapter GGUF to the model given with -m
ADAPTER_OUTTYPES = ("f32", "f16", "bf16", "q8_0")
_LORA_SUFFIXES = (".lora_a", ".lora_b")
_STDERR_TAIL_LINES = 25


class AdapterGGUFError(RuntimeError):
    """The adapter cannot be converted faithfully, or the converter failed; the message says why."""


def check_convertible(adapter_dir: Path) -> dict[str, Any]:
    """The adapter's `adapter_config.json`, once it is known that llama.cpp computes what PEFT does.

    llama.cpp scales every adapter by `alpha / rank` with one alpha per file. PEFT variants that
    scale or compose otherwise (rsLoRA's `alpha / sqrt(r)`, per-module rank or alpha patterns, DoRA's
    magnitude vectors, fully trained `modules_to_save`) would convert into a file that loads without
    error and computes another model, so they are refused here.

    Raises:
        AdapterGGUFError: not a PEFT LoRA dir, or one of the variants above.
    """
    config_path = adapter_dir / "adapter_config.json"
    if not config_path.is_file() or not any(
        (adapter_dir / name).is_file() for name in ("adapter_model.safetensors", "adapter_model.bin")
    ):
        raise AdapterGGUFError(f"{adapter_dir} holds no PEFT adapter (adapter_config.json + adapter_model.*)")
    config: dict[str, Any] = json.loads(config_path.read_text())
    problems = []
    if config.get("peft_type", "LORA") != "LORA":
        problems.append(f"peft_type is {config['peft_type']!r}, only LORA converts")
    if config.get("use_rslora"):
        problems.append("use_rslora: rsLoRA scales by alpha/sqrt(r), llama.cpp by alpha/r")
    if config.get("use_dora"):
        problems.append("use_dora: llama.cpp has no DoRA magnitude vectors")
    if config.get("rank_pattern") or config.get("alpha_pattern"):
        problems.append("rank_pattern/alpha_pattern: llama.cpp takes one alpha for the whole adapter")
    if config.get("modules_to_save"):
        problems.append("modules_to_save: fully trained modules are not LoRA tensors; ship the merged model")
    if problems:
        raise AdapterGGUFError(f"{adapter_dir} cannot become a llama.cpp adapter: " + "; ".join(problems))
    return config


def _stage(adapter_dir: Path, staging: Path, base_model_id: str | None, name: str | None) -> Path:
    """The adapter as the converter should see it. Its README.md becomes the GGUF's general.*
    metadata; PEFT's names the base by the local path it was loaded from (a worker's directory),
    so it is replaced by one naming the base by its model id, which then travels inside the file."""
    for item in adapter_dir.iterdir():
        if item.name.startswith(("adapter_config", "adapter_model")):
            (staging / item.name).symlink_to(item.resolve())
    card: dict[str, Any] = {"tags": ["lora", "edgetune"]}
    if base_model_id:
        card["base_model"] = base_model_id
    if name:
        card["name"] = name
    (staging / "README.md").write_text(f"---\n{yaml.safe_dump(card, sort_keys=False)}---\n")
    return staging


def convert_lora_to_gguf(
    adapter_dir: Path,
    base_dir: Path,
    out_path: Path,
    outtype: str = "f16",
    *,
    base_model_id: str | None = None,
    name: str | None = None,
    llama_cpp_dir: Path | None = None,
) -> Path:
    """Convert a PEFT LoRA adapter directory to one GGUF adapter file.

    Args:
        adapter_dir (`Path`): `PeftModel.save_pretrained` output.
        base_dir (`Path`): the base checkpoint the adapter was trained on; only its config.json is read.
        out_path (`Path`): written under a temporary name and renamed at the end.
        outtype (`str`, *optional*, defaults to `"f16"`): one of `ADAPTER_OUTTYPES`. F16 halves F32's
            bytes and, measured on the tiny LFM2, is as close to the merged model as the merged
            model's own F16 GGUF is (tests/export/test_adapter_gguf.py).
        base_model_id (`str`, *optional*): written as the GGUF's `general.base_model.0.*`.
        name (`str`, *optional*): written as the GGUF's `general.name`.
        llama_cpp_dir (`Path`, *optional*): converter location; defaults to `converter_dir(LORA_SCRIPT)`.

    Raises:
        AdapterGGUFError: `check_convertible` refused the adapter, or the converter exited non-zero
            (the message ends with its stderr tail).
    """
    if outtype not in ADAPTER_OUTTYPES:
        raise ValueError(f"outtype {outtype!r} is not one of {ADAPTER_OUTTYPES}")
    check_convertible(adapter_dir)
    llama_cpp_dir = llama_cpp_dir or converter_dir(LORA_SCRIPT)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(out_path.name + ".partial")
    # The script puts its vendored gguf-py ahead of the installed one unless NO_LOCAL_GGUF is set;
    # with --base given it reads no hub, and HF_HUB_OFFLINE makes sure nothing tries.
    env = {k: v for k, v in os.environ.items() if k != "NO_LOCAL_GGUF"} | {"HF_HUB_OFFLINE": "1"}
    with tempfile.TemporaryDirectory(prefix="lora-") as tmp:
        staged = _stage(adapter_dir, Path(tmp), base_model_id, name)
        cmd = [sys.executable, str(llama_cpp_dir / LORA_SCRIPT), "--base", str(base_dir)]
        cmd += ["--outfile", str(partial), "--outtype", outtype, str(staged)]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        tail = "\n".join(proc.stderr.strip().splitlines()[-_STDERR_TAIL_LINES:])
        raise AdapterGGUFError(f"{LORA_SCRIPT} failed (exit {proc.returncode}) on {adapter_dir}:\n{tail}")
    partial.replace(out_path)
    return out_path


def lora_tensors(path: Path) -> dict[str, tuple[int, ...]]:
    """Every LoRA tensor of an adapter GGUF with its shape, in ggml order (`ne`: innermost first)."""
    from gguf import GGUFReader  # PyPI gguf reads any GGUF v3; only the vendored one can write LFM2's

    return {
        t.name: tuple(int(n) for n in t.shape)
        for t in GGUFReader(path).tensors
        if t.name.endswith(_LORA_SUFFIXES)
    }


def adapter_info(adapter_gguf: Path, adapter_dir: Path, base_dir: Path, base_model_id: str) -> dict[str, Any]:
    """What a device needs to know before it applies the adapter, for the artifact's manifest.

    llama.cpp refuses an adapter whose `general.architecture` differs from the model's, or whose
    A/B shapes do not fit the tensors they patch; so the base must be a GGUF of the very model the
    adapter was trained on (any quantization: the adapter is applied to activations, not weights).
    A same-shaped different model (LFM2 vs LFM2.5 of one size) loads without error, which is why
    the base is named by id here and in the file's own `general.base_model.0.*`.
    """
    from gguf import GGUFReader

    reader = GGUFReader(adapter_gguf)

    def field(key: str) -> Any:
        f = reader.fields.get(key)
        return f.contents() if f is not None else None

    peft = json.loads((adapter_dir / "adapter_config.json").read_text())
    base = json.loads((base_dir / "config.json").read_text())
    tensors = lora_tensors(adapter_gguf)
    types = sorted({t.tensor_type.name for t in reader.tensors if t.name.endswith(_LORA_SUFFIXES)})
    targets = peft.get("target_modules")
    return {
        "type": field("adapter.type"),
        "llama_cpp_flag": LORA_FLAG,
        "tensor_type": "+".join(types),  # "F16" as exported
        "rank": int(peft["r"]),
        "alpha": float(field("adapter.lora.alpha")),
        "target_modules": sorted(targets) if isinstance(targets, list) else targets,
        "lora_tensor_pairs": len(tensors) // 2,
        "base": {
            "model": base_model_id,
            "architecture": field("general.architecture"),
            "block_count": base.get("num_hidden_layers"),
            "embedding_length": base.get("hidden_size"),
            "vocab_size": base.get("vocab_size"),
        },
    }
