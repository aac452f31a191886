"""The base model prompted well for the task: the fair baseline a fine-tune has to beat.

The bare base model answers a held-out row's prompt in a sentence ("The sentiment of this review is
positive, because ..."), which the task's metric scores near 0, so "fine-tuned beats base" shows
little: prompting alone might have got most of the way. The prompted base gets what a careful
engineer would give it without any training:

- the task's instruction: the row's own system turn when it has one (synthetic rows carry it, e.g.
  "... Answer with exactly one of: a, b."), else one written here from the task (the label list
  for classification, "only a JSON object" and the schema's fields for extraction; tool calling's
  tools travel in the row's `tools`, which the chat template lists);
- k worked examples from the training rows, as prior user/assistant turns after the system turn.

The same metric scores it, so fine-tuned minus prompted base is what fine-tuning added over
prompting. The examples are:

- from the training rows only, never a held-out row, and none whose user text is a held-out row's
  (a duplicate would hand the model the answer it is scored on);
- the same k examples in the same order for every row: one prompt, scored on every row;
- balanced across labels for classification (round-robin by answer), so the prompt does not
  teach a majority label;
- deterministic (a seeded shuffle): a rerun builds the same prompt;
- as many as fit: the largest k <= max_shots for which the longest prompted row plus the answer's
  token budget fits `max_prompt_tokens`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from typing import Any

from domain.canonical import normalize
from eval.metrics import TaskType
from eval.runners import MAX_NEW_TOKENS, prompts_and_references

Row = dict[str, Any]
Shot = tuple[str, str]  # (user text, answer): one worked example
# Tokens of a prompt row ({"messages", "tools"?}, as `prompts_and_references` returns it) rendered
# with the chat template and the generation prompt, i.e. what the model reads before answering.
CountTokens = Callable[[Row], int]

# More examples than this rarely help a small model further, and each costs prompt tokens on every
# held-out row (a CPU worker prefills them one row at a time).
MAX_SHOTS = 8


def task_instruction(
    task_type: TaskType, labels: Sequence[str] | None, schema: dict[str, Any] | None = None
) -> str | None:
    """The system turn for rows that have none (customer files); None where the examples and the
    row's `tools` say all there is (tool calling, generation)."""
    if task_type == "classification" and labels:
        return f"Classify the user's message. Answer with exactly one of: {', '.join(labels)}."
    if task_type == "extraction":
        properties = (schema or {}).get("properties")
        fields = f" with the fields {', '.join(properties)}" if isinstance(properties, dict) else ""
        return (
            "Extract the requested information from the user's message. "
            f"Answer with only a JSON object{fields}, and nothing else."
        )
    return None


def with_instruction(row: Row, instruction: str | None) -> Row:
    """`row` with a system turn: its own when it has one (the task's wording, which training saw
    too), else `instruction` put first."""
    messages = row["messages"]
    if instruction is None or (messages and messages[0].get("role") == "system"):
        return row
    return {**row, "messages": [{"role": "system", "content": instruction}, *messages]}


def shot_pair(row: Row) -> Shot | None:
    """A training row as one example: its last user text before the last assistant turn, and that
    turn (the answer). None for a row that cannot be one: a preference pair, no user turn, an empty
    answer, or tool calls not yet rendered as LFM text (as `prompts_and_references` refuses)."""
    if not isinstance(row.get("messages"), list):
        return None
    try:
        (prompt,), (answer,) = prompts_and_references([row])
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    users = [m.get("content") for m in prompt["messages"] if m.get("role") == "user"]
    if not users or not isinstance(users[-1], str) or not users[-1].strip() or not answer.strip():
        return None
    return users[-1], answer


def user_text(row: Row) -> str | None:
    """The user text a row is scored on (its last user turn before the reference), if any."""
    pair = shot_pair(row)
    return pair[0] if pair is not None else None


def candidate_shots(pool: Sequence[Row], held_out: Sequence[Row], labels: Sequence[str] | None) -> list[Shot]:
    """The usable examples of `pool`, one per user text, none whose user text (compared normalised:
    case, punctuation, spacing) is a held-out row's; with `labels`, only answers naming one."""
    seen = {normalize(t) for t in (user_text(r) for r in held_out) if t is not None}
    allowed = {normalize(label) for label in labels} if labels else None
    shots = []
    for shot in filter(None, map(shot_pair, pool)):
        key = normalize(shot[0])
        if key in seen or (allowed is not None and normalize(shot[1]) not in allowed):
            continue
        seen.add(key)  # a repeated training text would spend two slots on one example
        shots.append(shot)
    return shots


