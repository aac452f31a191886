from __future__ import annotations

import multiprocessing
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from llama_cpp.llama_chat_format import Jinja2ChatFormatter
from transformers import AutoTokenizer

from eval.runners import (
    SPEED_TOKENS,
    ArtifactRunError,
    evaluate_model,
    generate_gguf,
    generate_hf,
    generate_isolated,
    generate_onnx,
    prompts_and_references,
)
from eval.runtime_stats import RuntimeStats
from tests.export.tiny_artifacts import REPO, TinyArtifacts

LABELS = ["positive", "negative", "neutral"]


def test_prompts_stop_before_the_last_assistant_turn() -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    row: dict[str, Any] = {
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "weather in Boston?"},
            {
                "role": "assistant",
                "content": '<|tool_call_start|>[get_weather(city="Boston")]<|tool_call_end|>',
            },
        ],
        "tools": tools,
    }
    prompts, references = prompts_and_references([row])
    assert prompts == [{"messages": row["messages"][:3], "tools": tools}]
    assert references == ['<|tool_call_start|>[get_weather(city="Boston")]<|tool_call_end|>']


@pytest.mark.parametrize(
    "messages",
    [
        [{"role": "user", "content": "no answer"}],
        [{"role": "assistant", "content": "nothing before me"}],
        [{"role": "user", "content": "x"}, {"role": "assistant", "content": None, "tool_calls": [{}]}],
    ],
)
def test_rows_without_a_usable_reference_are_rejected(messages: list[dict]) -> None:
    with pytest.raises(ValueError, match="row 0"):
        prompts_and_references([{"messages": messages}])


def test_generate_hf_returns_one_string_per_row(tiny: TinyArtifacts, sentiment_rows: list[dict]) -> None:
    outputs = generate_hf(tiny.hf_dir, sentiment_rows, max_new_tokens=8)
    assert len(outputs) == len(sentiment_rows)
    assert all(isinstance(o, str) and "<|im_end|>" not in o for o in outputs)


def test_generate_gguf_returns_one_string_per_row(tiny_gguf: Path, sentiment_rows: list[dict]) -> None:
    outputs = generate_gguf(tiny_gguf, sentiment_rows, n_ctx=512, max_new_tokens=8)
    assert len(outputs) == len(sentiment_rows)
    assert all(isinstance(o, str) for o in outputs)


def test_gguf_runs_report_decode_speed_and_memory_at_their_context(
    tiny_gguf: Path, sentiment_rows: list[dict]
) -> None:
    small, large = RuntimeStats(runtime="llama.cpp"), RuntimeStats(runtime="llama.cpp")
    plain = evaluate_model("gguf", tiny_gguf, sentiment_rows, "classification", LABELS, n_ctx=512)
    measured = evaluate_model(
        "gguf", tiny_gguf, sentiment_rows, "classification", LABELS, n_ctx=512, stats=small
    )
    assert measured.to_dict() == plain.to_dict()  # the measured run (in its own process) answers alike
    evaluate_model("gguf", tiny_gguf, sentiment_rows, "classification", LABELS, n_ctx=32768, stats=large)
    assert small.context == 512 and small.decode_tokens == SPEED_TOKENS and small.runtime == "llama.cpp"
    assert small.decode_tokens_per_s and small.decode_tokens_per_s > 0
    assert small.peak_rss_growth_mb is not None and large.peak_rss_growth_mb is not None
    # the KV cache is allocated for the whole context: 2 attention layers x (K + V) x 2 KV heads x
    # 64 dims x 2 bytes (F16) = 1 KiB per token, so 32768 tokens take 32 MiB more than 512 do
    assert large.peak_rss_growth_mb - small.peak_rss_growth_mb > 24


@pytest.mark.parametrize("kind", ["hf", "gguf"])
def test_evaluate_model_classification(
    kind: str, tiny: TinyArtifacts, tiny_gguf: Path, sentiment_rows: list[dict]
) -> None:
    path = tiny.hf_dir if kind == "hf" else tiny_gguf
    result = evaluate_model(kind, path, sentiment_rows, "classification", LABELS)  # type: ignore[arg-type]
    assert result.metric == "accuracy" and result.n == len(sentiment_rows)
    assert 0.0 <= result.ci_low <= result.score <= result.ci_high <= 1.0
    assert result.parse_rate is not None and 0.0 <= result.parse_rate <= 1.0


def test_evaluate_model_generation(tiny_gguf: Path, sentiment_rows: list[dict]) -> None:
    result = evaluate_model("gguf", tiny_gguf, sentiment_rows, "generation")
    assert result.metric == "token_f1" and result.n == len(sentiment_rows)
    assert 0.0 <= result.score <= 1.0 and result.parse_rate is None


