"""A LoRA adapter converted with llama.cpp's convert_lora_to_gguf.py, applied by llama.cpp to the
base GGUF, computes the merged fine-tune.

Nothing is trained: a PEFT LoRA on the tiny LFM2 gets random A and B (`init_lora_weights=False`),
transformers merges it (`merge_and_unload`, the recipes' own path to the published model) and gives
the reference logits in fp32. llama.cpp then loads the base's F16 GGUF with the adapter GGUF
(`Llama(lora_path=...)`, i.e. `--lora`) and must land on those logits, not on the base's.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from domain.job_config import JobConfig
from export.adapter_gguf import (
    ADAPTER_FORMAT,
    AdapterGGUFError,
    adapter_info,
    convert_lora_to_gguf,
    lora_tensors,
)
from export.formats.gguf import gguf_adapter
from export.gguf_export import convert_to_gguf
from export.manifest import build_adapter_manifest, model_card, sha256_file, verify_manifest
from export.parity import forced_logits_gguf, forced_logits_hf, relative_logit_deviation, tokenize_hf
from export.profiles import get_profile
from tests.export.tiny_artifacts import TinyArtifacts

BASE_ID = "test/tiny-lfm2"
TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj", "in_proj", "w1", "w2", "w3"]
RANK, ALPHA = 8, 16
# PEFT's random init gives B the size of A, so B @ A * alpha/r is as large as the weights it patches
# and the "fine-tune" is a different random model. A tenth of that keeps the update the size of a
# trained one's, still moving the logits by a third of their range.
B_SCALE = 0.1
# GGUF names of what each LFM2 target patches; out_proj is the attention output in attention layers
# and the short convolution's output projection in conv layers.
GGUF_NAMES = {
    "q_proj": ("attn_q",),
    "k_proj": ("attn_k",),
    "v_proj": ("attn_v",),
    "out_proj": ("attn_output", "shortconv.out_proj"),
    "in_proj": ("shortconv.in_proj",),
    "w1": ("ffn_gate",),
    "w2": ("ffn_down",),
    "w3": ("ffn_up",),
}
# max |logit difference| / max |logit|, base F16 GGUF + F16 adapter in llama.cpp against the merged
# model in fp32 transformers. Measured 1.17e-3 on PROMPT, where the merged model's own F16 GGUF is
# 1.11e-3 from the same logits: the adapter route costs what F16 already does (fp16 weights,
# activations rounded to fp16 in llama.cpp's CPU matmuls), no more. On another prompt an F32
# adapter measured 0.85e-3 against the F16 adapter's 0.96e-3, not worth twice the bytes. 5e-3 is
# the bound of the F16 parity tests (test_parity.py). What it catches, measured in transformers on
# this adapter: leaving out any one target module moves the logits by 1.7e-2 (in_proj) to 0.33
# (w1) of their range, 3x to 65x the bound; rsLoRA's scale instead of alpha/r by 0.77.
MAX_RELATIVE_LOGIT_DEVIATION = 5e-3
# Against the merged model's own F16 GGUF, the route a full download takes: measured 1.05x.
MAX_RATIO_TO_MERGED_F16 = 2.0
PROMPT = [
    {"role": "system", "content": "Classify the sentiment: positive, negative or neutral."},
    {"role": "user", "content": "The battery is terrible and the screen is bad, but I love the price."},
]


@dataclass(frozen=True)
class LoraCase:
    adapter_dir: Path
    adapter_gguf: Path
    merged_gguf: Path
    ids: list[int]
    base_logits: np.ndarray  # transformers, fp32
    merged_logits: np.ndarray
    lora_shapes: dict[str, tuple[int, ...]]  # PEFT module name -> (out, in) of the weight it patches
    lora_params: int


@pytest.fixture(scope="module")
def case(tiny: TinyArtifacts, tmp_path_factory: pytest.TempPathFactory) -> LoraCase:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    root = tmp_path_factory.mktemp("lora")
    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(tiny.hf_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny.hf_dir, dtype=torch.float32).eval()
    ids = tokenize_hf(tokenizer, PROMPT)
    base_logits = forced_logits_hf(model, ids)
    config = LoraConfig(
        r=RANK, lora_alpha=ALPHA, target_modules=TARGETS, init_lora_weights=False, task_type="CAUSAL_LM"
    )
    peft_model = get_peft_model(model, config)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.mul_(B_SCALE)
    peft_model.save_pretrained(root / "adapter")
    lora_params = peft_model.get_nb_trainable_parameters()[0]
    shapes = {
        name: tuple(module.base_layer.weight.shape)
        for name, module in peft_model.named_modules()
        if hasattr(module, "lora_A") and hasattr(module, "base_layer")
    }

    merged = peft_model.merge_and_unload().eval()
    merged_logits = forced_logits_hf(merged, ids)
    merged.save_pretrained(root / "merged")
    tokenizer.save_pretrained(root / "merged")
    merged_gguf = convert_to_gguf(root / "merged", root / "merged-f16.gguf", "f16")

    adapter_gguf = gguf_adapter(root / "adapter", tiny.hf_dir, root / "export", BASE_ID)
    return LoraCase(
        root / "adapter", adapter_gguf, merged_gguf, ids, base_logits, merged_logits, shapes, lora_params
    )


def llama_logits(model: Path, ids: list[int], lora: Path | None = None) -> np.ndarray:
    from llama_cpp import Llama

    llm = Llama(
        model_path=str(model),
        lora_path=str(lora) if lora else None,
        n_ctx=256,
        n_threads=1,
        logits_all=True,
        verbose=False,
        seed=0,
    )
    try:
        return forced_logits_gguf(llm, ids)
    finally:
        llm.close()


def test_base_gguf_with_the_adapter_computes_the_merged_model(tiny: TinyArtifacts, case: LoraCase) -> None:
    with_adapter = relative_logit_deviation(
        case.merged_logits, llama_logits(tiny.f16, case.ids, case.adapter_gguf)
    )
    merged_f16 = relative_logit_deviation(case.merged_logits, llama_logits(case.merged_gguf, case.ids))
    base_alone = relative_logit_deviation(case.merged_logits, llama_logits(tiny.f16, case.ids))
    print(f"base+adapter {with_adapter:.2e}, merged F16 GGUF {merged_f16:.2e}, base alone {base_alone:.2e}")
    assert with_adapter <= MAX_RELATIVE_LOGIT_DEVIATION
    assert with_adapter <= MAX_RATIO_TO_MERGED_F16 * merged_f16
    # Without the adapter llama.cpp is far from the fine-tune: the adapter is what closes the gap.
    assert base_alone >= 20 * MAX_RELATIVE_LOGIT_DEVIATION


# The random tiny model quantizes badly (its Q4_K_M is 22% of the logit range from transformers,
# its Q8_0 2.8%), so on a quantized base the adapter can only be held to that base's own error.
# Measured: Q8_0 with the adapter 1.03x its base's error, Q4_K_M 0.95x.
MAX_RATIO_TO_QUANTIZATION_ERROR = 1.5


@pytest.mark.parametrize("quant", ["Q8_0", "Q4_K_M"])
def test_the_adapter_applies_to_a_quantized_base(
    quantized: dict[str, Path], case: LoraCase, quant: str
) -> None:
    """A device holds the base quantized. llama.cpp applies the adapter to activations, not to the
    base's weights, so it loads on any quantization and adds no error beyond the quantization's."""
    quant_error = relative_logit_deviation(case.base_logits, llama_logits(quantized[quant], case.ids))
    with_adapter = relative_logit_deviation(
        case.merged_logits, llama_logits(quantized[quant], case.ids, case.adapter_gguf)
    )
    base_alone = relative_logit_deviation(case.merged_logits, llama_logits(quantized[quant], case.ids))
    print(f"{quant}: base error {quant_error:.2e}, with adapter {with_adapter:.2e}, alone {base_alone:.2e}")
    assert with_adapter <= MAX_RATIO_TO_QUANTIZATION_ERROR * quant_error
    assert with_adapter <= base_alone / 2


def test_every_lfm2_target_is_a_lora_tensor_pair_of_the_right_shape(case: LoraCase) -> None:
    tensors = lora_tensors(case.adapter_gguf)
    patched = {name.removesuffix(".weight.lora_a") for name in tensors if name.endswith(".lora_a")}
    assert {name.removesuffix(".weight.lora_b") for name in tensors if name.endswith(".lora_b")} == patched
    assert len(patched) == len(case.lora_shapes) == 34  # 4 conv layers x 5 targets + 2 attention x 7

    found = {target for target, names in GGUF_NAMES.items() for p in patched if p.split(".", 2)[2] in names}
    assert found == set(TARGETS)
    for module, (out_features, in_features) in case.lora_shapes.items():
        layer, target = int(module.split(".layers.")[1].split(".")[0]), module.rsplit(".", 1)[1]
        (name,) = [
            p for p in patched if p.startswith(f"blk.{layer}.") and p.split(".", 2)[2] in GGUF_NAMES[target]
        ]
        # ggml order, innermost first: A maps the input width to the rank, B the rank to the output.
        assert tensors[f"{name}.weight.lora_a"] == (in_features, RANK)
        assert tensors[f"{name}.weight.lora_b"] == (RANK, out_features)
    assert sum(int(np.prod(shape)) for shape in tensors.values()) == case.lora_params


def test_adapter_is_a_few_percent_of_the_base_and_converted_once(tiny: TinyArtifacts, case: LoraCase) -> None:
    size, base = case.adapter_gguf.stat().st_size, tiny.f16.stat().st_size
    print(f"adapter {size:,} bytes, base F16 {base:,} bytes ({size / base:.1%})")
    # F16: two bytes a parameter plus a header of names and metadata.
    assert 2 * case.lora_params < size < 2 * case.lora_params + 64 * 1024
    # Rank 8 over widths of 256-768 makes each patched matrix's A+B about 4% of it; on LFM2-350M
    # (width 1024) the same adapter is about 1% of the F16 base and 3% of its Q4_K_M.
    assert size / base < 0.06
    mtime = case.adapter_gguf.stat().st_mtime_ns
    again = gguf_adapter(case.adapter_dir, tiny.hf_dir, case.adapter_gguf.parent, BASE_ID)
    assert again == case.adapter_gguf and again.stat().st_mtime_ns == mtime


def test_the_gguf_names_its_base_by_id_and_leaks_no_local_path(tiny: TinyArtifacts, case: LoraCase) -> None:
    from gguf import GGUFReader

    fields = {
        k: f.contents() for k, f in GGUFReader(case.adapter_gguf).fields.items() if not k.startswith("GGUF.")
    }
    assert fields["general.type"] == "adapter" and fields["adapter.type"] == "lora"
    assert fields["general.architecture"] == "lfm2" and fields["adapter.lora.alpha"] == ALPHA
    assert fields["general.base_model.count"] == 1
    assert fields["general.base_model.0.repo_url"] == f"https://huggingface.co/{BASE_ID}"
    strings = json.dumps(fields, default=str)
    assert str(tiny.hf_dir) not in strings and str(case.adapter_dir) not in strings and "/tmp" not in strings


def test_adapter_manifest_names_its_base_its_flag_and_hash(tiny: TinyArtifacts, case: LoraCase) -> None:
    config = JobConfig(model=BASE_ID, training_file="file-x", suffix="reviews", targets=["phone-android"])
    info = adapter_info(case.adapter_gguf, case.adapter_dir, tiny.hf_dir, BASE_ID)
    manifest = build_adapter_manifest(
        "job-1", config, get_profile("phone-android"), case.adapter_gguf, info, merged_dir=tiny.hf_dir
    )
    assert manifest["format"] == ADAPTER_FORMAT and manifest["quantization"] == "F16"
    assert manifest["files"] == [
        {
            "path": case.adapter_gguf.name,
            "bytes": case.adapter_gguf.stat().st_size,
            "sha256": sha256_file(case.adapter_gguf),
        }
    ]
    assert verify_manifest(manifest, case.adapter_gguf.parent) == []
    adapter = manifest["adapter"]
    assert adapter["llama_cpp_flag"] == "--lora" and adapter["type"] == "lora"
    assert (adapter["rank"], adapter["alpha"], adapter["lora_tensor_pairs"]) == (RANK, ALPHA, 34)
    assert adapter["target_modules"] == sorted(TARGETS)
    assert adapter["base"] == {
        "model": BASE_ID,
        "architecture": "lfm2",
        "block_count": 6,
        "embedding_length": 256,
        "vocab_size": json.loads((tiny.hf_dir / "config.json").read_text())["vocab_size"],
        "quantization": "any",
        "profile_quantization": "Q4_0",
    }
    card = model_card(manifest)
    assert "base_model_relation: adapter" in card
    assert f"--lora {case.adapter_gguf.name}" in card and "tiny-lfm2-Q4_0.gguf" in card


@pytest.mark.parametrize(
    "variant",
    [
        {"use_rslora": True},
        {"use_dora": True},
        {"rank_pattern": {"q_proj": 4}},
        {"modules_to_save": ["lm_head"]},
    ],
    ids=["rslora", "dora", "rank_pattern", "modules_to_save"],
)
def test_peft_variants_llama_cpp_would_compute_differently_are_refused(
    tiny: TinyArtifacts, case: LoraCase, tmp_path: Path, variant: dict[str, Any]
) -> None:
    adapter = Path(shutil.copytree(case.adapter_dir, tmp_path / "adapter"))
    config = json.loads((adapter / "adapter_config.json").read_text()) | variant
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(AdapterGGUFError, match=next(iter(variant))):
        convert_lora_to_gguf(adapter, tiny.hf_dir, tmp_path / "out.gguf")
    assert not list(tmp_path.glob("out.gguf*"))