def order_shots(shots: list[Shot], task_type: TaskType, seed: int = 0) -> list[Shot]:
    """`shots` in the order they are taken (the first k are used), shuffled with `seed`. For
    classification round-robin by answer: each round holds one example per label that has one
    left, in a shuffled order, so any k is balanced to within one example per label and the last
    example is not always the same label (small models lean to the label they saw last)."""
    rng = random.Random(seed)
    shuffled = sorted(shots)  # a fixed order before the shuffle: the pool's order does not matter
    rng.shuffle(shuffled)
    if task_type != "classification":
        return shuffled
    groups: dict[str, list[Shot]] = {}
    for shot in shuffled:
        groups.setdefault(normalize(shot[1]), []).append(shot)
    ordered: list[Shot] = []
    for i in range(max((len(g) for g in groups.values()), default=0)):
        round_ = [g[i] for _, g in sorted(groups.items()) if i < len(g)]
        rng.shuffle(round_)
        ordered += round_
    return ordered


def insert_shots(row: Row, shots: Sequence[Shot]) -> Row:
    """`row` with `shots` as user/assistant turns after its leading system turn(s), before its
    own conversation."""
    messages = row["messages"]
    start = next((i for i, m in enumerate(messages) if m.get("role") != "system"), len(messages))
    turns = [
        {"role": role, "content": text}
        for user, answer in shots
        for role, text in (("user", user), ("assistant", answer))
    ]
    return {**row, "messages": [*messages[:start], *turns, *messages[start:]]}


def longest_prompt(rows: Sequence[Row], count_tokens: CountTokens) -> int:
    """Tokens of the longest prompt among `rows` (each cut before its reference, as the runners do)."""
    prompts, _ = prompts_and_references(list(rows))
    return max((count_tokens(p) for p in prompts), default=0)


def choose_k(
    rows: Sequence[Row],
    shots: Sequence[Shot],
    count_tokens: CountTokens,
    max_prompt_tokens: int,
    max_new_tokens: int,
    max_shots: int = MAX_SHOTS,
) -> int:
    """The largest k <= min(max_shots, len(shots)) for which every row with the first k shots
    still leaves room for its answer: longest prompt + max_new_tokens <= max_prompt_tokens.
    0 when not even one example fits. A prompt only grows with k, so the first k that fits,
    counting down, is the largest; usually that is the first one tried."""
    for k in range(min(max_shots, len(shots)), 0, -1):
        prompted = [insert_shots(r, shots[:k]) for r in rows]
        if longest_prompt(prompted, count_tokens) + max_new_tokens <= max_prompt_tokens:
            return k
    return 0


def few_shot_rows(
    rows: Sequence[Row],
    shots_pool: Sequence[Row],
    task_type: TaskType,
    labels: Sequence[str] | None,
    count_tokens: CountTokens,
    max_prompt_tokens: int,
    max_shots: int = MAX_SHOTS,
    seed: int = 0,
    *,
    schema: dict[str, Any] | None = None,
    max_new_tokens: int | None = None,
) -> tuple[list[Row], int]:
    """The held-out `rows` as the prompted base reads them: each with the task's instruction (its
    own system turn, else `task_instruction`) and the same k examples from `shots_pool` (the
    training rows) before its conversation. The last assistant turn stays the reference.

    Args:
        count_tokens: tokens of a prompt row; in production the model's tokenizer with its chat
            template (eval/scoring.py).
        max_prompt_tokens: the context the prompts and the answer must fit in.
        max_new_tokens: the answer's budget; defaults to the runners' `MAX_NEW_TOKENS[task_type]`.

    Returns:
        The prompted rows, and k (0: the instruction alone; no example fits, or none is usable).
    """
    max_new = max_new_tokens or MAX_NEW_TOKENS[task_type]
    instruction = task_instruction(task_type, labels, schema)
    instructed = [with_instruction(r, instruction) for r in rows]
    # a classification example must answer with one of the labels the scorer recognises
    usable = candidate_shots(shots_pool, rows, labels if task_type == "classification" else None)
    ordered = order_shots(usable, task_type, seed)
    k = choose_k(instructed, ordered, count_tokens, max_prompt_tokens, max_new, max_shots)
    return [insert_shots(r, ordered[:k]) for r in instructed], k