def test_generation_tags_render_identically_in_transformers_and_llama_cpp(tiny: TinyArtifacts) -> None:
    """The training template's {% generation %} markers need no stripping for either runtime:
    transformers and llama-cpp-python 0.3.36's Jinja environment both treat them as no-ops."""
    tagged = (REPO / "recipes" / "chat_templates" / "lfm2.jinja").read_text()
    plain = (tiny.hf_dir / "chat_template.jinja").read_text()
    messages: Any = [
        {"role": "user", "content": "great product"},
        {"role": "assistant", "content": "positive"},
    ]
    tokenizer = AutoTokenizer.from_pretrained(tiny.hf_dir)
    hf: dict[str, Any] = {
        t: tokenizer.apply_chat_template(
            messages, chat_template=t, tokenize=False, add_generation_prompt=True
        )
        for t in (tagged, plain)
    }
    llama = {
        t: Jinja2ChatFormatter(template=t, eos_token="<|im_end|>", bos_token="<|startoftext|>")(
            messages=messages
        ).prompt
        for t in (tagged, plain)
    }
    assert hf[tagged] == hf[plain] == llama[tagged] == llama[plain]
    assert hf[plain].endswith("positive<|im_end|>\n<|im_start|>assistant\n")


def test_a_prompt_the_context_cannot_hold_is_answered_empty_by_both_runtimes(
    tiny_gguf: Path, tiny: TinyArtifacts, sentiment_rows: list[dict], tmp_path: Path
) -> None:
    from export.onnx_export import export_onnx

    long_row = {
        "messages": [
            {"role": "user", "content": "great product " * 80},
            {"role": "assistant", "content": "x"},
        ]
    }
    rows = [sentiment_rows[0], long_row]
    gguf_stats, onnx_stats = RuntimeStats(runtime="llama.cpp"), RuntimeStats(runtime="onnxruntime")
    gguf = generate_gguf(tiny_gguf, rows, n_ctx=128, max_new_tokens=8, stats=gguf_stats)
    onnx_model = export_onnx(tiny.hf_dir, tmp_path / "onnx")[0]
    onnx = generate_onnx(onnx_model, rows, max_new_tokens=8, n_ctx=128, stats=onnx_stats)
    assert gguf[1] == onnx[1] == "" and gguf_stats.over_context == onnx_stats.over_context == 1
    assert onnx_stats.longest_sequence < 128  # the long prompt was never run


def test_an_artifact_run_that_dies_or_hangs_fails_with_what_happened(
    tiny_gguf: Path, sentiment_rows: list[dict]
) -> None:
    def kill_the_runner() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for child in multiprocessing.active_children():
                child.kill()
                return
            time.sleep(0.05)

    threading.Thread(target=kill_the_runner, daemon=True).start()
    with pytest.raises(ArtifactRunError, match="llama.cpp died while scoring"):
        generate_isolated(
            "gguf", tiny_gguf, sentiment_rows, 8, n_ctx=512, stats=RuntimeStats(runtime="llama.cpp")
        )
    with pytest.raises(ArtifactRunError, match="did not finish scoring .* in 0 s"):
        generate_isolated(
            "gguf",
            tiny_gguf,
            sentiment_rows,
            8,
            n_ctx=512,
            stats=RuntimeStats(runtime="llama.cpp"),
            timeout_s=0.01,
        )
    time.sleep(0.5)
    assert not multiprocessing.active_children()  # the hung runner was killed, not left behind


@pytest.mark.parametrize("kind", ["hf", "onnx"])
def test_a_grammar_is_for_the_gguf_runner_only(kind: Any, tmp_path: Path, sentiment_rows: list[dict]) -> None:
    """transformers and onnxruntime (and transformers.js) have no GBNF sampler: asking for one is an
    error before anything loads, not a score that looks constrained and is not."""
    with pytest.raises(ValueError, match="llama.cpp"):
        evaluate_model(
            kind, tmp_path / "none", sentiment_rows, "classification", LABELS, grammar='root ::= "a"'
        )
    with pytest.raises(ValueError, match="llama.cpp"):
        evaluate_model(
            kind,
            tmp_path / "none",
            sentiment_rows,
            "classification",
            LABELS,
            grammar='root ::= "a"',
            stats=RuntimeStats(runtime="x"),
        )


def test_gguf_answers_under_a_grammar_and_none_changes_nothing(
    tiny_gguf: Path, sentiment_rows: list[dict]
) -> None:
    from eval.grammar import grammar_for

    plain = generate_gguf(tiny_gguf, sentiment_rows, n_ctx=512, max_new_tokens=8)
    assert generate_gguf(tiny_gguf, sentiment_rows, n_ctx=512, max_new_tokens=8, grammar=None) == plain
    constrained = generate_gguf(
        tiny_gguf,
        sentiment_rows,
        n_ctx=512,
        max_new_tokens=8,
        grammar=grammar_for("classification", LABELS, None, None),
    )
    assert all(out in LABELS for out in constrained)  # the random model answers only labels
    assert sum(out in LABELS for out in plain) < len(plain)  # not so unconstrained


def test_a_grammar_that_does_not_parse_is_refused_not_a_crash(
    tiny_gguf: Path, sentiment_rows: list[dict]
) -> None:
    # llama-cpp-python 0.3.36 segfaults on it when handed it unchecked
    with pytest.raises(ValueError, match="does not parse"):
        generate_gguf(tiny_gguf, sentiment_rows, n_ctx=512, max_new_tokens=8, grammar="root ::= (")
