"""The building blocks: YOLOv5's convolutional blocks and the two Transformer blocks."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from yolotr.config.model import TransformerConfig
from yolotr.model.common import C3, SPP, SPPF, Bottleneck, Concat, Conv, Focus
from yolotr.model.transformer import (
    C3TR,
    TRANSFORMER_TYPES,
    C3TRv5,
    TransformerBlock,
    TransformerBlockV5,
    attention_with_fp32_softmax,
    map_to_tokens,
    sincos_position_encoding,
    tokens_to_map,
)

STABLE = {"qk_norm": True, "layer_scale": 1e-4, "xavier_init": True}  # the blocks take plain keywords


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.mark.parametrize(
    ("block", "expected_shape"),
    [
        (Conv(3, 8, 6, 2, 2), (2, 8, 128, 160)),
        (Conv(3, 8, 3, 2), (2, 8, 128, 160)),
        (Conv(3, 8, 1, 1), (2, 8, 256, 320)),
        (Bottleneck(3, 8), (2, 8, 256, 320)),
        (C3(3, 8, 2), (2, 8, 256, 320)),
        (SPPF(3, 8), (2, 8, 256, 320)),
        (SPP(3, 8), (2, 8, 256, 320)),
        (Focus(3, 8, 3), (2, 8, 128, 160)),
        (nn.Upsample(None, 2, "nearest"), (2, 3, 512, 640)),
    ],
    ids=lambda value: type(value).__name__ if isinstance(value, nn.Module) else None,
)
def test_convolutional_blocks_give_yolov5_shapes_on_a_non_square_input(block, expected_shape):
    x = torch.rand(2, 3, 256, 320)

    y = block(x)

    assert y.shape == expected_shape


def test_concat_joins_feature_maps_along_channels():
    a, b = torch.rand(2, 3, 8, 10), torch.rand(2, 5, 8, 10)

    y = Concat(1)([a, b])

    assert y.shape == (2, 8, 8, 10)
    assert torch.equal(y[:, 3:], b)


@pytest.mark.parametrize("block_type", [C3TR, C3TRv5])
def test_transformer_c3_blocks_keep_shape_on_a_non_square_input(block_type):
    block = block_type(16, 32, 2, **STABLE)
    x = torch.rand(2, 16, 8, 10)  # the stride-32 map of a 256x320 image

    y = block(x)

    assert y.shape == (2, 32, 8, 10)


def test_conv_uses_yolov5_batchnorm_settings_and_no_conv_bias():
    conv = Conv(3, 8, 3)

    assert conv.conv.bias is None
    assert (conv.bn.eps, conv.bn.momentum) == (1e-3, 0.03)


def test_tokens_are_row_major_pixels_with_channels_last():
    batch, channels, height, width = 2, 3, 4, 5  # non-square, so rows and columns cannot be confused
    x = torch.arange(batch * channels * height * width, dtype=torch.float32).reshape(batch, channels, height, width)

    tokens = map_to_tokens(x)

    assert tokens.shape == (batch, height * width, channels)
    for i in range(height * width):
        assert torch.equal(tokens[:, i, :], x[:, :, i // width, i % width])


def test_tokens_to_map_inverts_map_to_tokens_on_a_non_square_map():
    x = torch.randn(2, 6, 3, 7)

    round_trip = tokens_to_map(map_to_tokens(x), 3, 7)

    assert torch.equal(round_trip, x)


def test_round_trip_check_catches_a_reshape_without_transpose():
    # The bug this layout is tested against: (B, H·W, C) reshaped straight into (B, C, H, W).
    x = torch.randn(2, 6, 3, 7)

    buggy = map_to_tokens(x).reshape(2, 6, 3, 7)

    assert buggy.shape == x.shape and not torch.equal(buggy, x)


@pytest.mark.parametrize("block_type", [TransformerBlock, TransformerBlockV5])
def test_transformer_block_with_zeroed_branches_returns_its_input_map(block_type):
    # With every residual branch off, the block is exactly its token round trip: any pixel/channel mix-up in its
    # own reshapes shows here, on a non-square map.
    block = block_type(8, 2, layer_scale=1.0)
    for module in block.modules():
        if hasattr(module, "gamma"):
            nn.init.zeros_(module.gamma)
    if isinstance(block, TransformerBlockV5):
        nn.init.zeros_(block.linear.weight), nn.init.zeros_(block.linear.bias)
    x = torch.randn(2, 8, 3, 5)

    assert torch.equal(block(x), x)


def test_sincos_position_encoding_matches_the_token_order_and_any_grid_size():
    height, width, dim = 3, 5, 8

    encoding = sincos_position_encoding(height, width, dim, torch.device("cpu"), torch.float32)

    assert encoding.shape == (height * width, dim)
    for i in range(height * width):
        row, col = i // width, i % width
        # first channel of each quarter has ω = 1: sin(row), cos(row), sin(col), cos(col)
        expected = torch.tensor([row, row, col, col], dtype=torch.float32)
        expected = torch.stack((expected[0].sin(), expected[1].cos(), expected[2].sin(), expected[3].cos()))
        assert torch.allclose(encoding[i, :: dim // 4], expected)
    assert sincos_position_encoding(7, 2, dim, torch.device("cpu"), torch.float32).shape == (14, dim)


def test_yolotr_block_has_no_learned_position_table():
    block = TransformerBlock(16, 1, **STABLE)

    names = [name for name, _ in block.named_parameters()]

    assert not any("pos" in name for name in names)
    assert block(torch.rand(1, 16, 2, 9)).shape == (1, 16, 2, 9)  # any H x W, no table to outgrow


def test_yolotr_block_under_bf16_autocast_is_finite_for_inputs_scaled_by_1e3():
    block = C3TR(32, 32, 2, **STABLE)
    inner = TransformerBlock(32, 2, **STABLE)
    for module in (block, inner):
        x = (torch.randn(2, 32, 6, 10) * 1e3).requires_grad_()

        with torch.autocast("cpu", dtype=torch.bfloat16):
            y = module(x)
        y.float().square().mean().backward()

        assert torch.isfinite(y).all()
        assert torch.isfinite(x.grad).all()
        assert all(torch.isfinite(p.grad).all() for p in module.parameters() if p.grad is not None)


def test_attention_under_bf16_autocast_on_cpu_matches_fp32_attention_of_the_same_inputs():
    q, k, v = (torch.randn(2, 4, 60, 16).bfloat16() * 30 for _ in range(3))  # large logits: softmax is peaky
    reference = F.scaled_dot_product_attention(q.float(), k.float(), v.float())

    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = attention_with_fp32_softmax(q, k, v)

    # Computed in fp32 and only the result rounded: bit-identical to fp32 attention rounded to bf16. (PyTorch's
    # bf16 CPU kernel, which autocast would pick, differs from it by up to ~0.2 here.)
    assert out.dtype == torch.bfloat16
    assert torch.equal(out, reference.to(torch.bfloat16))


def test_qk_norm_normalises_each_head_of_q_and_k():
    block = TransformerBlock(16, 1, qk_norm=True, num_heads=4)
    attention = block.layers[0].attn

    assert isinstance(attention.q_norm, nn.LayerNorm) and attention.q_norm.normalized_shape == (4,)
    assert isinstance(attention.k_norm, nn.LayerNorm) and attention.k_norm.normalized_shape == (4,)
    assert isinstance(TransformerBlock(16, 1).layers[0].attn.q_norm, nn.Identity)


def test_layer_scale_starts_every_residual_branch_at_the_configured_value():
    block = TransformerBlock(16, 2, layer_scale=1e-4)

    gammas = [module.gamma for module in block.modules() if hasattr(module, "gamma")]

    assert len(gammas) == 4  # attention and MLP branch of each of 2 layers
    assert all(torch.allclose(gamma, torch.full((16,), 1e-4)) for gamma in gammas)


def _is_xavier_uniform(weight: torch.Tensor) -> bool:
    bound = (6 / (weight.shape[0] + weight.shape[1])) ** 0.5
    return weight.abs().max() <= bound and weight.abs().max() > 0.9 * bound


def test_xavier_init_switch_sets_the_projection_init_on_both_blocks():
    dim = 64  # Xavier's bound sqrt(6/128) is sqrt(3)x PyTorch's default Linear bound 1/sqrt(64): easy to tell
    for xavier in (True, False):
        attention = TransformerBlock(dim, 1, xavier_init=xavier).layers[0].attn
        layer_v5 = TransformerBlockV5(dim, 1, xavier_init=xavier).tr[0]

        for linear in (attention.q, attention.k, attention.v, attention.proj, layer_v5.q, layer_v5.k, layer_v5.v):
            assert _is_xavier_uniform(linear.weight) == xavier


def test_block_defaults_are_xavier_for_yolotr_and_yolov5_init_for_v5():
    attention = TransformerBlock(64, 1).layers[0].attn
    layer_v5 = TransformerBlockV5(64, 1).tr[0]

    assert _is_xavier_uniform(attention.q.weight)
    assert not _is_xavier_uniform(layer_v5.q.weight)


def test_c3trv5_has_yolov5s_c3tr_parameter_count():
    # YOLOv5s' C3TR (c1=c2=512, n=1). Its TransformerBlock at width 256: linear 65,792 + q, k, v, fc1, fc2
    # 5 x 65,536 + MultiheadAttention in_proj 196,608 + 768 and out_proj 65,792 = 656,640. The convs around it:
    # cv1, cv2 (512->256) 131,584 each + cv3 (512->512) 263,168 = 526,336.
    block = C3TRv5(512, 512, 1)

    assert sum(p.numel() for p in block.m.parameters()) == 656_640
    assert sum(p.numel() for p in block.parameters()) == 656_640 + 526_336


def test_transformer_types_cover_the_attention_params_but_not_the_c3_convs():
    block = C3TR(32, 32, 1, **STABLE)

    transformer_params = {id(p) for m in block.modules() if isinstance(m, TRANSFORMER_TYPES) for p in m.parameters()}

    assert transformer_params == {id(p) for p in block.m.parameters()}
    assert not transformer_params & {id(p) for conv in (block.cv1, block.cv2, block.cv3) for p in conv.parameters()}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"qk_nrom": True}, "transformer.qk_nrom: unknown key"),
        ({"qk_norm": "yes"}, "transformer.qk_norm"),
        ({"layer_scale": -1}, "transformer.layer_scale"),
        ({"num_heads": 0}, "transformer.num_heads"),
        ({"mlp_ratio": 0}, "transformer.mlp_ratio"),
    ],
)
def test_transformer_config_rejects_bad_values_naming_the_key(values, message):
    with pytest.raises(ValueError, match=message):
        TransformerConfig.from_yaml(values)


def test_transformer_block_rejects_a_width_the_heads_do_not_divide():
    with pytest.raises(ValueError, match="not divisible by num_heads=3"):
        TransformerBlock(16, 1, num_heads=3)
