from __future__ import annotations

import hashlib
import importlib.metadata
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from domain.job_config import JobConfig, TaskSpec
from eval.metrics import score
from export.formats.onnx import TRANSFORMERS_JS
from export.manifest import (
    build_adapter_manifest,
    build_manifest,
    chat_template,
    license_info,
    min_runtime,
    model_card,
    recommended_sampling,
    sha256_file,
    verify_manifest,
    write_manifest,
)
from export.profiles import get_profile
from export.targets import export_target
from tests.export.tiny_artifacts import REPO, TinyArtifacts

CONFIG = JobConfig(
    model="LiquidAI/LFM2-350M",
    suffix="sentiment",
    task=TaskSpec(description="Classify review sentiment.", labels=["positive", "negative"]),
)


@pytest.fixture
def gguf_export(tiny: TinyArtifacts, quantized: dict[str, Path], tmp_path: Path) -> tuple[Path, list[Path]]:
    """A laptop-cpu target folder holding the session's Q4_K_M file (no re-quantization)."""
    target = tmp_path / "laptop-cpu"
    target.mkdir()
    return tmp_path, [Path(shutil.copy2(quantized["Q4_K_M"], target / "model-Q4_K_M.gguf"))]


def _manifest(
    tiny: TinyArtifacts, root: Path, files: list[Path], profile: str = "laptop-cpu"
) -> dict[str, Any]:
    eval_scores = {
        "gguf": score("classification", ["positive", "negative"], ["positive", "positive"]).to_dict()
    }
    return build_manifest(
        "job-123",
        CONFIG,
        get_profile(profile),
        files,
        root,
        eval_scores,
        {"dataset_sha256": "ab" * 32},
        merged_dir=tiny.hf_dir,
    )


def test_sha256_file_streams_large_files(tmp_path: Path) -> None:
    data = bytes(range(256)) * 9000  # > 2 chunks of 1 MiB
    (tmp_path / "blob").write_bytes(data)
    assert sha256_file(tmp_path / "blob") == hashlib.sha256(data).hexdigest()


def test_manifest_records_files_provenance_and_license(
    tiny: TinyArtifacts, gguf_export: tuple[Path, list[Path]]
) -> None:
    root, files = gguf_export
    manifest = _manifest(tiny, root, files)

    assert manifest["files"] == [
        {
            "path": "laptop-cpu/model-Q4_K_M.gguf",
            "bytes": files[0].stat().st_size,
            "sha256": sha256_file(files[0]),
        }
    ]
    assert manifest["base_model"] == "LiquidAI/LFM2-350M"
    assert (manifest["format"], manifest["quantization"]) == ("gguf", "Q4_K_M")
    assert manifest["min_runtime"] == "llama.cpp (llama-cpp-python 0.3.36)"
    assert manifest["tool_call_format"] == "lfm-pythonic"
    template = (tiny.hf_dir / "chat_template.jinja").read_text()
    assert manifest["chat_template_sha256"] == hashlib.sha256(template.encode()).hexdigest()
    tokenizer = (tiny.hf_dir / "tokenizer.json").read_bytes()
    assert manifest["tokenizer_sha256"] == hashlib.sha256(tokenizer).hexdigest()
    assert JobConfig.model_validate(manifest["job_config"]) == CONFIG
    assert manifest["license"]["license_name"] == "lfm1.0"
    assert "LFM Open License v1.0" in manifest["license"]["attribution"]
    assert manifest["eval"]["gguf"]["metric"] == "accuracy"
    json.dumps(manifest)  # serialisable as-is


