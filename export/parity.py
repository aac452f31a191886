"""Runtime parity: does a GGUF behave in llama.cpp as its checkpoint does in transformers?

Our eval scores a checkpoint in transformers and each exported GGUF in llama.cpp (eval/runners.py),
and a customer's device runs the GGUF. Those numbers describe one model only when both runtimes
build the same prompt and compute the same next tokens. The pieces here check that, each doing
what its runtime does in production:

- prompt: transformers' `apply_chat_template` against the template embedded in the GGUF
  (`tokenizer.chat_template`), rendered by the formatter llama-cpp-python builds from it;
- tokens: the HF tokenizer against llama.cpp's own tokenizer, on that text;
- decoding: greedy argmax one token at a time in each runtime with every step's logits kept, so
  a divergence can be told apart from a near-tie that rounding is entitled to flip.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from eval.gguf_chat import Message, Tools
from eval.runtime_stats import default_threads


@dataclass(frozen=True)
class Greedy:
    """A greedy continuation: the chosen tokens and the logits each was chosen from."""

    tokens: list[int]
    logits: np.ndarray  # (len(tokens), vocab), float32


def first_difference(a: list[int], b: list[int]) -> int | None:
    """First index where `a` and `b` differ (a length difference counts), or None when equal."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def describe_difference(a: list[int], b: list[int], window: int = 4) -> str:
    """Where two id lists (transformers first, llama.cpp second) part, for assertion messages."""
    i = first_difference(a, b)
    if i is None:
        return f"identical ({len(a)} ids)"
    lo = max(i - window, 0)
    return (
        f"first difference at position {i} (lengths {len(a)} vs {len(b)}): transformers "
        f"{a[lo : i + window]} vs llama.cpp {b[lo : i + window]}, from position {lo}"
    )


