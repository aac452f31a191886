"""Run an exported LFM2 ONNX decoder (export/onnx_export.py) in onnxruntime, one step at a time.

The graph is stateful: each call takes the new tokens plus the conv windows and attention keys/values
the previous call returned, so decoding costs one token's compute per step, as in the browser.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def state_names(config: Any) -> tuple[list[str], list[str]]:
    """(past input names, present output names) in layer order, two per attention layer."""
    past, present = [], []
    for i, kind in enumerate(config.layer_types):
        if kind == "conv":
            past.append(f"past_conv.{i}")
            present.append(f"present_conv.{i}")
        else:
            past += [f"past_key_values.{i}.key", f"past_key_values.{i}.value"]
            present += [f"present.{i}.key", f"present.{i}.value"]
    return past, present


def empty_state(config: Any, batch: int = 1, past: int = 0) -> dict[str, np.ndarray]:
    """The state of a first call: zero conv windows and `past` (0: none) zero keys/values."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    names, _ = state_names(config)
    state = {}
    for name in names:
        if name.startswith("past_conv"):
            state[name] = np.zeros((batch, config.hidden_size, config.conv_L_cache), np.float32)
        else:
            state[name] = np.zeros((batch, config.num_key_value_heads, past, head_dim), np.float32)
    return state


class DecoderSession:
    """A stateful LFM2 ONNX decoder in onnxruntime, batch 1: `step(ids)` feeds new tokens, keeps
    the returned state for the next call, and returns the new positions' logits (1, T, vocab)."""

    def __init__(self, session: Any, config: Any) -> None:
        self.session, self.config = session, config
        self.past_names, _ = state_names(config)
        self.reset()

    def reset(self) -> None:
        self.state = empty_state(self.config)
        self.seen = 0

    def step(self, ids: list[int]) -> np.ndarray:
        total = self.seen + len(ids)
        feed = {
            "input_ids": np.array([ids], np.int64),
            "attention_mask": np.ones((1, total), np.int64),
            "position_ids": np.arange(self.seen, total, dtype=np.int64)[None],
            **self.state,
        }
        logits, *present = self.session.run(None, feed)
        self.state = dict(zip(self.past_names, present, strict=True))
        self.seen = total
        return np.asarray(logits)


def decoder_session(onnx_path: Path, config: Any = None, threads: int | None = None) -> DecoderSession:
    """Open an exported graph; `config` defaults to the LFM2 config at the artifact root, one level
    above `onnx/`."""
    import onnxruntime as ort
    from transformers import AutoConfig

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    return DecoderSession(session, config or AutoConfig.from_pretrained(onnx_path.parent.parent))