def test_verify_detects_tampered_truncated_and_missing_files(
    tiny: TinyArtifacts, gguf_export: tuple[Path, list[Path]]
) -> None:
    root, files = gguf_export
    manifest = _manifest(tiny, root, files)
    assert verify_manifest(manifest, root) == []

    data = bytearray(files[0].read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one flipped byte
    files[0].write_bytes(bytes(data))
    assert verify_manifest(manifest, root) == [
        "laptop-cpu/model-Q4_K_M.gguf: sha256 differs from the manifest"
    ]

    files[0].write_bytes(bytes(data[:100]))
    assert "100 bytes" in verify_manifest(manifest, root)[0]
    files[0].unlink()
    assert verify_manifest(manifest, root) == ["laptop-cpu/model-Q4_K_M.gguf: missing"]


def test_files_outside_the_root_are_rejected(tiny: TinyArtifacts, tmp_path: Path) -> None:
    (tmp_path / "elsewhere.gguf").write_bytes(b"x")
    with pytest.raises(ValueError, match="not under the manifest root"):
        _manifest(tiny, tmp_path / "root", [tmp_path / "elsewhere.gguf"])


def test_model_card_for_gguf(tiny: TinyArtifacts, gguf_export: tuple[Path, list[Path]]) -> None:
    root, files = gguf_export
    written = write_manifest(_manifest(tiny, root, files), root)
    assert [p.name for p in written] == ["manifest.json", "README.md"]
    card = (root / "README.md").read_text()

    _, front, body = card.split("---\n", 2)
    meta = yaml.safe_load(front)
    assert meta["base_model"] == "LiquidAI/LFM2-350M"
    assert meta["base_model_relation"] == "quantized"
    assert meta["library_name"] == "gguf"
    assert meta["tags"] == ["lfm2", "edge", "llama.cpp", "gguf"]
    assert (meta["license"], meta["license_name"]) == ("other", "lfm1.0")
    assert "# sentiment" in body and "laptop-cpu/model-Q4_K_M.gguf" in body
    assert "llama-cli -m laptop-cpu/model-Q4_K_M.gguf" in body
    assert "accuracy = 0.500" in body
    assert json.loads((root / "manifest.json").read_text())["job_id"] == "job-123"


def test_model_card_for_merged_safetensors(tiny: TinyArtifacts, tmp_path: Path) -> None:
    files = export_target(tiny.hf_dir, get_profile("gpu-server"), tmp_path)
    manifest = _manifest(tiny, tmp_path, files, profile="gpu-server")
    assert verify_manifest(manifest, tmp_path) == []
    assert manifest["min_runtime"].startswith("transformers>=4.54.0")
    meta = yaml.safe_load(model_card(manifest).split("---\n", 2)[1])
    assert (meta["base_model_relation"], meta["library_name"]) == ("finetune", "transformers")


def test_chat_template_from_older_tokenizer_config(tmp_path: Path) -> None:
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps(
            {"chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}]}
        )
    )
    assert chat_template(tmp_path) == "D"
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"chat_template": "S"}))
    assert chat_template(tmp_path) == "S"
    (tmp_path / "tokenizer_config.json").write_text("{}")
    assert chat_template(tmp_path) is None


def test_license_attribution_by_base() -> None:
    assert license_info("LiquidAI/LFM2-1.2B")["license_link"].endswith("LiquidAI/LFM2-1.2B/blob/main/LICENSE")
    assert license_info("HuggingFaceTB/SmolLM2-135M-Instruct")["license"] == "apache-2.0"
    assert license_info("someone/model")["license_name"] == "unknown"


def test_without_merged_dir_the_gguf_embedded_template_is_hashed(
    tiny: TinyArtifacts, gguf_export: tuple[Path, list[Path]]
) -> None:
    root, files = gguf_export
    manifest = build_manifest("job-1", CONFIG, get_profile("laptop-cpu"), files, root)
    assert manifest["chat_template_sha256"] == _manifest(tiny, root, files)["chat_template_sha256"]
    assert manifest["eval"] == {} and manifest["extra"] == {}


def test_model_card_renders_the_workers_base_vs_fine_tuned_scores(
    tiny: TinyArtifacts, gguf_export: tuple[Path, list[Path]]
) -> None:
    root, files = gguf_export
    manifest = _manifest(tiny, root, files)
    manifest["eval"] = {
        "metric": "accuracy",
        "n": 12,
        "base": {"score": 0.25, "ci_low": 0.08, "ci_high": 0.5},
        "fine_tuned": {"score": 0.75, "ci_low": 0.5, "ci_high": 1.0},
        "delta": 0.5,
        "artifact": {"metric": "accuracy", "score": 0.6667, "ci_low": 0.4167, "ci_high": 0.9167},
    }
    card = model_card(manifest)
    assert "- base: accuracy = 0.250 (95% CI 0.080-0.500), n=12" in card
    assert "- fine_tuned: accuracy = 0.750" in card
    assert "- artifact: accuracy = 0.667" in card
    assert "- fine-tuned minus base: +0.500" in card
    assert "general-ability probe" not in card  # no probe entry, no probe line


