"""Export a merged fine-tune to the artifact one device profile asks for.

work_dir/
  model-f16.gguf                 # converted once, shared by every GGUF target of the job
  lora-adapter-F16.gguf          # LoRA jobs: the adapter alone, converted once, shipped per GGUF target
  laptop-cpu/model-Q4_K_M.gguf
  phone-android/model-Q4_0.gguf
  browser-webgpu/{onnx/model_q4.onnx, config.json, tokenizer files, chat_template.jinja}
  gpu-server/{model.safetensors, config.json, tokenizer files, chat_template.jinja,
              adapter/{adapter_config.json, adapter_model.safetensors} (LoRA jobs)}

Each format's module (export/formats/<name>.py) makes its files.
Budgets (size, memory, speed) are not enforced here: the eval gate checks them on the artifact as
scored, by the profile's rule (export/device_budgets.py).
"""

from __future__ import annotations

from pathlib import Path

from export.formats import FORMATS
from export.formats.spec import ExportJob
from export.profiles import DeviceProfile, check_exportable


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
        quantization (`str`, *optional*): a quantization instead of the profile's default, e.g.
            its `quality_quantization`.
        adapter_dir (`Path`, *optional*): a LoRA job's PEFT adapter; a safetensors target ships it
            in `adapter/` beside the merged weights.

    Raises:
        ProfileUnavailableError: the profile cannot be exported.
        OnnxExportError: an ONNX target for a non-LFM2 model, or an export that fails its parity check.
    """
    check_exportable(profile)
    fmt = FORMATS[profile.format]  # a profile that passed check_exportable names a known format
    quant = quantization or profile.quantization
    return fmt.make(ExportJob(merged_dir, work_dir / profile.name, work_dir, quant, adapter_dir))
