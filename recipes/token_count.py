"""Token counts of chat rows exactly as training will see them: the base's own tokenizer, its
training chat template (tools and LFM tool calls included), truncated at the recipe's max length."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from recipes.chat_data import normalize_row, training_template


@dataclass(frozen=True)
class TokenStats:
    rows: int
    tokens: int  # after truncation; what one epoch trains on
    longest: int
    truncated_rows: int

    @property
    def mean(self) -> float:
        return self.tokens / self.rows if self.rows else 0.0


def load_tokenizer(model_dir: Path) -> Any:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    tokenizer.chat_template = training_template(model_dir)
    return tokenizer


def row_tokens(tokenizer: Any, row: dict[str, Any]) -> int:
    row = normalize_row(row)
    tools = row.get("tools")
    if isinstance(tools, str):
        tools = json.loads(tools)
    ids = tokenizer.apply_chat_template(row["messages"], tools=tools or None, tokenize=True)
    if hasattr(ids, "keys"):  # transformers 5 returns a BatchEncoding, whose len() counts its keys
        ids = ids["input_ids"]
    return len(ids)


def count_tokens(model_dir: Path, rows: list[dict[str, Any]], max_length: int) -> TokenStats:
    tokenizer = load_tokenizer(model_dir)
    lengths = [row_tokens(tokenizer, r) for r in rows]
    return TokenStats(
        rows=len(rows),
        tokens=sum(min(n, max_length) for n in lengths),
        longest=min(max(lengths, default=0), max_length),
        truncated_rows=sum(n > max_length for n in lengths),
    )
