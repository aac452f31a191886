"""Artifact manifests and model cards.

A manifest is the registry's record of one exported target: every file with its size and full-file
SHA-256 (computed here, before upload: S3 only keeps composite checksums for multipart uploads), the
job config that made it, where the weights came from and under which license, and the eval scores.
It is written as `manifest.json` next to the files, with an HF-style `README.md` built from it.

A LoRA job's adapter GGUF gets a manifest of its own (`build_adapter_manifest`, format `gguf-lora`):
the same record plus the base model it applies to and the llama.cpp flag that applies it.

Every manifest recommends sampling settings (`recommended_sampling`): greedy for a classification,
extraction or tool-calling fine-tune, the base publisher's defaults for free-form generation.

A GGUF (or adapter) of such a fine-tune may ship a llama.cpp grammar (`eval.grammar.grammar_for`,
a `.gbnf` file published beside the model file): the manifest's `grammar` entry names it, and the
model card shows how to pass it to llama.cpp and llama-cpp-python, what Ollama can take instead,
and, for the browser (ONNX) artifact, what transformers.js can and cannot constrain.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

from domain.job_config import JobConfig
from domain.lists import EVAL_TASKS, GREEDY_TASKS
from eval.grammar import CONSTRAINS
from export.adapter_gguf import ADAPTER_FORMAT
from export.card_sampling import LLAMA_CPP_PYTHON_NAMES, llama_cli_flags, python_kwargs, sampling_settings
from export.formats import FORMATS
from export.profiles import DeviceProfile

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


def _tokenizer_hash(merged_dir: Path | None) -> str | None:
    tokenizer = merged_dir / "tokenizer.json" if merged_dir is not None else None
    return sha256_file(tokenizer) if tokenizer is not None and tokenizer.is_file() else None


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
    """The oldest runtime the card promises: the format's own (an adapter GGUF's is its model's)."""
    return FORMATS["gguf" if fmt == ADAPTER_FORMAT else fmt].min_runtime()


# Each scorer's headline metric (eval/metrics.py), for a job without a task: the worker scored it as
# classification or generation by the look of its answers (worker/held_out.py held_out_rows).
METRIC_TASK = {f.metric: t for t, f in EVAL_TASKS.items()}


def _task_type(config: JobConfig, eval_scores: dict[str, Any] | None) -> str | None:
    """The job's task type; for a job without a task, the one its eval scored it as (from the
    worker's `{"metric", ...}` or a `{kind: EvalResult.to_dict()}` of them); None when unknown."""
    if config.task is not None:
        return config.task.task_type
    scores = eval_scores or {}
    metric = scores.get("metric") or next(
        (s["metric"] for s in scores.values() if isinstance(s, dict) and "metric" in s), None
    )
    return METRIC_TASK.get(metric) if isinstance(metric, str) else None


def published_sampling(base_model: str) -> dict[str, float] | None:
    """The base publisher's recommended generation settings, from recipes/catalog.yaml (which cites
    where each comes from); None for a model with no published recommendation or not in the catalog."""
    from recipes.base_models import load_catalog

    entry = next((m for m in load_catalog() if m.id == base_model), None)
    if entry is None or entry.sampling is None:
        return None
    return entry.sampling.model_dump(exclude_none=True)


def recommended_sampling(
    config: JobConfig, eval_scores: dict[str, Any] | None = None, base_model: str | None = None
) -> dict[str, Any]:
    """The sampling settings to run the fine-tune with, and why.

    A narrow fine-tune with one right answer (classification, extraction, tool calling) is run
    greedily, as the eval gate scored it. Free-form generation gets the base publisher's defaults
    from recipes/catalog.yaml, which cites them (Liquid's for LFM2, from Liquid4All/docs
    lfm/inference: temperature 0.3, min_p 0.15, repetition_penalty 1.05; LFM2.5: temperature 0.1,
    repetition_penalty 1.05), or greedy where none are published. A job whose task type is
    unknown (no task, not evaluated) is treated as generation.
    """
    task_type = _task_type(config, eval_scores)
    if task_type in GREEDY_TASKS:
        kind = str(task_type).replace("_", " ")
        why = f"{kind} fine-tune: greedy decoding, as edgetune's eval gate scored it"
        return {"task_type": task_type, "temperature": 0.0, "why": why}
    what = "free-form generation" if task_type == "generation" else "task type unknown"
    base = base_model or config.model
    published = published_sampling(base)
    if published is None:
        why = f"{what}; {base} publishes no sampling defaults: greedy, as the eval gate scored it"
        return {"task_type": task_type, "temperature": 0.0, "why": why}
    publisher = "Liquid AI" if base.lower().startswith("liquidai/") else "the publisher"
    why = (
        f"{what}: {publisher}'s recommended settings for {base}; "
        "the eval gate scored it greedily (temperature 0)"
    )
    return {"task_type": task_type, **published, "why": why}


