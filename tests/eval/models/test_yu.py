"""Yu et al.'s classifier: their channel plan, layers and input checks; it learns a fixed batch."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from eval.models import ModelError, build_model, loss
from eval.models.yu import Block, EqualizedConv2d


def test_channel_plan_at_128px_is_theirs():
    model = build_model("yu", 8)  # fmap_base 1024, fmap_max 512, 128 px
    widths = [(b.conv0.weight.shape[0], b.conv1.weight.shape[0]) for b in model.blocks]
    assert widths == [(16, 32), (32, 64), (64, 128), (128, 256), (256, 512)]  # 128 px down to 8 px
    assert model.blocks[0].conv0.weight.shape[1] == 3  # no fromRGB layer
    assert model.conv.weight.shape == (512, 512, 3, 3)  # the 3x3 conv at 4x4
    assert model.fingerprint.weight.shape == (512, 512 * 16)  # the 512-d fingerprint
    assert model.classify.weight.shape == (8, 512)
    out = model(torch.zeros(2, 3, 128, 128))
    assert out.logits.shape == (2, 8) and out.embedding.shape == (2, 512) and out.detection is None


def test_width_options_and_resolution_set_the_plan():
    model = build_model("yu", 3, options={"resolution": 32, "fmap_base": 64, "fmap_max": 16})
    # nf(s) = min(64 / 2**s, 16): 32 px -> (nf(4), nf(3)) = (4, 8), 16 px -> (8, 16), 8 px -> (16, 16)
    assert [(b.conv0.weight.shape[0], b.conv1.weight.shape[0]) for b in model.blocks] \
        == [(4, 8), (8, 16), (16, 16)]
    assert model.fingerprint.weight.shape == (16, 16 * 16)


def test_equalized_learning_rate_and_reflection_padding():
    conv = EqualizedConv2d(4, 6)
    assert conv.scale == pytest.approx(math.sqrt(2) / math.sqrt(4 * 9))
    x = torch.randn(1, 4, 5, 5)
    expected = F.conv2d(F.pad(x, [1, 1, 1, 1], mode="reflect"), conv.weight * conv.scale, conv.bias)
    torch.testing.assert_close(conv(x), expected)
    model = build_model("yu", 3, options={"resolution": 8, "fmap_base": 8, "fmap_max": 4})
    assert model.classify.scale == pytest.approx(1 / math.sqrt(4))  # gain 1 for the class layer
    assert model.fingerprint.scale == pytest.approx(math.sqrt(2) / math.sqrt(4 * 16))


def test_block_is_two_leaky_convs_then_average_pooling():
    block = Block(3, 4, 5)
    x = torch.randn(2, 3, 8, 8)
    h = F.leaky_relu(block.conv1(F.leaky_relu(block.conv0(x), 0.2)), 0.2)
    torch.testing.assert_close(block(x), F.avg_pool2d(h, 2))


def test_input_must_be_the_power_of_two_resolution():
    with pytest.raises(ModelError, match="resolution=96"):
        build_model("yu", 3, options={"resolution": 96})
    model = build_model("yu", 3, options={"resolution": 16, "fmap_base": 16, "fmap_max": 8})
    with pytest.raises(ModelError, match=r"\(1, 3, 32, 32\)"):
        model(torch.zeros(1, 3, 32, 32))


def test_training_on_one_batch_lowers_the_loss():
    torch.manual_seed(0)
    model = build_model("yu", 3, options={"resolution": 32, "fmap_base": 64, "fmap_max": 32})
    x = torch.rand(6, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    labels = torch.tensor([[0], [1], [2], [0], [1], [2]])
    mix = torch.ones(6, 1)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.0, 0.99))
    losses = []
    for _ in range(8):
        value = loss("yu", model(x), labels, mix, 3)
        optimiser.zero_grad()
        value.backward()
        optimiser.step()
        losses.append(value.item())
    assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < 0.97 * losses[0], losses
    torch.testing.assert_close(loss("yu", model(x), labels, mix, 3),
                               F.cross_entropy(model(x).logits, labels[:, 0]))


def test_head_is_conv_then_fingerprint_then_class_layer():
    model = build_model("yu", 3, options={"resolution": 16, "fmap_base": 32, "fmap_max": 8})
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    h = F.leaky_relu(model.conv(model.blocks(x)), 0.2).flatten(1)
    fingerprint = F.leaky_relu(model.fingerprint(h), 0.2)
    out = model(x)
    torch.testing.assert_close(out.embedding, fingerprint)
    torch.testing.assert_close(out.logits, model.classify(fingerprint))
