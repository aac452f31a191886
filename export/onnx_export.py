"""LFM2 to ONNX for the browser: a stateful decoder exported with `torch.onnx.export`, its weights
quantized to 4 bits by onnxruntime's MatMulNBits quantizer, and checked in onnxruntime against the
torch logits before it ships.

Why a wrapper and not the model's own forward: transformers' LFM2 forward picks its conv path from
Python-level conditions (prefill vs one-token decode, cache recording), which tracing would freeze
into one branch, and optimum has no LFM2 exporter for transformers 5. `StatefulLfm2` runs the same
modules (projections, norms, rotary embedding, MLP; only the glue is here) through one path that is
right for any number of new tokens after any number of past ones:

- conv layer: the state is the last `L` inputs of the depthwise conv (L = conv_L_cache, 3 on LFM2),
  as in transformers' hybrid cache. cat(state, new) has L + T columns; a conv without padding gives
  T + 1 outputs, the last T of which are the new tokens'. The new state is the last L columns.
  With a zero state this is exactly the causal (left-padded) conv of a fresh prefill.
- attention layer: new keys/values are appended to the past ones; the mask lets query t (absolute
  position S - T + t, S = past + new) see keys 0..S-T+t that `attention_mask` does not mark as
  padding.

Inputs and outputs follow the names transformers.js uses for LFM2 (its getCacheShapes and
getPastKeyValues): inputs `input_ids`, `attention_mask` (past + new), `position_ids`,
`past_conv.{i}` (batch, hidden, L) for conv layers and `past_key_values.{i}.key` / `.value`
(batch, kv heads, past, head dim) for attention layers; outputs `logits` (of the last position
only), `present_conv.{i}`, `present.{i}.key` / `.value`. A first call passes zero conv states and
zero-length key/values.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from eval.onnx_decoder import decoder_session, empty_state, state_names

MODEL_DIR = "onnx"  # transformers.js looks for <repo>/onnx/model_<dtype>.onnx
FP32_NAME = "model.onnx"
Q4_NAME = "model_q4.onnx"
OPSET = 18
# MatMulNBits blocks: 32 weights share a scale (transformers.js/onnx-community's q4 uses 32 too).
Q4_BLOCK = 32
# What the browser runtime needs beside the graph: config (layer types, sizes), tokenizer, template.
_SIDE_FILES = (
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "chat_template.jinja",
)


class OnnxExportError(ValueError):
    """The model cannot be exported to ONNX, or the export does not match torch."""


def _wrapper(model: Any) -> Any:
    import torch
    from torch import nn
    from transformers.models.lfm2 import modeling_lfm2 as lfm2

    class StatefulLfm2(nn.Module):
        """One decoding step of an LFM2 causal LM with its conv and attention state as tensors."""

        def __init__(self, causal_lm: Any) -> None:
            super().__init__()
            self.lm = causal_lm
            self.layer_types = causal_lm.config.layer_types

        def _conv(self, conv: Any, x: Any, state: Any, new_mask: Any) -> tuple[Any, Any]:
            x = lfm2.apply_mask_to_padding_states(x, new_mask)
            b, c, h = conv.in_proj(x).transpose(-1, -2).chunk(3, dim=-2)
            window = torch.cat([state, b * h], dim=-1)  # (batch, hidden, L + T)
            weight = conv.conv.weight  # (hidden, 1, L): depthwise
            out = nn.functional.conv1d(window, weight, conv.conv.bias, groups=weight.shape[0])
            out = out[:, :, 1:]  # L + T - L + 1 = T + 1 outputs; the first belongs to the past
            y = conv.out_proj((c * out).transpose(-1, -2).contiguous())
            return y, window[:, :, -state.shape[-1] :]

        def _attention(self, attn: Any, x: Any, pos: Any, mask: Any, k_past: Any, v_past: Any) -> tuple:
            batch, length = x.shape[0], x.shape[1]
            shape = (batch, length, -1, attn.head_dim)
            q = attn.q_layernorm(attn.q_proj(x).view(shape)).transpose(1, 2)
            k = attn.k_layernorm(attn.k_proj(x).view(shape)).transpose(1, 2)
            v = attn.v_proj(x).view(shape).transpose(1, 2)
            q, k = lfm2.apply_rotary_pos_emb(q, k, *pos)
            k, v = torch.cat([k_past, k], dim=2), torch.cat([v_past, v], dim=2)
            out, _ = lfm2.eager_attention_forward(attn, q, k, v, mask, scaling=attn.scaling)
            return attn.out_proj(out.reshape(batch, length, -1)), k, v

        def _mask(self, attention_mask: Any, new: int) -> Any:
            total = attention_mask.shape[1]
            keys = torch.arange(total)
            queries = keys[total - new :]
            allowed = (keys[None, :] <= queries[:, None])[None, None] & attention_mask[
                :, None, None, :
            ].bool()
            # finfo.min, not -inf: a fully masked (padding) query row stays finite after softmax
            return torch.where(allowed, 0.0, torch.finfo(torch.float32).min)

        def forward(self, input_ids: Any, attention_mask: Any, position_ids: Any, *past: Any) -> tuple:
            body = self.lm.model
            new = input_ids.shape[1]
            x = body.embed_tokens(input_ids)
            pos = body.rotary_emb(x, position_ids=position_ids)
            mask, new_mask = self._mask(attention_mask, new), attention_mask[:, -new:]
            present, it = [], iter(past)
            for layer, kind in zip(body.layers, self.layer_types, strict=True):
                h = layer.operator_norm(x)
                if kind == "conv":
                    h, state = self._conv(layer.conv, h, next(it), new_mask)
                    present.append(state)
                else:
                    h, k, v = self._attention(layer.self_attn, h, pos, mask, next(it), next(it))
                    present += [k, v]
                x = x + h
                x = x + layer.feed_forward(layer.ffn_norm(x))
            # the last position only: a decoder samples from nothing else, and the full (batch,
            # length, 65536) fp32 logits of a long prefill would be its largest buffer (1 GB at 4k)
            logits = self.lm.lm_head(body.embedding_norm(x[:, -1:, :]))
            return (logits, *present)

    return StatefulLfm2(model)


def _check_lfm2(config: Any) -> None:
    if getattr(config, "model_type", None) != "lfm2":
        kind = getattr(config, "model_type", "?")
        raise OnnxExportError(f"ONNX export supports LFM2 models only; this checkpoint is {kind!r}")


def _trace(model: Any, out: Path) -> None:
    """torch.onnx.export (TorchScript tracer) of StatefulLfm2 with dynamic batch/length axes."""
    import torch

    config = model.config
    past_names, present_names = state_names(config)
    # Trace with two past tokens and three new ones, so no length is 0 or 1 (which tracing could
    # specialise on); the axes below stay symbolic.
    ids = torch.ones((1, 3), dtype=torch.long)
    mask = torch.ones((1, 5), dtype=torch.long)
    positions = torch.tensor([[2, 3, 4]])
    state = [torch.from_numpy(v) for v in empty_state(config, past=2).values()]
    axes: dict[str, dict[int, str]] = {
        "input_ids": {0: "batch", 1: "sequence"},
        "attention_mask": {0: "batch", 1: "total_sequence"},
        "position_ids": {0: "batch", 1: "sequence"},
        "logits": {0: "batch", 1: "sequence"},
    }
    for name in past_names + present_names:
        axes[name] = (
            {0: "batch"} if "conv" in name else {0: "batch", 2: "past" if "past" in name else "total"}
        )
    with torch.no_grad():
        torch.onnx.export(
            _wrapper(model),
            (ids, mask, positions, *state),
            str(out),
            input_names=["input_ids", "attention_mask", "position_ids", *past_names],
            output_names=["logits", *present_names],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )


# protobuf cannot hold a file over 2 GiB; past this the q4 weights go to `<name>_data` beside it,
# the external-data name transformers.js looks for. LFM2-1.2B's q4 is ~1.3 GB, LFM2-2.6B's ~2.9.
EXTERNAL_DATA_BYTES = 1_800_000_000


def quantize_q4(src: Path, dst: Path) -> list[Path]:
    """4-bit block-wise weights (MatMulNBits, symmetric, blocks of Q4_BLOCK) with fp32 activations:
    the q4 that onnxruntime-web runs on WebGPU and on the CPU (WASM). Returns the written files."""
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    # it logs every node it skips at INFO, thousands of lines for a real model
    logging.getLogger("onnxruntime.quantization.matmul_nbits_quantizer").setLevel(logging.WARNING)
    quantizer = MatMulNBitsQuantizer(onnx.load(str(src)), bits=4, block_size=Q4_BLOCK, is_symmetric=True)
    quantizer.process()
    proto = quantizer.model.model
    weights = sum(len(t.raw_data) for t in proto.graph.initializer)
    if weights < EXTERNAL_DATA_BYTES:
        onnx.save_model(proto, str(dst))
        return [dst]
    data = dst.with_name(dst.name + "_data")
    onnx.save_model(
        proto, str(dst), save_as_external_data=True, all_tensors_to_one_file=True, location=data.name
    )
    return [dst, data]


def export_onnx(merged_dir: Path, out_dir: Path, *, keep_fp32: bool = False) -> list[Path]:
    """Export `merged_dir` (an LFM2 `save_pretrained` dir) to `out_dir` in the transformers.js
    layout: `onnx/model_q4.onnx` (+ `model_q4.onnx_data` past 1.8 GB) plus config, tokenizer and
    chat template at the top. The fp32 graph is traced into a scratch folder (over 2 GB the
    exporter writes one file per weight there) and removed unless `keep_fp32`.

    Raises:
        OnnxExportError: not an LFM2 checkpoint, or the export disagrees with torch (parity check).
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    _check_lfm2(AutoConfig.from_pretrained(merged_dir))
    onnx_dir = out_dir / MODEL_DIR
    onnx_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".fp32-") as scratch:
        fp32 = Path(scratch) / FP32_NAME
        model = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).eval()
        _trace(model, fp32)
        check_parity(model, fp32)
        del model  # the torch weights are not needed past the parity check
        files = quantize_q4(fp32, onnx_dir / Q4_NAME)
        if keep_fp32:
            files.insert(0, Path(shutil.copy2(fp32, onnx_dir / FP32_NAME)))
    for name in _SIDE_FILES:
        if (merged_dir / name).is_file():
            files.append(Path(shutil.copy2(merged_dir / name, out_dir / name)))
    return files