def test_model_card_shows_the_general_ability_probe(
    tiny: TinyArtifacts, gguf_export: tuple[Path, list[Path]]
) -> None:
    root, files = gguf_export
    manifest = _manifest(tiny, root, files)
    manifest["eval"] = {  # the worker's shape (worker/stages/ evaluate), as publish passes it
        "metric": "accuracy",
        "n": 12,
        "base": {"score": 0.25, "ci_low": 0.08, "ci_high": 0.5},
        "fine_tuned": {"score": 0.75, "ci_low": 0.5, "ci_high": 1.0},
        "delta": 0.5,
        "probe": {
            "metric": "answer_match",
            "n": 32,
            "base": {"score": 0.8125, "ci_low": 0.6562, "ci_high": 0.9375},
            "fine_tuned": {"score": 0.5, "ci_low": 0.3125, "ci_high": 0.6875},
            "drop": 0.3125,
        },
        "artifact": None,
        "gate": None,
    }
    card = model_card(manifest)
    line = next(x for x in card.splitlines() if x.startswith("- general-ability probe"))
    assert "32 fixed questions" in line and "answer_match" in line
    assert "base 0.812 (95% CI 0.656-0.938)" in line
    assert "fine-tuned 0.500 (95% CI 0.312-0.688)" in line
    assert "drop +0.312" in line
    assert "- base: accuracy = 0.250" in card  # the held-out rows' lines are unchanged


LFM2_DEFAULTS = {"temperature": 0.3, "min_p": 0.15, "repetition_penalty": 1.05}


def _settings(sampling: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in sampling.items() if k not in ("why", "task_type")}


@pytest.mark.parametrize(
    ("task", "task_type"),
    [
        ({"labels": ["a", "b"]}, "classification"),
        (
            {
                "type": "extraction",
                "output_schema": {"type": "object", "properties": {"x": {"type": "string"}}},
            },
            "extraction",
        ),
        (
            {
                "type": "tool_calling",
                "tools": [{"name": "f", "description": "d", "parameters": {"type": "object"}}],
            },
            "tool_calling",
        ),
    ],
)
def test_narrow_tasks_are_recommended_greedy(task: dict[str, Any], task_type: str) -> None:
    config = JobConfig(model="LiquidAI/LFM2-350M", task=TaskSpec(description="Do the narrow task.", **task))
    sampling = recommended_sampling(config)
    assert sampling["task_type"] == task_type
    assert _settings(sampling) == {"temperature": 0.0}
    assert "greedy" in sampling["why"] and "eval gate" in sampling["why"]


def test_free_form_generation_gets_the_publishers_defaults() -> None:
    chat = TaskSpec(description="Answer customer questions kindly.")
    sampling = recommended_sampling(JobConfig(model="LiquidAI/LFM2-350M", task=chat))
    assert sampling["task_type"] == "generation"
    assert _settings(sampling) == LFM2_DEFAULTS
    assert "Liquid AI" in sampling["why"]
    small = recommended_sampling(JobConfig(model="LiquidAI/LFM2.5-230M", task=chat))
    assert _settings(small) == {"temperature": 0.1, "top_k": 50, "repetition_penalty": 1.05}
    # no published defaults: greedy, as scored
    smol = recommended_sampling(JobConfig(model="HuggingFaceTB/SmolLM2-135M-Instruct", task=chat))
    assert _settings(smol) == {"temperature": 0.0} and "no sampling defaults" in smol["why"]


def test_a_job_without_a_task_follows_how_its_eval_scored_it() -> None:
    upload = JobConfig(model="LiquidAI/LFM2-350M", training_file="file-x")
    as_classes = recommended_sampling(upload, {"metric": "accuracy", "n": 8})
    assert (as_classes["task_type"], _settings(as_classes)) == ("classification", {"temperature": 0.0})
    as_text = recommended_sampling(upload, {"gguf": {"metric": "token_f1", "score": 0.4}})
    assert (as_text["task_type"], _settings(as_text)) == ("generation", LFM2_DEFAULTS)
    unknown = recommended_sampling(upload)
    assert unknown["task_type"] is None and _settings(unknown) == LFM2_DEFAULTS


def test_manifest_and_card_carry_the_recommended_sampling(
    tiny: TinyArtifacts, gguf_export: tuple[Path, list[Path]]
) -> None:
    root, files = gguf_export
    manifest = _manifest(tiny, root, files)  # a classification task
    assert _settings(manifest["sampling"]) == {"temperature": 0.0}
    card = model_card(manifest)
    assert "## Recommended sampling" in card and "`temperature=0`" in card
    assert "-cnv --temp 0" in card and "temperature=0.0" in card

    chat = CONFIG.model_copy(update={"task": TaskSpec(description="Answer customer questions kindly.")})
    generation = build_manifest("job-2", chat, get_profile("laptop-cpu"), files, root, merged_dir=tiny.hf_dir)
    assert _settings(generation["sampling"]) == LFM2_DEFAULTS
    card = model_card(generation)
    assert "--temp 0.3 --min-p 0.15 --repeat-penalty 1.05" in card
    assert "temperature=0.3, min_p=0.15, repeat_penalty=1.05" in card  # llama-cpp-python's names

    files = export_target(tiny.hf_dir, get_profile("gpu-server"), root / "hf")
    merged = build_manifest(
        "job-3", chat, get_profile("gpu-server"), files, root / "hf", merged_dir=tiny.hf_dir
    )
    assert "do_sample=True, temperature=0.3, min_p=0.15, repetition_penalty=1.05" in model_card(merged)
    greedy = _manifest(tiny, root / "hf", files, profile="gpu-server")
    assert "do_sample=False" in model_card(greedy)


