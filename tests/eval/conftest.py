from __future__ import annotations

from pathlib import Path

import pytest

from tests.export.tiny_artifacts import TinyArtifacts, tiny_artifacts, tiny_quantized


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> TinyArtifacts:
    """Tiny random LFM2 (HF dir) and its F16 GGUF, shared with tests/export."""
    return tiny_artifacts(tmp_path_factory.getbasetemp())


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_quantized(tmp_path_factory.getbasetemp(), "Q4_K_M")


@pytest.fixture
def sentiment_rows() -> list[dict]:
    """Held-out classification rows: system prompt, user text, assistant label."""
    system = {"role": "system", "content": "Classify the sentiment: positive, negative or neutral."}
    texts = [
        ("great product, love it", "positive"),
        ("terrible battery", "negative"),
        ("the screen is a screen", "neutral"),
        ("awful service, bad price", "negative"),
    ]
    return [
        {"messages": [system, {"role": "user", "content": text}, {"role": "assistant", "content": label}]}
        for text, label in texts
    ]