def _file_entry(path: Path, root: Path) -> dict[str, Any]:
    if not path.resolve().is_relative_to(root.resolve()):
        raise ValueError(f"{path} is not under the manifest root {root}")
    rel = path.resolve().relative_to(root.resolve()).as_posix()
    return {"path": rel, "bytes": path.stat().st_size, "sha256": sha256_file(path)}


def _grammar_entry(grammar: Path, task_type: str | None) -> dict[str, Any]:
    """The manifest's record of a grammar file. Stored by file name: it is published beside the
    model file (the card's commands name both as they lie in one folder)."""
    if task_type not in CONSTRAINS:
        raise ValueError(
            f"a grammar constrains classification, extraction or tool calling, not {task_type!r}"
        )
    return {
        "path": grammar.name,
        "bytes": grammar.stat().st_size,
        "sha256": sha256_file(grammar),
        "format": "gbnf",
        "constrains": CONSTRAINS[task_type],
    }


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
    grammar: Path | None = None,
    base_model: str | None = None,
) -> dict[str, Any]:
    """The manifest of one exported target.

    Args:
        files (`list[Path]`): artifact files, all under `root`; stored with paths relative to it.
        eval_scores (`dict`, *optional*): e.g. `{"gguf": EvalResult.to_dict(), "hf": ...}`.
        extra (`dict`, *optional*): anything else to record (dataset ids and hashes, gate decision).
        merged_dir (`Path`, *optional*): the merged checkpoint, whose chat template is hashed;
            without it the template embedded in the first GGUF of `files` is.
        quantization (`str`, *optional*): set when the export overrode the profile's default.
        grammar (`Path`, *optional*): the task's llama.cpp grammar file (`eval.grammar.grammar_for`
            written to disk), published beside the model file; recorded as `grammar` with its
            bytes, sha256 and what it constrains ("labels", "json_schema" or "tool_calls", from
            the job's task type). Not one of `files`: those are the model itself.
        base_model (`str`, *optional*): the base it was fine-tuned from when not the job's
            `model`: a sweep target that chose another of its `models` (worker/stages/sweep.py).
    """
    base = base_model or config.model
    template = _template_of(files, merged_dir)
    task_type = _task_type(config, eval_scores)
    config_json = json.dumps(config.model_dump(mode="json"), sort_keys=True)
    return {
        "manifest_version": MANIFEST_VERSION,
        "job_id": job_id,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "base_model": base,
        "profile": profile.name,
        "format": profile.format,
        "quantization": quantization or profile.quantization,
        "context_cap": profile.context_cap,
        "runtime": profile.runtime,
        "min_runtime": min_runtime(profile.format),
        "tool_call_format": TOOL_CALL_FORMAT,
        "chat_template_sha256": hashlib.sha256(template.encode()).hexdigest() if template else None,
        # the vocabulary, merges and special tokens the model was trained with (GGUFs embed their own)
        "tokenizer_sha256": _tokenizer_hash(merged_dir),
        "license": license_info(base),
        "sampling": recommended_sampling(config, eval_scores, base),
        "files": [_file_entry(f, root) for f in files],
        "grammar": _grammar_entry(grammar, task_type) if grammar is not None else None,
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
    grammar: Path | None = None,
    base_model: str | None = None,
) -> dict[str, Any]:
    """The manifest of a LoRA adapter GGUF shipped for `profile` beside the merged model's GGUF.

    Args:
        adapter_file (`Path`): the adapter GGUF; the manifest's root is its folder.
        adapter (`dict`): `export.adapter_gguf.adapter_info` of it: rank, alpha, flag, base model.
        eval_scores (`dict`, *optional*): the fine-tune's scores; the adapter itself is not scored.
        grammar (`Path`, *optional*): as in `build_manifest`; base + adapter answer as the merged
            model does, so the same grammar holds.

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
        grammar=grammar,
        base_model=base_model,
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
    hub = FORMATS["gguf" if adapter else manifest["format"]].hub
    lic = manifest["license"]
    # HF's model tree lists an adapter under the base's adapters; the format says the rest
    return {
        "base_model": manifest["base_model"],
        "base_model_relation": "adapter" if adapter else hub.relation,
        "library_name": hub.library,
        "pipeline_tag": "text-generation",
        "tags": [*hub.tags, "lora"] if adapter else list(hub.tags),
        "license": lic["license"],
        "license_name": lic["license_name"],
        "license_link": lic["license_link"],
    }


def _adapter_base_file(manifest: dict[str, Any]) -> str:
    base = manifest["adapter"]["base"]
    return f"{base['model'].rsplit('/', 1)[-1]}-{base['profile_quantization']}.gguf"


def _how_to_run_adapter(manifest: dict[str, Any]) -> str:
    adapter, ctx = manifest["files"][0]["path"], manifest["context_cap"]
    base = manifest["adapter"]["base"]
    base_file = _adapter_base_file(manifest)
    flag, sampling = manifest["adapter"]["llama_cpp_flag"], llama_cli_flags(manifest)
    return (
        f"A LoRA adapter, not a model: load a GGUF of {base['model']} (any quantization; "
        f"{base['profile_quantization']} for {manifest['profile']}) and apply this file with `{flag}`. "
        "The base GGUF's embedded chat template formats the prompts.\n\n"
        f"```sh\nllama-cli -m {base_file} {flag} {adapter} -c {ctx} -cnv {sampling}\n"
        f"llama-server -m {base_file} {flag} {adapter} -c {ctx} --jinja {sampling}\n```\n\n"
        "```python\nfrom llama_cpp import Llama\n\n"
        f'llm = Llama(model_path="{base_file}", lora_path="{adapter}", n_ctx={ctx})\n'
        "llm.create_chat_completion(\n"
        f'    messages=[{{"role": "user", "content": "Hello"}}], '
        f"{python_kwargs(manifest, LLAMA_CPP_PYTHON_NAMES)}\n)\n```\n"
    )


def _how_to_run(manifest: dict[str, Any]) -> str:
    if manifest["format"] == ADAPTER_FORMAT:
        return _how_to_run_adapter(manifest)
    return FORMATS[manifest["format"]].how_to_run(manifest)


_GRAMMAR_ALLOWS = {
    "labels": "exactly one of the task's labels, written as in training (the bare label)",
    "json_schema": "a JSON object valid against the task's output schema",
    "tool_calls": "LFM tool calls to the task's tools only, with their own parameter names and value types",
}


def _model_args(manifest: dict[str, Any]) -> tuple[str, str]:
    """How the card's commands load the model: llama-cli arguments and llama-cpp-python's
    `Llama(...)` arguments (an adapter goes on a base GGUF)."""
    ctx, first = manifest["context_cap"], manifest["files"][0]["path"]
    if manifest["format"] != ADAPTER_FORMAT:
        return f"-m {first} -c {ctx}", f'model_path="{first}", n_ctx={ctx}'
    base, flag = _adapter_base_file(manifest), manifest["adapter"]["llama_cpp_flag"]
    return f"-m {base} {flag} {first} -c {ctx}", f'model_path="{base}", lora_path="{first}", n_ctx={ctx}'


def _modelfile(manifest: dict[str, Any]) -> str:
    first = manifest["files"][0]["path"]
    if manifest["format"] != ADAPTER_FORMAT:
        return f"`FROM ./{first}`"
    return f"`FROM ./{_adapter_base_file(manifest)}` and `ADAPTER ./{first}`"


def _ollama_note(constrains: str, modelfile: str) -> str:
    """What Ollama can take instead of the grammar: its API has no GBNF field; `format` takes
    "json" or a JSON schema, which it turns into a grammar of its own."""
    head = 'Ollama does not take GBNF grammars: its `format` takes `"json"` or a JSON schema. '
    if constrains == "json_schema":
        return head + (
            "For this extraction model pass the task's schema (in `manifest.json`) as `format` "
            "(`my-model` made with `ollama create my-model -f Modelfile`, the Modelfile reading "
            f"{modelfile}):\n\n"
            "```python\nimport json\n\nimport ollama\n\n"
            'schema = json.load(open("manifest.json"))["job_config"]["task"]["output_schema"]\n'
            'ollama.chat(model="my-model", messages=[{"role": "user", "content": "..."}], '
            'format=schema, options={"temperature": 0})\n```\n'
        )
    if constrains == "labels":
        return head + (
            "A schema would make the model write JSON (a quoted label), not the bare label it was "
            "trained to answer, so there is no Ollama equivalent: check the answer against the labels.\n"
        )
    return head + (
        "A JSON schema cannot describe LFM's pythonic call list, so there is no Ollama equivalent: "
        "parse the calls and check the tool names in your app.\n"
    )


def _grammar_section(manifest: dict[str, Any]) -> str:
    grammar = manifest["grammar"]
    path, constrains = grammar["path"], grammar["constrains"]
    cli, llama_kwargs = _model_args(manifest)
    markers = (
        " The grammar writes the tool-call markers as text, which llama.cpp matches against LFM's special "
        "tokens; llama-cpp-python leaves special tokens out of the text it returns, so a call may read "
        "`[f(a=1)]` without them."
        if constrains == "tool_calls"
        else ""
    )
    return (
        f"`{path}` is a llama.cpp grammar (GBNF) that lets the model write only "
        f"{_GRAMMAR_ALLOWS[constrains]}: every answer has that shape by construction (a token budget can "
        f"still cut a long one short). The evaluation above scores this artifact with and without it "
        f"where both were run.{markers}\n\n"
        f"```sh\nllama-cli {cli} --grammar-file {path} -cnv {llama_cli_flags(manifest)}\n```\n\n"
        f"llama-server takes the file's text as `\"grammar\"` in a request's JSON body.\n\n"
        "```python\nfrom llama_cpp import Llama, LlamaGrammar\n\n"
        f"llm = Llama({llama_kwargs})\n"
        f'grammar = LlamaGrammar.from_file("{path}")\n'
        'llm.create_chat_completion(messages=[{"role": "user", "content": "..."}], grammar=grammar, '
        f"{python_kwargs(manifest, LLAMA_CPP_PYTHON_NAMES)})\n```\n\n"
        f"{_ollama_note(constrains, _modelfile(manifest))}"
    )


def _constrained_output(manifest: dict[str, Any]) -> str:
    """The card's "Constrained output" section, or "" when there is none to write."""
    if manifest.get("grammar"):
        return f"## Constrained output\n\n{_grammar_section(manifest)}\n"
    task_type = (manifest.get("sampling") or {}).get("task_type")
    note = FORMATS[manifest["format"]].constraints_note if manifest["format"] in FORMATS else None
    if note is not None and task_type in GREEDY_TASKS:
        return f"## Constrained output\n\n{note()}\n"
    return ""


