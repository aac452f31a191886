"""ONNX for browsers (transformers.js / onnxruntime-web): LFM2's decoder traced to ONNX, 4-bit
weights; scored in onnxruntime. No grammar: transformers.js has no constrained decoding."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

from export.formats.spec import ArtifactFormat, ExportJob, HubFacts
from export.onnx_export import export_onnx

ONNX_QUANT_TYPES = ("q4",)
ONNXRUNTIME_FALLBACK = "1.31"  # min_runtime() where onnxruntime is not installed here
# transformers.js runs the browser artifact; the version edgetune loads it with (tests/js).
TRANSFORMERS_JS = "3.8.1"
# q4 stores 4-bit weights plus an fp32 scale per 32 (5 bits) but keeps the embedding table in fp32
# (32 bits), which is 19% of LFM2-350M's parameters and 11% of LFM2-1.2B's: 0.19*32 + 0.81*5 = 10.1
# and 8.1, so 9 bits per weight on average.
BITS_PER_WEIGHT = {"q4": 9.0}


def make(job: ExportJob) -> list[Path]:
    return export_onnx(job.merged_dir, job.out_dir)


def min_runtime() -> str:
    # The onnxruntime installed here, which checks the exported graph; browsers run the same graph
    # in onnxruntime-web.
    try:
        version = importlib.metadata.version("onnxruntime")
    except importlib.metadata.PackageNotFoundError:
        version = ONNXRUNTIME_FALLBACK
    return f"onnxruntime>={version} (onnxruntime-web for browsers)"


def how_to_run(manifest: dict[str, Any]) -> str:
    archive = manifest["files"][0]["path"] if manifest["files"] else "browser-webgpu.tar"
    return (
        f"`{archive}` holds the transformers.js folder layout: `onnx/model_q4.onnx` (4-bit weights), "
        "`config.json`, the tokenizer and `chat_template.jinja`. Extract it where your app serves "
        "models from and load it with transformers.js (`dtype: 'q4'`, `device: 'webgpu'` or `'wasm'`):\n\n"
        "```js\nimport { pipeline, env } from '@huggingface/transformers';\n\n"
        "env.localModelPath = '/models/';  // the folder holding the extracted artifact as ./my-model/\n"
        "const generate = await pipeline('text-generation', 'my-model', { dtype: 'q4', device: 'webgpu' });\n"
        "const out = await generate([{ role: 'user', content: 'Hello' }], { max_new_tokens: 64 });\n```\n\n"
        "`onnx/model_q4.onnx` is a stateful decoder: each call takes `input_ids`, `attention_mask` and "
        "`position_ids` plus the past state (`past_conv.{i}` for the short-conv layers, "
        "`past_key_values.{i}.key` / `.value` for the attention layers) and returns the last position's "
        "`logits` and the next state (`present_conv.{i}`, `present.{i}.key` / `.value`), which the next "
        'call feeds back; onnxruntime (`ort.InferenceSession("onnx/model_q4.onnx")`) runs it too.\n'
    )


def browser_constraints() -> str:
    """What transformers.js can constrain, as read in its source (v3.8.1: generation/
    configuration_utils.js, logits_process.js, models.js): no grammar or schema decoding
    (`constraints` / `force_words_ids` are declared, never applied); `bad_words_ids` and a custom
    `logits_processor` list passed to `generate` (the text-generation pipeline forwards it) are."""
    return (
        f"transformers.js ({TRANSFORMERS_JS}, the version edgetune loads this artifact with) has no "
        "grammar or JSON-schema constrained decoding, and the llama.cpp grammar shipped with GGUF "
        "targets does not apply here. What it does take: `bad_words_ids` (token sequences never to "
        "write) and a `logits_processor` list passed to `generate` (the text-generation pipeline "
        "forwards it). A classifier can be held to its labels with a processor of your own that "
        "allows only the token ids continuing a label, then the end token. JSON-schema and tool-call "
        "constraints need a grammar engine that transformers.js does not have: validate those answers "
        "after decoding (`JSON.parse` and a schema check; parse the `[name(arg=...)]` list and check the "
        "tool names) and retry or reject.\n"
    )


FORMAT = ArtifactFormat(
    name="onnx",
    quantizations=ONNX_QUANT_TYPES,
    make=make,
    bits_per_weight=BITS_PER_WEIGHT,
    min_runtime=min_runtime,
    how_to_run=how_to_run,
    hub=HubFacts(library="transformers", relation="finetune", tags=("lfm2", "edge", "edgetune")),
    runtime="onnxruntime",
    constraints_note=browser_constraints,
)
