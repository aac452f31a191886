"""recipes/estimate.py reads a config the way transformers builds the model."""

from __future__ import annotations

from transformers import Lfm2Config, Lfm2ForCausalLM

from recipes.estimate import ModelShape

# LFM2-350M's shape, scaled down in width so the model builds in a moment; the MLP settings are the
# real ones (declared 6912-style width, trimmed by block_auto_adjust_ff_dim)
SMALL = {
    "hidden_size": 64,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "block_ff_dim": 432,
    "block_auto_adjust_ff_dim": True,
    "block_ffn_dim_multiplier": 1.0,
    "block_multiple_of": 32,
    "vocab_size": 512,
    "layer_types": ["conv", "full_attention", "conv", "full_attention"],
}


def test_mlp_width_is_the_one_the_model_has() -> None:
    model = Lfm2ForCausalLM(Lfm2Config(**SMALL))
    real = model.model.layers[0].feed_forward.w1.out_features
    assert real != SMALL["block_ff_dim"]  # the trim applies: 432 * 2/3 = 288
    assert ModelShape.from_config(SMALL).intermediate == real == 288


def test_approximate_count_is_close_to_the_real_one() -> None:
    real = sum(p.numel() for p in Lfm2ForCausalLM(Lfm2Config(**SMALL)).parameters())
    approx = ModelShape.from_config(SMALL).params
    assert abs(approx - real) / real < 0.1, (approx, real)
    assert ModelShape.from_config(SMALL, params=real).params == real  # an exact count wins
