"""GGUF for llama.cpp (laptops, phones, a Raspberry Pi): the merged fine-tune converted once to F16,
then quantized per target; scored in llama.cpp under the task's grammar."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

from export.adapter_gguf import convert_lora_to_gguf
from export.card_sampling import LLAMA_CPP_PYTHON_NAMES, llama_cli_flags, python_kwargs
from export.formats.spec import ArtifactFormat, ExportJob, HubFacts
from export.gguf_export import QUANT_TYPES, convert_to_gguf, quantize_gguf

F16_NAME = "model-f16.gguf"
ADAPTER_NAME = "lora-adapter-F16.gguf"
# Average stored bits per weight, from llama.cpp's quantize table (block scales included; K-quant
# mixes keep some tensors at higher precision, hence Q4_K_M's 4.9 rather than 4.5).
BITS_PER_WEIGHT = {"F16": 16.0, "Q8_0": 8.5, "Q5_K_M": 5.7, "Q4_K_M": 4.9, "Q4_0": 4.55}


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


def make(job: ExportJob) -> list[Path]:
    """`out_dir/model-<quantization>.gguf`; the adapter GGUF is the export stage's own artifact."""
    f16, quant = gguf_f16(job.merged_dir, job.work_dir), job.quantization
    return [quantize_gguf(f16, job.out_dir / f"model-{quant}.gguf", quant)]


def min_runtime() -> str:
    # The llama.cpp we converted and quantized with; older builds may not read every tensor type.
    return f"llama.cpp (llama-cpp-python {importlib.metadata.version('llama-cpp-python')})"


def how_to_run(manifest: dict[str, Any]) -> str:
    first = manifest["files"][0]["path"] if manifest["files"] else "model.gguf"
    ctx, sampling = manifest["context_cap"], llama_cli_flags(manifest)
    return (
        "The chat template is embedded in the GGUF, so llama.cpp formats prompts as in training.\n\n"
        f"```sh\nllama-cli -m {first} -c {ctx} -cnv {sampling}\n"
        f"llama-server -m {first} -c {ctx} --jinja {sampling}\n```\n\n"
        "```python\nfrom llama_cpp import Llama\n\n"
        f'llm = Llama(model_path="{first}", n_ctx={ctx})\n'
        "llm.create_chat_completion(\n"
        f'    messages=[{{"role": "user", "content": "Hello"}}], '
        f"{python_kwargs(manifest, LLAMA_CPP_PYTHON_NAMES)}\n)\n```\n"
    )


FORMAT = ArtifactFormat(
    name="gguf",
    quantizations=QUANT_TYPES,
    make=make,
    bits_per_weight=BITS_PER_WEIGHT,
    min_runtime=min_runtime,
    how_to_run=how_to_run,
    # HF's model tree lists a GGUF under the base's quantizations
    hub=HubFacts(library="gguf", relation="quantized", tags=("lfm2", "edge", "llama.cpp", "gguf")),
    runtime="llama.cpp",
    grammar=True,
    ships_adapter=True,
)
