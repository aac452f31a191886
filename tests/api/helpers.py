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
