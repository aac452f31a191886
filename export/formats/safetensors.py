"""Merged safetensors for GPU servers (vLLM, SGLang, transformers): the fine-tune as training saved
it, plus a LoRA job's PEFT adapter in `adapter/`. Not scored again: the evaluate stage scored these
very weights."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from export.card_sampling import generate_kwargs
from export.formats.spec import ArtifactFormat, ExportJob, HubFacts

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
# The PEFT adapter beside the merged weights, for servers that keep one base and many adapters
# (vLLM --enable-lora).
ADAPTER_SUBDIR = "adapter"
_ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")


def _copy_hf_dir(merged_dir: Path, out_dir: Path) -> list[Path]:
    sources = sorted({p for pattern in _HF_FILES for p in merged_dir.glob(pattern) if p.is_file()})
    if not any(p.suffix == ".safetensors" for p in sources) or not (merged_dir / "config.json").is_file():
        raise FileNotFoundError(f"{merged_dir} has no safetensors weights and config.json to export")
    out_dir.mkdir(parents=True, exist_ok=True)
    return [Path(shutil.copy2(src, out_dir / src.name)) for src in sources]


def _copy_adapter(adapter_dir: Path, out_dir: Path) -> list[Path]:
    (out_dir / ADAPTER_SUBDIR).mkdir(parents=True, exist_ok=True)
    return [
        Path(shutil.copy2(adapter_dir / name, out_dir / ADAPTER_SUBDIR / name))
        for name in _ADAPTER_FILES
        if (adapter_dir / name).is_file()
    ]


def make(job: ExportJob) -> list[Path]:
    files = _copy_hf_dir(job.merged_dir, job.out_dir)
    return files + (_copy_adapter(job.adapter_dir, job.out_dir) if job.adapter_dir else [])


def min_runtime() -> str:
    return "transformers>=4.54.0 or vLLM>=0.10.2 (first releases with LFM2)"


def how_to_run(manifest: dict[str, Any]) -> str:
    return (
        "```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        'tok = AutoTokenizer.from_pretrained(".")\nmodel = AutoModelForCausalLM.from_pretrained(".")\n'
        'ids = tok.apply_chat_template([{"role": "user", "content": "Hello"}], add_generation_prompt=True, '
        'return_tensors="pt", return_dict=True)\n'
        f"out = model.generate(**ids, max_new_tokens=64, {generate_kwargs(manifest)})\n"
        "print(tok.decode(out[0], skip_special_tokens=True))\n```\n\n"
        "With vLLM: `vllm serve .` (pass the settings above with each request). A LoRA fine-tune also "
        "ships its PEFT adapter in `adapter/`, for a server that keeps the base and many adapters: "
        f"`vllm serve {manifest['base_model']} --enable-lora --lora-modules ft=./adapter`\n"
    )


FORMAT = ArtifactFormat(
    name="safetensors",
    quantizations=("none",),  # the merged checkpoint exactly as training saved it
    make=make,
    bits_per_weight={},
    merged_weights=True,
    min_runtime=min_runtime,
    how_to_run=how_to_run,
    # HF's model tree lists merged weights as a finetune of the base
    hub=HubFacts(library="transformers", relation="finetune", tags=("lfm2", "edge", "edgetune")),
)