# fp32 ONNX against fp32 torch differs only by kernel order: 1e-4 of the logit range is ~10x what
# we measured on the tiny LFM2 (see tests/export/test_onnx_export.py) and far below a wrong state.
PARITY_TOLERANCE = 1e-4


def check_parity(model: Any, onnx_path: Path, prompt_len: int = 6, steps: int = 3) -> float:
    """Run the exported graph in onnxruntime as a decoder would (prefill `prompt_len` tokens, then
    `steps` single-token steps feeding the state back) and compare the logits of each call with
    the same positions of one full-sequence torch forward. Returns the largest difference relative
    to the logit range.

    Raises:
        OnnxExportError: the difference is over PARITY_TOLERANCE.
    """
    import torch

    seed = torch.Generator().manual_seed(0)
    ids = torch.randint(0, model.config.vocab_size, (1, prompt_len + steps), generator=seed)
    with torch.no_grad():
        reference = model(input_ids=ids).logits[0, prompt_len - 1 :].numpy()
    session = decoder_session(onnx_path, model.config)
    got = [session.step(ids[0, :prompt_len].tolist())[0, -1]]
    got += [session.step([int(t)])[0, -1] for t in ids[0, prompt_len:]]
    diff = float(np.abs(np.stack(got) - reference).max() / (reference.max() - reference.min()))
    if diff > PARITY_TOLERANCE:
        raise OnnxExportError(
            f"ONNX export disagrees with torch: max logit difference {diff:.2e} of the logit range "
            f"(allowed {PARITY_TOLERANCE:.0e})"
        )
    return diff