def _sampling_section(manifest: dict[str, Any]) -> str:
    settings = ", ".join(f"{k}={v:g}" for k, v in sampling_settings(manifest).items())
    why = (manifest.get("sampling") or {}).get("why", "greedy: how edgetune's eval gate scored it")
    return f"`{settings}`\n\n{why[:1].upper()}{why[1:]}.\n"


def _ci(s: dict[str, Any]) -> str:
    return f" (95% CI {s['ci_low']:.3f}-{s['ci_high']:.3f})" if "ci_low" in s and "ci_high" in s else ""


def _probe_line(probe: dict[str, Any]) -> str:
    """The worker's `probe` entry: `{"metric", "n", "base": {score, ci_low, ci_high}, "fine_tuned",
    "drop"}` (worker/stages/ evaluate), as one line."""
    base, tuned = probe.get("base") or {}, probe.get("fine_tuned") or {}
    n = f"{probe['n']} fixed questions, " if probe.get("n") else ""
    line = f"- general-ability probe ({n}{probe.get('metric', 'score')}):"
    if "score" in base:
        line += f" base {base['score']:.3f}{_ci(base)}"
    if "score" in tuned:
        line += f" -> fine-tuned {tuned['score']:.3f}{_ci(tuned)}"
    if isinstance(probe.get("drop"), int | float):
        line += f", drop {probe['drop']:+.3f}"
    return line


