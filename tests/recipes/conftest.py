"""Shared fixtures for the recipe tests: a tiny random LFM2 and a small sentiment dataset."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from recipes.chat_data import TEMPLATES_DIR
from tests.support.tiny_lfm2 import build_tiny_lfm2

LFM2_TEMPLATE = (TEMPLATES_DIR / "lfm2.jinja").read_text()

_POSITIVE = ["great product", "excellent quality", "love the screen", "good price"]
_NEGATIVE = ["terrible product", "awful quality", "hate the screen", "bad price"]
_MORE = ["service", "battery"]


def sentiment_rows(n: int = 32) -> list[dict[str, Any]]:
    """`Review: great product -> positive` style rows, alternating labels."""
    rows = []
    for i in range(n):
        texts, label = (_POSITIVE, "positive") if i % 2 == 0 else (_NEGATIVE, "negative")
        text = texts[(i // 2) % len(texts)]
        if i >= 16:  # a second wording so 32 rows are not 4 repeats
            text = f"{text.split()[0]} the {_MORE[i % 2]}"
        rows.append(
            {
                "messages": [
                    {"role": "system", "content": "Classify the sentiment of the review."},
                    {"role": "user", "content": f"Review: {text}"},
                    {"role": "assistant", "content": label},
                ]
            }
        )
    return rows


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


@pytest.fixture(scope="module")
def tiny_lfm2(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A ~4M-param random LFM2 checkpoint with the LFM2 training template, built once per module."""
    return build_tiny_lfm2(tmp_path_factory.mktemp("models") / "tiny-lfm2", LFM2_TEMPLATE)
