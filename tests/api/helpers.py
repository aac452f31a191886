from __future__ import annotations

import json
from typing import Any


def chat_row(user: str, answer: str, system: str | None = None) -> dict[str, Any]:
    msgs = [{"role": "system", "content": system}] if system else []
    return {"messages": [*msgs, {"role": "user", "content": user}, {"role": "assistant", "content": answer}]}


def jsonl(rows: list[Any]) -> bytes:
    return "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows).encode()


REVIEWS = [
    ("I love this product, great quality", "positive"),
    ("Terrible, it broke after a day", "negative"),
    ("Excellent price and great service", "positive"),
    ("Awful screen and bad battery", "negative"),
    ("Good value, I love it", "positive"),
    ("Bad quality, I hate it", "negative"),
]


def sentiment_rows(n: int) -> list[dict[str, Any]]:
    system = "Classify the sentiment of the review. Answer with exactly one of: positive, negative."
    return [
        chat_row(REVIEWS[i % len(REVIEWS)][0] + f" ({i})", REVIEWS[i % len(REVIEWS)][1], system)
        for i in range(n)
    ]


def preference_rows(n: int, style: str = "trl") -> list[dict[str, Any]]:
    """Sentiment pairs: the right label chosen, the wrong one rejected; TRL's or OpenAI's DPO format."""
    rows = []
    for i in range(n):
        text, label = REVIEWS[i % len(REVIEWS)]
        wrong = "negative" if label == "positive" else "positive"
        prompt = [{"role": "user", "content": f"Sentiment of: {text} ({i})"}]
        chosen, rejected = (
            [{"role": "assistant", "content": label}],
            [{"role": "assistant", "content": wrong}],
        )
        if style == "openai":
            rows.append(
                {"input": {"messages": prompt}, "preferred_output": chosen, "non_preferred_output": rejected}
            )
        else:
            rows.append({"prompt": prompt, "chosen": chosen, "rejected": rejected})
    return rows