def test_onnx_min_runtime_names_the_installed_onnxruntime(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.metadata.version

    def version(name: str) -> str:
        if name == "onnxruntime":
            return "1.99.1"
        return real(name)

    monkeypatch.setattr(importlib.metadata, "version", version)
    assert min_runtime("onnx") == "onnxruntime>=1.99.1 (onnxruntime-web for browsers)"

    def missing(name: str) -> str:
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "version", missing)
    assert min_runtime("onnx") == "onnxruntime>=1.31 (onnxruntime-web for browsers)"


def test_model_card_for_an_onnx_target(tiny: TinyArtifacts, tmp_path: Path) -> None:
    archive = tmp_path / "browser-webgpu.tar"  # what publish uploads: the folder layout in one tar
    archive.write_bytes(b"tar")
    manifest = build_manifest(
        "job-4", CONFIG, get_profile("browser-webgpu"), [archive], tmp_path, merged_dir=tiny.hf_dir
    )
    assert manifest["format"] == "onnx" and manifest["min_runtime"].startswith("onnxruntime>=")
    card = model_card(manifest)
    assert "`browser-webgpu.tar`" in card and "onnx/model_q4.onnx" in card
    assert "dtype: 'q4'" in card and "@huggingface/transformers" in card
    for name in ("input_ids", "position_ids", "past_conv.{i}", "past_key_values.{i}.key", "present_conv.{i}"):
        assert name in card
    assert "onnxruntime-web" in card and "or newer" not in card  # min_runtime already says >=


def _card_python_block(card: str, marker: str) -> str:
    """The card's ```python block that contains `marker`."""
    blocks = [b.split("```", 1)[0] for b in card.split("```python\n")[1:]]
    return next(b for b in blocks if marker in b)


