"""A small fixed general-ability probe: did a narrow fine-tune make the model forget the basics?

`probe_set.jsonl` (next to this file) holds 64 short questions written for this project, each with
answers a machine can check: one-number arithmetic, capitals and simple facts, yes/no questions,
one-word answers, and copy/transform tasks (change a word's case, reverse or sort a short list).
A small instruct model gets most of them; a model fine-tuned into answering "positive" to
everything gets almost none. The gate's `max_probe_drop` compares base and fine-tuned on it.

How an answer is checked (`item_correct`):

- "contains" (the default): the answer's words occur, in order and contiguous, among the
  prediction's words. Small instruct models answer in a sentence ("The capital of France is
  Paris."), which knows the answer; strict equality would score them near 0 and a probe stuck at
  0 cannot show a drop. Predictions are capped at `PROBE_MAX_NEW_TOKENS`, so a model cannot pass
  by rambling through every number. No question's answer occurs in its own prompt (the tests check
  it), so echoing the question scores nothing.
- "starts": the prediction's first words are the answer. For yes/no, where "No, it is not, yes"
  must not pass on "yes" somewhere inside.

Words are compared after `domain.canonical.normalize` (lower case, punctuation dropped), except for
items marked `case_sensitive` (uppercase / lowercase a word), where case is the whole point.
`exact_match` (the whole normalised prediction is an answer) is reported alongside: it says how
well the model keeps to "reply with the number only"; the gate reads the headline `answer_match`.

The gate reads a *drop*, base minus fine-tuned, on the same items with the same greedy decoding,
so whatever leniency the matching has applies to both sides alike.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from domain.canonical import normalize
from eval.metrics import EvalResult, mean_score

PROBE_PATH = Path(__file__).with_name("probe_set.jsonl")
# Most answers take 1-8 tokens; SmolLM2-135M's "The capital of France is Paris." is 7 and its
# longest correct sentence here 12. At most 12 x 64 = 768 decoded tokens per model. Measured in
# transformers on 2 shared CPU cores with the first 32 items: 6-13 s for the tiny test LFM2, 55 s
# for SmolLM2-135M (18 s after a fine-tune made it terse: answers that stop early cost less).
# 64 since the 32 proved too few to tell a fine-tune's forgetting from the base's luck on
# SmolLM2-135M (docs/benchmarks.md). A drop's paired standard error grows with the items that
# move either way: 0.077-0.090 measured on 64 for SmolLM2-135M fine-tunes (20-22 lost, 6-13 gained).
PROBE_MAX_NEW_TOKENS = 12

MatchRule = Literal["contains", "starts"]


@dataclass(frozen=True)
class ProbeItem:
    id: str
    kind: str  # "arithmetic", "fact", "yes_no", "one_word" or "transform"
    prompt: str
    answers: tuple[str, ...]  # any of them is right; the first is the reference
    match: MatchRule = "contains"
    case_sensitive: bool = False


def _item(data: dict[str, Any], line: int) -> ProbeItem:
    try:
        item = ProbeItem(
            id=data["id"],
            kind=data["kind"],
            prompt=data["prompt"],
            answers=tuple(data["answers"]),
            match=data.get("match", "contains"),
            case_sensitive=bool(data.get("case_sensitive", False)),
        )
    except (KeyError, TypeError) as e:
        raise ValueError(f"probe line {line}: {e!r}") from e
    if item.match not in ("contains", "starts"):
        raise ValueError(f"probe line {line}: match must be 'contains' or 'starts', not {item.match!r}")
    if not item.answers or not all(_words(a, item.case_sensitive) for a in item.answers):
        raise ValueError(f"probe line {line}: every answer needs at least one word")
    return item


def load_probe(path: Path = PROBE_PATH) -> list[ProbeItem]:
    """The probe's items, in file order. ValueError naming the line of a malformed or duplicate item."""
    items: list[ProbeItem] = []
    for line, text in enumerate(path.read_text().splitlines(), start=1):
        if text.strip():
            items.append(_item(json.loads(text), line))
    ids = [i.id for i in items]
    if len(set(ids)) != len(ids):
        raise ValueError(f"probe ids must be unique: {sorted({i for i in ids if ids.count(i) > 1})}")
    return items


def probe_rows(items: Sequence[ProbeItem]) -> list[dict[str, Any]]:
    """Chat rows for the runners: the question as the only user turn, the reference as the answer
    (the runners generate from the turns before it). No system prompt: the probe asks how the model
    behaves by default, not inside the task's prompt."""
    return [
        {"messages": [{"role": "user", "content": i.prompt}, {"role": "assistant", "content": i.answers[0]}]}
        for i in items
    ]


def _words(text: str, case_sensitive: bool) -> list[str]:
    return normalize(text, lower=not case_sensitive).split()


def _has_run(words: list[str], run: list[str]) -> bool:
    return any(words[i : i + len(run)] == run for i in range(len(words) - len(run) + 1))


def item_correct(item: ProbeItem, prediction: str) -> bool:
    """Whether `prediction` gives one of the item's answers, by the item's rule (module docstring)."""
    words = _words(prediction, item.case_sensitive)
    for answer in item.answers:
        run = _words(answer, item.case_sensitive)
        found = words[: len(run)] == run if item.match == "starts" else _has_run(words, run)
        if found:
            return True
    return False


def item_exact(item: ProbeItem, prediction: str) -> bool:
    """Whether the whole prediction, normalised, is one of the answers ("Paris." yes, "It is Paris" no)."""
    words = _words(prediction, item.case_sensitive)
    return any(words == _words(a, item.case_sensitive) for a in item.answers)


def score_probe(items: Sequence[ProbeItem], predictions: Sequence[str]) -> EvalResult:
    """`answer_match` (headline) and `exact_match`, each the share of items right with its bootstrap
    95% CI; `report["per_kind"]` holds answer_match per kind of item, for a human reading a drop;
    `per_item` each item's answer_match (1 or 0), so a drop can be read item by item against the
    base's (eval/gate.py: items lost and gained)."""
    if len(items) != len(predictions) or not items:
        raise ValueError(f"need one prediction per probe item ({len(predictions)} for {len(items)})")
    hits = np.array([item_correct(i, p) for i, p in zip(items, predictions, strict=True)], dtype=float)
    exact = [item_exact(i, p) for i, p in zip(items, predictions, strict=True)]
    metrics = {"answer_match": mean_score(hits), "exact_match": mean_score(exact)}
    kinds = sorted({i.kind for i in items})
    kind_of = np.array([i.kind for i in items])
    per_kind = {k: float(hits[kind_of == k].mean()) for k in kinds}
    top = metrics["answer_match"]
    return EvalResult(
        "answer_match",
        top.score,
        len(items),
        top.ci_low,
        top.ci_high,
        metrics=metrics,
        per_item=[float(h) for h in hits],
        report={"per_kind": per_kind},
    )


def run_probe(
    kind: Literal["hf", "gguf"],
    path: Path,
    items: Sequence[ProbeItem] | None = None,
    max_new_tokens: int = PROBE_MAX_NEW_TOKENS,
    device: Literal["cpu", "cuda"] = "cpu",
) -> EvalResult:
    """Answer the probe with a transformers checkpoint ("hf", on `device`: "cuda" decodes in bf16
    batches) or a GGUF in llama.cpp ("gguf"), greedily through the eval runners, and score it
    (`score_probe`)."""
    from eval.runners import generate

    items = list(items) if items is not None else load_probe()
    return score_probe(items, generate(kind, path, probe_rows(items), max_new_tokens, device=device))