def _eval_lines(scores: dict[str, Any]) -> list[str]:
    """One line per scored model. Accepts `{kind: EvalResult.to_dict()}` as well as the worker's
    `{"metric", "n", "base": {score, ci_low, ci_high}, "fine_tuned": {...}, "delta", "probe", ...}`."""
    lines = []
    for kind, s in scores.items():
        if isinstance(s, dict) and "score" in s:
            metric = s.get("metric") or scores.get("metric", "score")
            n = s.get("n") or scores.get("n")
            lines.append(f"- {kind}: {metric} = {s['score']:.3f}{_ci(s)}" + (f", n={n}" if n else ""))
        elif kind == "delta" and isinstance(s, int | float):
            lines.append(f"- fine-tuned minus base: {s:+.3f}")
        elif kind == "probe" and isinstance(s, dict):
            lines.append(_probe_line(s))
        elif kind == "gate" and isinstance(s, dict):
            verdict = "passed" if s.get("passed") else "failed"
            lines.append(f"- eval gate: {verdict} on {s.get('metric')} ({len(s.get('checks', []))} checks)")
    return lines


def model_card(manifest: dict[str, Any]) -> str:
    """An HF-style README.md (YAML front matter + short body) for the exported target."""
    front = yaml.safe_dump(_front_matter(manifest), sort_keys=False)
    title = manifest["job_config"].get("suffix") or manifest["job_id"]
    listed = [*manifest["files"], *([manifest["grammar"]] if manifest.get("grammar") else [])]
    files = "\n".join(f"| `{f['path']}` | {f['bytes']:,} | `{f['sha256'][:16]}…` |" for f in listed)
    scores = "\n".join(_eval_lines(manifest["eval"]))
    what = "held-out rows; general-ability probe" if "probe" in manifest["eval"] else "held-out rows"
    runtime = manifest["min_runtime"]
    return (
        f"---\n{front}---\n\n# {title}\n\n"
        f"A fine-tune of [{manifest['base_model']}](https://huggingface.co/{manifest['base_model']}) made by "
        f"edgetune job `{manifest['job_id']}`, exported for **{manifest['profile']}** as "
        f"{manifest['format']} ({manifest['quantization']}). Runtime: {manifest['runtime']}; "
        f"needs {runtime}{'' if '>=' in runtime else ' or newer'}.\n\n"
        f"## Files\n\n| file | bytes | sha256 |\n|---|---|---|\n{files}\n\n"
        f"## Evaluation ({what})\n\n{scores or 'Not evaluated.'}\n\n"
        f"## Recommended sampling\n\n{_sampling_section(manifest)}\n"
        f"## How to run\n\n{_how_to_run(manifest)}\n"
        f'Tool calls use LFM\'s pythonic format: `<|tool_call_start|>[f(a="x")]<|tool_call_end|>`.\n\n'
        f"{_constrained_output(manifest)}"
        f"## License\n\n{manifest['license']['attribution']} See {manifest['license']['license_link']}.\n"
    )


def write_manifest(manifest: dict[str, Any], root: Path) -> list[Path]:
    """Write `manifest.json` and `README.md` into `root`; returns both paths."""
    manifest_path = root / "manifest.json"
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    card_path = root / "README.md"
    card_path.write_text(model_card(manifest))
    return [manifest_path, card_path]
