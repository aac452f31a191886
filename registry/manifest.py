"""Artifact manifests and model cards.

A manifest is the registry's record of one exported target: every file with its size and full-file
SHA-256 (computed here, before upload: S3 only keeps composite checksums for multipart uploads), the
job config that made it, where the weights came from and under which license, and the eval scores.
It is written as `manifest.json` next to the files, with an HF-style `README.md` built from it.

A LoRA job's adapter GGUF gets a manifest of its own (`build_adapter_manifest`, format `gguf-lora`):
the same record plus the base model it applies to and the llama.cpp flag that applies it.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from infra.job_config import JobConfig
from registry.adapter_gguf import ADAPTER_FORMAT
from registry.profiles import DeviceProfile

MANIFEST_VERSION = 1
TOOL_CALL_FORMAT = "lfm-pythonic"  # <|tool_call_start|>[f(a="x")]<|tool_call_end|>, on every base
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB chunks (GGUFs and safetensors run to gigabytes)."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def chat_template(hf_dir: Path) -> str | None:
    """The chat template a `save_pretrained` dir carries: transformers 5 writes chat_template.jinja,
    older versions a `chat_template` entry (a string, or a list of named templates) in
    tokenizer_config.json."""
    if (hf_dir / "chat_template.jinja").is_file():
        return (hf_dir / "chat_template.jinja").read_text()
    config_path = hf_dir / "tokenizer_config.json"
    template = json.loads(config_path.read_text()).get("chat_template") if config_path.is_file() else None
    if isinstance(template, list):
        template = next((t["template"] for t in template if t.get("name") == "default"), None)
    return template if isinstance(template, str) else None


def gguf_chat_template(path: Path) -> str | None:
    """The chat template embedded in a GGUF (what llama.cpp will format prompts with)."""
    from gguf import GGUFReader  # PyPI gguf reads any GGUF v3 header; we only read metadata

    field = GGUFReader(path).fields.get("tokenizer.chat_template")
    return str(field.contents()) if field is not None else None


def _template_of(files: list[Path], merged_dir: Path | None) -> str | None:
    if merged_dir is not None:
        return chat_template(merged_dir)
    ggufs = [f for f in files if f.suffix == ".gguf"]
    return gguf_chat_template(ggufs[0]) if ggufs else None


def license_info(base_model: str) -> dict[str, str]:
    """HF card license fields plus the attribution line for a fine-tune of `base_model`.

    License ids match recipes/catalog.yaml (lfm1.0, apache-2.0)."""
    if base_model.lower().startswith("liquidai/"):
        return {
            "license": "other",
            "license_name": "lfm1.0",
            "license_link": f"https://huggingface.co/{base_model}/blob/main/LICENSE",
            "attribution": f"Fine-tuned from {base_model} by Liquid AI, under the LFM Open License v1.0.",
        }
    if "smollm2" in base_model.lower():
        return {
            "license": "apache-2.0",
            "license_name": "apache-2.0",
            "license_link": "https://www.apache.org/licenses/LICENSE-2.0",
            "attribution": f"Fine-tuned from {base_model} by Hugging Face, under the Apache License 2.0.",
        }
    return {
        "license": "other",
        "license_name": "unknown",
        "license_link": f"https://huggingface.co/{base_model}",
        "attribution": f"Fine-tuned from {base_model}; check the base model's license before use.",
    }


def min_runtime(fmt: str) -> str:
    if fmt in ("gguf", ADAPTER_FORMAT):
        # The llama.cpp we converted and quantized with; older builds may not read every tensor type.
        return f"llama.cpp (llama-cpp-python {importlib.metadata.version('llama-cpp-python')})"
    return "transformers>=4.54.0 or vLLM>=0.10.2 (first releases with LFM2)"


def _file_entry(path: Path, root: Path) -> dict[str, Any]:
    if not path.resolve().is_relative_to(root.resolve()):
        raise ValueError(f"{path} is not under the manifest root {root}")
    rel = path.resolve().relative_to(root.resolve()).as_posix()
    return {"path": rel, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def build_manifest(
    job_id: str,
    config: JobConfig,
    profile: DeviceProfile,
    files: list[Path],
    root: Path,
    eval_scores: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    *,
    merged_dir: Path | None = None,
    quantization: str | None = None,
) -> dict[str, Any]:
    """The manifest of one exported target.

    Args:
        files (`list[Path]`): artifact files, all under `root`; stored with paths relative to it.
        eval_scores (`dict`, *optional*): e.g. `{"gguf": EvalResult.to_dict(), "hf": ...}`.
        extra (`dict`, *optional*): anything else to record (dataset ids and hashes, gate decision).
        merged_dir (`Path`, *optional*): the merged checkpoint, whose chat template is hashed;
            without it the template embedded in the first GGUF of `files` is.
        quantization (`str`, *optional*): set when the export overrode the profile's default.
    """
    template = _template_of(files, merged_dir)
    config_json = json.dumps(config.model_dump(mode="json"), sort_keys=True)
    return {
        "manifest_version": MANIFEST_VERSION,
        "job_id": job_id,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "base_model": config.model,
        "profile": profile.name,
        "format": profile.format,
        "quantization": quantization or profile.quantization,
        "context_cap": profile.context_cap,
        "runtime": profile.runtime,
        "min_runtime": min_runtime(profile.format),
        "tool_call_format": TOOL_CALL_FORMAT,
        "chat_template_sha256": hashlib.sha256(template.encode()).hexdigest() if template else None,
        "license": license_info(config.model),
        "files": [_file_entry(f, root) for f in files],
        "job_config": config.model_dump(mode="json"),
        "job_config_sha256": hashlib.sha256(config_json.encode()).hexdigest(),
        "eval": eval_scores or {},
        "extra": extra or {},
    }


def build_adapter_manifest(
    job_id: str,
    config: JobConfig,
    profile: DeviceProfile,
    adapter_file: Path,
    adapter: dict[str, Any],
    eval_scores: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    *,
    merged_dir: Path | None = None,
) -> dict[str, Any]:
    """The manifest of a LoRA adapter GGUF shipped for `profile` beside the merged model's GGUF.

    Args:
        adapter_file (`Path`): the adapter GGUF; the manifest's root is its folder.
        adapter (`dict`): `registry.adapter_gguf.adapter_info` of it: rank, alpha, flag, base model.
        eval_scores (`dict`, *optional*): the fine-tune's scores; the adapter itself is not scored.

    The base block adds the quantization a device of this profile would hold the base in; the
    adapter works with any (llama.cpp applies it to activations, not to the base's weights).
    """
    manifest = build_manifest(
        job_id,
        config,
        profile,
        [adapter_file],
        adapter_file.parent,
        eval_scores,
        extra,
        merged_dir=merged_dir,
        quantization=adapter.get("tensor_type"),
    )
    base = {**adapter["base"], "quantization": "any", "profile_quantization": profile.quantization}
    return manifest | {"format": ADAPTER_FORMAT, "adapter": {**adapter, "base": base}}


def verify_manifest(manifest: dict[str, Any], root: Path) -> list[str]:
    """Every way the files under `root` differ from the manifest; empty when they all match."""
    problems = []
    for entry in manifest["files"]:
        path = root / entry["path"]
        if not path.is_file():
            problems.append(f"{entry['path']}: missing")
        elif path.stat().st_size != entry["bytes"]:
            problems.append(f"{entry['path']}: {path.stat().st_size} bytes, manifest says {entry['bytes']}")
        elif sha256_file(path) != entry["sha256"]:
            problems.append(f"{entry['path']}: sha256 differs from the manifest")
    return problems


def _front_matter(manifest: dict[str, Any]) -> dict[str, Any]:
    adapter = manifest["format"] == ADAPTER_FORMAT
    gguf = manifest["format"] == "gguf" or adapter
    lic = manifest["license"]
    # HF's model tree: a GGUF is listed under the base's quantizations, an adapter under its
    # adapters, merged weights as a finetune.
    relation = "adapter" if adapter else "quantized" if gguf else "finetune"
    tags = ["lfm2", "edge", "llama.cpp", "gguf"] if gguf else ["lfm2", "edge", "edgetune"]
    return {
        "base_model": manifest["base_model"],
        "base_model_relation": relation,
        "library_name": "gguf" if gguf else "transformers",
        "pipeline_tag": "text-generation",
        "tags": [*tags, "lora"] if adapter else tags,
        "license": lic["license"],
        "license_name": lic["license_name"],
        "license_link": lic["license_link"],
    }


def _how_to_run_adapter(manifest: dict[str, Any]) -> str:
    adapter, ctx = manifest["files"][0]["path"], manifest["context_cap"]
    base = manifest["adapter"]["base"]
    base_file = f"{base['model'].rsplit('/', 1)[-1]}-{base['profile_quantization']}.gguf"
    flag = manifest["adapter"]["llama_cpp_flag"]
    return (
        f"A LoRA adapter, not a model: load a GGUF of {base['model']} (any quantization; "
        f"{base['profile_quantization']} for {manifest['profile']}) and apply this file with `{flag}`. "
        "The base GGUF's embedded chat template formats the prompts.\n\n"
        f"```sh\nllama-cli -m {base_file} {flag} {adapter} -c {ctx} -cnv\n"
        f"llama-server -m {base_file} {flag} {adapter} -c {ctx} --jinja\n```\n\n"
        "```python\nfrom llama_cpp import Llama\n\n"
        f'llm = Llama(model_path="{base_file}", lora_path="{adapter}", n_ctx={ctx})\n```\n'
    )


def _how_to_run(manifest: dict[str, Any]) -> str:
    if manifest["format"] == ADAPTER_FORMAT:
        return _how_to_run_adapter(manifest)
    first = manifest["files"][0]["path"] if manifest["files"] else "model.gguf"
    if manifest["format"] == "gguf":
        return (
            "The chat template is embedded in the GGUF, so llama.cpp formats prompts as in training.\n\n"
            f"```sh\nllama-cli -m {first} -c {manifest['context_cap']} -cnv\n"
            f"llama-server -m {first} -c {manifest['context_cap']} --jinja\n```\n\n"
            "```python\nfrom llama_cpp import Llama\n\n"
            f'llm = Llama(model_path="{first}", n_ctx={manifest["context_cap"]})\n'
            "llm.create_chat_completion(\n"
            '    messages=[{"role": "user", "content": "Hello"}], temperature=0\n)\n```\n'
        )
    return (
        "```python\nfrom transformers import AutoModelForCausalLM, AutoTokenizer\n\n"
        'tok = AutoTokenizer.from_pretrained(".")\nmodel = AutoModelForCausalLM.from_pretrained(".")\n'
        'ids = tok.apply_chat_template([{"role": "user", "content": "Hello"}], add_generation_prompt=True, '
        'return_tensors="pt", return_dict=True)\n'
        "print(tok.decode(model.generate(**ids, max_new_tokens=64)[0], skip_special_tokens=True))\n```\n\n"
        "With vLLM: `vllm serve .`\n"
    )


def _eval_lines(scores: dict[str, Any]) -> list[str]:
    """One line per scored model. Accepts `{kind: EvalResult.to_dict()}` as well as the worker's
    `{"metric", "n", "base": {score, ci_low, ci_high}, "fine_tuned": {...}, "delta", ...}`."""
    lines = []
    for kind, s in scores.items():
        if isinstance(s, dict) and "score" in s:
            metric = s.get("metric") or scores.get("metric", "score")
            ci = f" (95% CI {s['ci_low']:.3f}-{s['ci_high']:.3f})" if "ci_low" in s and "ci_high" in s else ""
            n = s.get("n") or scores.get("n")
            lines.append(f"- {kind}: {metric} = {s['score']:.3f}{ci}" + (f", n={n}" if n else ""))
        elif kind == "delta" and isinstance(s, int | float):
            lines.append(f"- fine-tuned minus base: {s:+.3f}")
        elif kind == "gate" and isinstance(s, dict):
            verdict = "passed" if s.get("passed") else "failed"
            lines.append(f"- eval gate: {verdict} on {s.get('metric')} ({len(s.get('checks', []))} checks)")
    return lines


def model_card(manifest: dict[str, Any]) -> str:
    """An HF-style README.md (YAML front matter + short body) for the exported target."""
    front = yaml.safe_dump(_front_matter(manifest), sort_keys=False)
    title = manifest["job_config"].get("suffix") or manifest["job_id"]
    files = "\n".join(
        f"| `{f['path']}` | {f['bytes']:,} | `{f['sha256'][:16]}…` |" for f in manifest["files"]
    )
    scores = "\n".join(_eval_lines(manifest["eval"]))
    return (
        f"---\n{front}---\n\n# {title}\n\n"
        f"A fine-tune of [{manifest['base_model']}](https://huggingface.co/{manifest['base_model']}) made by "
        f"edgetune job `{manifest['job_id']}`, exported for **{manifest['profile']}** as "
        f"{manifest['format']} ({manifest['quantization']}). Runtime: {manifest['runtime']}; "
        f"needs {manifest['min_runtime']} or newer.\n\n"
        f"## Files\n\n| file | bytes | sha256 |\n|---|---|---|\n{files}\n\n"
        f"## Evaluation (held-out rows)\n\n{scores or 'Not evaluated.'}\n\n"
        f"## How to run\n\n{_how_to_run(manifest)}\n"
        f'Tool calls use LFM\'s pythonic format: `<|tool_call_start|>[f(a="x")]<|tool_call_end|>`.\n\n'
        f"## License\n\n{manifest['license']['attribution']} See {manifest['license']['license_link']}.\n"
    )


def write_manifest(manifest: dict[str, Any], root: Path) -> list[Path]:
    """Write `manifest.json` and `README.md` into `root`; returns both paths."""
    manifest_path = root / "manifest.json"
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    card_path = root / "README.md"
    card_path.write_text(model_card(manifest))
    return [manifest_path, card_path]