def test_a_gguf_ships_its_grammar_and_the_cards_snippet_runs_it(
    tiny: TinyArtifacts, quantized: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As publish lays a target out: the GGUF and the grammar side by side. The card's
    llama-cpp-python snippet, run as written there, answers one of the labels."""
    from eval.grammar import grammar_for

    gguf = Path(shutil.copy2(quantized["Q4_K_M"], tmp_path / "model-Q4_K_M.gguf"))
    assert CONFIG.task is not None
    grammar_path = tmp_path / "grammar.gbnf"
    grammar_path.write_text(grammar_for("classification", CONFIG.task.labels, None, None) or "")
    manifest = build_manifest(
        "job-g",
        CONFIG,
        get_profile("laptop-cpu"),
        [gguf],
        tmp_path,
        merged_dir=tiny.hf_dir,
        grammar=grammar_path,
    )
    assert manifest["grammar"] == {
        "path": "grammar.gbnf",
        "bytes": grammar_path.stat().st_size,
        "sha256": sha256_file(grammar_path),
        "format": "gbnf",
        "constrains": "labels",
    }
    assert [f["path"] for f in manifest["files"]] == ["model-Q4_K_M.gguf"]  # the model alone
    card = model_card(manifest)
    assert "## Constrained output" in card and "| `grammar.gbnf` |" in card
    assert "llama-cli -m model-Q4_K_M.gguf -c 32768 --grammar-file grammar.gbnf -cnv --temp 0" in card
    assert "Ollama does not take GBNF grammars" in card and "bare label" in card

    snippet = _card_python_block(card, "LlamaGrammar.from_file")
    monkeypatch.chdir(tmp_path)
    scope: dict[str, Any] = {}
    exec(snippet.replace("llm.create_chat_completion(", "result = llm.create_chat_completion("), scope)
    scope["llm"].close()
    assert scope["result"]["choices"][0]["message"]["content"] in CONFIG.task.labels


def test_an_extraction_card_hands_ollama_the_schema_from_the_manifest(
    tiny: TinyArtifacts, quantized: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from eval.grammar import grammar_for

    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    config = CONFIG.model_copy(
        update={"task": TaskSpec(description="Extract the city.", output_schema=schema)}
    )
    gguf = Path(shutil.copy2(quantized["Q4_K_M"], tmp_path / "model-Q4_K_M.gguf"))
    (tmp_path / "grammar.gbnf").write_text(grammar_for("extraction", None, schema, None) or "")
    manifest = build_manifest(
        "job-e", config, get_profile("laptop-cpu"), [gguf], tmp_path, grammar=tmp_path / "grammar.gbnf"
    )
    assert manifest["grammar"]["constrains"] == "json_schema"
    write_manifest(manifest, tmp_path)
    card = (tmp_path / "README.md").read_text()
    assert "`FROM ./model-Q4_K_M.gguf`" in card and "format=schema" in card
    # the card's line that reads the schema, against the manifest.json written beside it
    line = next(x for x in _card_python_block(card, "ollama").splitlines() if x.startswith("schema = "))
    monkeypatch.chdir(tmp_path)
    scope: dict[str, Any] = {"json": json}
    exec(line, scope)
    assert scope["schema"] == schema


def test_an_adapter_manifest_carries_the_grammar_for_base_plus_adapter(
    tiny: TinyArtifacts, tmp_path: Path
) -> None:
    from eval.grammar import grammar_for

    tools = [{"name": "get_weather", "description": "d", "parameters": {"type": "object"}}]
    config = CONFIG.model_copy(update={"task": TaskSpec(description="Call tools.", tools=tools)})
    adapter_file = tmp_path / "lora-adapter-F16.gguf"
    adapter_file.write_bytes(b"adapter")
    grammar_path = tmp_path / "grammar.gbnf"
    grammar_path.write_text(
        grammar_for("tool_calling", None, None, config.task.tools if config.task else None) or ""
    )
    adapter = {"llama_cpp_flag": "--lora", "tensor_type": "F16", "base": {"model": "LiquidAI/LFM2-350M"}}
    manifest = build_adapter_manifest(
        "job-a",
        config,
        get_profile("laptop-cpu"),
        adapter_file,
        adapter,
        merged_dir=tiny.hf_dir,
        grammar=grammar_path,
    )
    assert manifest["grammar"]["constrains"] == "tool_calls"
    card = model_card(manifest)
    assert (
        "llama-cli -m LFM2-350M-Q4_K_M.gguf --lora lora-adapter-F16.gguf -c 32768 --grammar-file grammar.gbnf"
        in card
    )
    assert 'model_path="LFM2-350M-Q4_K_M.gguf", lora_path="lora-adapter-F16.gguf"' in card
    assert "special tokens" in card and "cannot describe LFM's pythonic call list" in card


def test_a_grammar_for_a_free_form_job_is_refused(tiny: TinyArtifacts, tmp_path: Path) -> None:
    chat = CONFIG.model_copy(update={"task": TaskSpec(description="Answer customer questions kindly.")})
    (tmp_path / "g.gbnf").write_text('root ::= "x"\n')
    (tmp_path / "model.bin").write_bytes(b"x")
    with pytest.raises(ValueError, match="not 'generation'"):
        build_manifest(
            "job-x",
            chat,
            get_profile("gpu-server"),
            [tmp_path / "model.bin"],
            tmp_path,
            merged_dir=tiny.hf_dir,
            grammar=tmp_path / "g.gbnf",
        )


def test_the_browser_card_says_what_transformers_js_can_constrain(
    tiny: TinyArtifacts, tmp_path: Path
) -> None:
    archive = tmp_path / "browser-webgpu.tar"
    archive.write_bytes(b"tar")
    manifest = build_manifest(
        "job-b", CONFIG, get_profile("browser-webgpu"), [archive], tmp_path, merged_dir=tiny.hf_dir
    )
    assert manifest["grammar"] is None
    card = model_card(manifest)
    assert f"transformers.js ({TRANSFORMERS_JS}" in card and "no grammar or JSON-schema" in card
    assert "logits_processor" in card and "bad_words_ids" in card
    # the version the card names is the one the tests load the artifact with
    package = json.loads((REPO / "tests" / "js" / "package.json").read_text())
    assert package["dependencies"]["@huggingface/transformers"] == TRANSFORMERS_JS
    # a free-form model's card has no such section
    chat = CONFIG.model_copy(update={"task": TaskSpec(description="Answer customer questions kindly.")})
    chat_card = model_card(build_manifest("job-c", chat, get_profile("browser-webgpu"), [archive], tmp_path))
    assert "## Constrained output" not in chat_card
