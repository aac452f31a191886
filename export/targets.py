"""Export a merged fine-tune to the artifact one device profile asks for.

work_dir/
  model-f16.gguf                 # converted once, shared by every GGUF target of the job
  lora-adapter-F16.gguf          # LoRA jobs: the adapter alone, converted once, shipped per GGUF target
  laptop-cpu/model-Q4_K_M.gguf
  phone-android/model-Q4_0.gguf
  browser-webgpu/{onnx/model_q4.onnx, config.json, tokenizer files, chat_template.jinja}
  gpu-server/{model.safetensors, config.json, tokenizer files, chat_template.jinja,
              adapter/{adapter_config.json, adapter_model.safetensors} (LoRA jobs)}

Budgets (size, memory, speed) are not enforced here: the eval gate checks them on the artifact as
scored, by the profile's rule (export/device_budgets.py).
"""

from __future__ import annotations

import shutil
from pathlib import Path

from export.adapter_gguf import convert_lora_to_gguf
from export.gguf_export import convert_to_gguf, quantize_gguf
from export.onnx_export import export_onnx
from export.profiles import DeviceProfile, check_exportable

F16_NAME = "model-f16.gguf"
ADAPTER_NAME = "lora-adapter-F16.gguf"
# What a runtime needs from a `save_pretrained` directory; training leftovers (optimizer state,
# trainer_state.json, adapter files of the unmerged model) are not copied.
_HF_FILES = (
    "*.safetensors",
    "model.safetensors.index.json",
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "tokenizer.model",
    "vocab.json",
    "merges.txt",
    "chat_template.jinja",
)


def gguf_f16(merged_dir: Path, work_dir: Path) -> Path:
    """The job's F16 GGUF, converted on first use. Every quantization starts from it, so a job with
    three GGUF targets pays the (slow, Python) conversion once and the (fast, C++) quantizer thrice."""
    f16 = work_dir / F16_NAME
    return f16 if f16.is_file() else convert_to_gguf(merged_dir, f16, "f16")


def gguf_adapter(adapter_dir: Path, base_dir: Path, work_dir: Path, base_model_id: str) -> Path:
    """The job's LoRA adapter as a GGUF adapter (F16), converted on first use. It patches the base
    model, not the fine-tune, so one file serves every GGUF target whatever their quantization."""
    out = work_dir / ADAPTER_NAME
    if out.is_file():
        return out
    name = f"{base_model_id.rsplit('/', 1)[-1]} LoRA adapter"
    return convert_lora_to_gguf(adapter_dir, base_dir, out, "f16", base_model_id=base_model_id, name=name)


def _copy_hf_dir(merged_dir: Path, out_dir: Path) -> list[Path]:
    sources = sorted({p for pattern in _HF_FILES for p in merged_dir.glob(pattern) if p.is_file()})
    if not any(p.suffix == ".safetensors" for p in sources) or not (merged_dir / "config.json").is_file():
        raise FileNotFoundError(f"{merged_dir} has no safetensors weights and config.json to export")
    out_dir.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy2(src, out_dir / src.name)) for src in sources]


# The PEFT adapter beside the merged weights, for servers that keep one base and many adapters
# (vLLM --enable-lora): `adapter/` in the gpu-server artifact.
ADAPTER_SUBDIR = "adapter"
_ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def _copy_adapter(adapter_dir: Path, out_dir: Path) -> list[Path]:
    (out_dir / ADAPTER_SUBDIR).mkdir(parents=True, exist_ok=True)
    return [
        Path(shutil.copy2(adapter_dir / name, out_dir / ADAPTER_SUBDIR / name))
        for name in _ADAPTER_FILES
        if (adapter_dir / name).is_file()
    ]


def export_target(
    merged_dir: Path,
    profile: DeviceProfile,
    work_dir: Path,
    *,
    quantization: str | None = None,
    adapter_dir: Path | None = None,
) -> list[Path]:
    """Write the artifact files for `profile` under `work_dir/<profile.name>/` and return them.

    Args:
        merged_dir (`Path`): merged fine-tune (`save_pretrained` output).
        profile (`DeviceProfile`): the target.
        work_dir (`Path`): the job's export folder; holds the shared F16 GGUF.
        quantization (`str`, *optional*): GGUF quantization instead of the profile's default, e.g.
            its `quality_quantization`.
        adapter_dir (`Path`, *optional*): a LoRA job's PEFT adapter; a safetensors target ships it
            in `adapter/` beside the merged weights.

    Raises:
        ProfileUnavailableError: the profile cannot be exported.
        OnnxExportError: an ONNX target for a non-LFM2 model, or an export that fails its parity check.
    """
    check_exportable(profile)
    out_dir = work_dir / profile.name
    if profile.format == "gguf":
        quant = quantization or profile.quantization
        return [quantize_gguf(gguf_f16(merged_dir, work_dir), out_dir / f"model-{quant}.gguf", quant)]
    if profile.format == "onnx":
        return export_onnx(merged_dir, out_dir)
    files = _copy_hf_dir(merged_dir, out_dir)
    return files + (_copy_adapter(adapter_dir, out_dir) if adapter_dir else [])