def describe_text_difference(a: str, b: str, window: int = 40) -> str:
    """Where two strings (transformers first, llama.cpp second) part, with context either side."""
    i = next((k for k, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    lo = max(i - window, 0)
    return (
        f"first difference at character {i} (lengths {len(a)} vs {len(b)}): "
        f"transformers {a[lo : i + window]!r} vs llama.cpp {b[lo : i + window]!r}"
    )


def relative_logit_deviation(reference: np.ndarray, other: np.ndarray) -> float:
    """max |other - reference| over every position and token, as a fraction of max |reference|.

    Relative, so one bound fits a random model (logits within +-2) and a trained one (+-40).
    """
    return float(np.max(np.abs(other - reference)) / np.max(np.abs(reference)))


def explain_divergence(hf: Greedy, gguf: Greedy) -> str:
    """Why two greedy runs part: each runtime's preference between the two tokens at the first
    differing step (the contexts are still identical there). A gap well below the runtimes' usual
    logit deviation is a near-tie decided by rounding; a large one is a real disagreement."""
    i = first_difference(hf.tokens, gguf.tokens)
    if i is None or i >= min(len(hf.tokens), len(gguf.tokens)):
        return describe_difference(hf.tokens, gguf.tokens)
    a, b = hf.tokens[i], gguf.tokens[i]
    hf_gap = float(hf.logits[i][a] - hf.logits[i][b])
    gguf_gap = float(gguf.logits[i][b] - gguf.logits[i][a])
    step_dev = float(np.max(np.abs(hf.logits[i] - gguf.logits[i])))
    return (
        f"{describe_difference(hf.tokens, gguf.tokens)}; at step {i} transformers prefers {a} over "
        f"{b} by {hf_gap:.4f} logits, llama.cpp prefers {b} by {gguf_gap:.4f}; max |logit difference| "
        f"at that step {step_dev:.4f}"
    )


# ---- transformers ------------------------------------------------------------------------------


def render_hf(
    tokenizer: Any, messages: list[Message], tools: Tools = None, *, generation: bool = True
) -> str:
    """The prompt transformers builds with the checkpoint's own chat template."""
    return str(
        tokenizer.apply_chat_template(messages, tools=tools, add_generation_prompt=generation, tokenize=False)
    )


def tokenize_hf(
    tokenizer: Any, messages: list[Message], tools: Tools = None, *, generation: bool = True
) -> list[int]:
    """The prompt ids transformers feeds the model, exactly as eval/runners.generate_hf gets them."""
    encoded = tokenizer.apply_chat_template(
        messages, tools=tools, add_generation_prompt=generation, tokenize=True, return_dict=True
    )
    return [int(t) for t in encoded["input_ids"]]


def greedy_hf(model: Any, prompt: list[int], n_tokens: int) -> Greedy:
    """`n_tokens` greedy tokens from a transformers causal LM, not stopping at EOS.

    A plain loop over the KV cache rather than `generate`: `generate` fills unset stop criteria
    from the checkpoint's generation_config, and parity wants exactly `n_tokens` steps in both
    runtimes (past an EOS too: more tokens compared, same arithmetic).
    """
    import torch

    tokens: list[int] = []
    rows: list[np.ndarray] = []
    with torch.inference_mode():
        out = model(input_ids=torch.tensor([prompt]), use_cache=True)
        for _ in range(n_tokens):
            logits = out.logits[0, -1].float()
            token = int(torch.argmax(logits))  # first of equal maxima, as llama.cpp's greedy sampler
            tokens.append(token)
            rows.append(logits.numpy().copy())
            out = model(
                input_ids=torch.tensor([[token]]), past_key_values=out.past_key_values, use_cache=True
            )
    return Greedy(tokens, np.stack(rows))


def forced_logits_hf(model: Any, ids: list[int]) -> np.ndarray:
    """Next-token logits at every position of `ids`, in one forward pass: (len(ids), vocab)."""
    import torch

    with torch.inference_mode():
        return np.asarray(model(input_ids=torch.tensor([ids])).logits[0].float().numpy())


# ---- llama.cpp ---------------------------------------------------------------------------------


def load_gguf(path: str, n_ctx: int = 1024, n_threads: int | None = None) -> Any:
    """A llama-cpp-python model that keeps every position's logits.

    `logits_all` because greedy and forced scoring read them: without it llama-cpp-python samples
    inside llama.cpp and keeps none. Threads as eval/runners.generate_gguf picks them.
    """
    from llama_cpp import Llama

    n_threads = n_threads or default_threads()
    return Llama(model_path=path, n_ctx=n_ctx, n_threads=n_threads, logits_all=True, verbose=False, seed=0)


def detokenize_gguf(llm: Any, ids: list[int], *, special: bool) -> str:
    # errors="ignore" as llama-cpp-python's completions decode (see eval/runners.generate_gguf).
    return bytes(llm.detokenize(ids, special=special)).decode("utf-8", errors="ignore")


def greedy_gguf(llm: Any, prompt: list[int], n_tokens: int) -> Greedy:
    """`n_tokens` greedy tokens from llama.cpp (argmax of its logits), not stopping at EOS."""
    llm.reset()
    llm.eval(prompt)
    tokens: list[int] = []
    rows: list[np.ndarray] = []
    for _ in range(n_tokens):
        logits = np.array(llm.scores[llm.n_tokens - 1], dtype=np.float32)
        token = int(np.argmax(logits))
        tokens.append(token)
        rows.append(logits)
        llm.eval([token])
    return Greedy(tokens, np.stack(rows))


def forced_logits_gguf(llm: Any, ids: list[int]) -> np.ndarray:
    """Next-token logits at every position of `ids`: (len(ids), vocab)."""
    llm.reset()
    llm.eval(ids)
    return np.array(llm.scores[: len(ids)], dtype=np.float32)


def continuation_logprobs(logits: np.ndarray, ids: list[int], start: int) -> np.ndarray:
    """Log-probability of each of `ids[start:]` given what precedes it, from forced logits."""
    rows = logits[start - 1 : len(ids) - 1].astype(np.float64)
    shifted = rows - rows.max(axis=1, keepdims=True)
    log_softmax = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return np.asarray(log_softmax[np.arange(len(rows)), ids[start:]])
