"""What MMD GAN and Cramér GAN share: the authors' generators per resolution (dcgan at 32/64 px,
g_resnet5 at 128 px), training, and the global RNG left untouched."""

import dataclasses
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import generators
from generators import cramergan, dcgan_nets, mmdgan
from generators.base import GeneratorError, NetworkGenerator, isolated_rng
from generators.checkpoint import save_checkpoint
from generators.training import fit, resolve_config
from tests.generators.tiny import TINY_OPTIONS, random_photos, tiny_networks

FAMILIES = pytest.mark.parametrize("family", [mmdgan, cramergan], ids=lambda f: f.NAME)


@FAMILIES
def test_training_changes_weights_and_leaves_global_rng_alone(family):
    options = family.parse_options(TINY_OPTIONS[family.NAME])
    with isolated_rng(1):
        before = family.build_generator(32, options).state_dict()
    rng_state = torch.get_rng_state()
    seen = []
    result = fit(family, random_photos(), resolve_config(family, steps=3, batch_size=8, seed=1, n_dis=2),
                 options, on_step=lambda stats, gen: seen.append(stats))
    assert torch.equal(torch.get_rng_state(), rng_state)
    assert [s.step for s in seen] == [1, 2, 3]
    assert all(np.isfinite([s.d_loss, s.g_loss]).all() for s in seen)
    after = result.generator.state_dict()
    changed = {k for k in before if before[k].is_floating_point() and not torch.equal(before[k], after[k])}
    assert {"linear.weight", "to_rgb.weight", "bn.running_mean"} <= changed


# ---------------------------------------------------------------------------------------------
# 128 px: the authors' g_resnet5 generator with their dcgan5 critic


def tiny128(family, **extra):
    return tiny_networks(family, TINY_OPTIONS[family.NAME], 128, ch=2, **extra)


@FAMILIES
def test_128px_builds_g_resnet5_with_the_dcgan5_critic(family):
    gen, critic = tiny128(family)
    assert family.parse_options(None).generator_128 == "g_resnet5"
    assert isinstance(gen, dcgan_nets.ResNetGenerator)
    # Upsampling is nearest + conv everywhere except the last layer, the one transposed convolution.
    transposed = [m for m in gen.modules() if isinstance(m, torch.nn.ConvTranspose2d)]
    assert transposed == [gen.to_rgb] and gen.to_rgb.kernel_size == (5, 5) and gen.to_rgb.stride == (2, 2)
    # 4x4 at 16ch, four residual up-blocks to 64x64 at ch (ch = 2 here), then RGB.
    assert gen.linear.out_features == 4 * 4 * 32
    assert [(b.conv1.in_channels, b.conv1.out_channels) for b in gen.res_blocks] == [(32, 16), (16, 8), (8, 4), (4, 2)]
    for block in gen.res_blocks:
        assert block.conv1.kernel_size == block.conv2.kernel_size == (3, 3) and block.shortcut.kernel_size == (1, 1)
        # conv1 feeds BatchNorm, so the authors leave out its bias; conv2 and the shortcut keep theirs.
        assert block.conv1.bias is None and block.conv2.bias is not None and block.shortcut.bias is not None
    assert gen.bn_out.num_features == 2 and gen.to_rgb.in_channels == 2
    x = gen(torch.randn(3, 32))
    assert x.shape == (3, 3, 128, 128) and x.abs().max() <= 1
    # The critic is the authors' DCGAN5Discriminator: five 5x5 stride-2 convolutions, ch..16ch.
    assert [c.out_channels for c in critic.convs] == [2, 4, 8, 16, 32]
    assert critic(x).shape == (3, 8)
    # 32 and 64 px keep the authors' dcgan; generator_128 = dcgan5 gives the previous 128 px layout.
    assert isinstance(tiny_networks(family, TINY_OPTIONS[family.NAME], 64)[0], dcgan_nets.DCGANGenerator)
    old, _ = tiny128(family, generator_128="dcgan5")
    assert isinstance(old, dcgan_nets.DCGANGenerator) and len(old.blocks) == 4


def bn_eval(x, bn):
    shape = (1, -1, 1, 1)
    return ((x - bn.running_mean.view(shape)) / (bn.running_var.view(shape) + bn.eps).sqrt()
            * bn.weight.view(shape) + bn.bias.view(shape))


def randomise_batchnorm(net, seed):
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            for t in (m.running_mean, m.weight, m.bias):
                t.data = torch.randn(t.shape, generator=g, dtype=t.dtype)
            m.running_var.data = torch.rand(m.running_var.shape, generator=g, dtype=m.running_var.dtype) + 0.5


def test_residual_up_block_is_pre_activation_with_an_upsampled_1x1_shortcut():
    block = dcgan_nets.ResUpBlock(4, 3).double().eval()
    randomise_batchnorm(block, 0)
    x = torch.randn(2, 4, 5, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)

    def nearest(t):  # every pixel copied into a 2x2 square
        return t.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)

    h = F.conv2d(nearest(F.relu(bn_eval(x, block.bn1))), block.conv1.weight, padding=1)
    h = F.conv2d(F.relu(bn_eval(h, block.bn2)), block.conv2.weight, block.conv2.bias, padding=1)
    shortcut = F.conv2d(nearest(x), block.shortcut.weight, block.shortcut.bias)
    assert torch.allclose(block(x), shortcut + h)


def test_g_resnet5_output_is_the_authors_sigmoid_mapped_to_minus_one_one():
    gen, _ = tiny128(mmdgan)
    gen = gen.double().eval()
    randomise_batchnorm(gen, 2)
    z = torch.randn(2, 32, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    h = gen.linear(z).view(2, 32, 4, 4)  # NCHW, as the repository reshapes it
    for block in gen.res_blocks:
        h = block(h)
    logits = gen.to_rgb(F.relu(bn_eval(h, gen.bn_out)))
    assert torch.allclose(gen(z), 2 * torch.sigmoid(logits) - 1)


def test_g_resnet5_initialisation_follows_the_repository():
    with isolated_rng(0):
        gen = dcgan_nets.ResNetGenerator(128, ch=4, dim_z=64)
    block = gen.res_blocks[0]  # 64 -> 32 channels

    def check_uniform(weight, std):
        bound = std * math.sqrt(3)
        assert weight.abs().max() <= bound and weight.abs().max() > 0.95 * bound

    check_uniform(block.conv1.weight, math.sqrt(4 / (64 * 9 + 32 * 9)))  # He (he_init=True)
    check_uniform(block.conv2.weight, math.sqrt(4 / (32 * 9 + 32 * 9)))
    check_uniform(block.shortcut.weight, math.sqrt(2 / (64 + 32)))  # Glorot (he_init=False)
    assert math.isclose(gen.linear.weight.std().item(), 0.01, rel_tol=0.05)  # linear(): N(0, 0.01)
    assert math.isclose(gen.to_rgb.weight.std().item(), 0.02, rel_tol=0.1)  # deconv2d(): N(0, 0.02)
    assert all(b.abs().sum() == 0 for b in (gen.linear.bias, gen.to_rgb.bias, block.conv2.bias, block.shortcut.bias))


@FAMILIES
def test_g_resnet5_trains_end_to_end_and_samples_per_seed(family):
    gen, critic = tiny128(family)
    critic.requires_grad_(False)
    real = torch.rand(4, 3, 128, 128, generator=torch.Generator().manual_seed(0)) * 2 - 1
    family.generator_loss(critic, gen(torch.randn(4, 32)), real).backward()
    for name, p in gen.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    randomise_batchnorm(gen, 4)
    sampler = NetworkGenerator(family.NAME, gen, 128, "")
    images = sampler.sample([4, 5, 6])
    assert images.shape == (3, 128, 128, 3) and images.std() > 0
    assert np.array_equal(sampler.sample([5]), images[[1]])
    assert np.array_equal(sampler.sample([6, 5, 4])[::-1], images)


@FAMILIES
def test_g_resnet5_trains_in_the_shared_loop(family):
    options = family.parse_options({**TINY_OPTIONS[family.NAME], "ch": 2})
    with isolated_rng(1):
        before = family.build_generator(128, options).state_dict()
    rng_state = torch.get_rng_state()
    result = fit(family, random_photos(8, 128), resolve_config(family, steps=1, batch_size=4, seed=1, n_dis=1),
                 options)
    assert torch.equal(torch.get_rng_state(), rng_state)
    after = result.generator.state_dict()
    changed = {k for k in before if before[k].is_floating_point() and not torch.equal(before[k], after[k])}
    assert {"linear.weight", "res_blocks.0.conv1.weight", "res_blocks.3.shortcut.bias", "to_rgb.weight",
            "res_blocks.0.bn1.running_mean", "bn_out.running_var"} <= changed


@FAMILIES
def test_generator_128_option_is_checked_recorded_and_guards_old_checkpoints(family, tmp_path):
    for bad in ("resnet", True, 5):
        with pytest.raises(GeneratorError, match=f"{family.NAME} option generator_128={bad!r} must be one of"):
            family.parse_options({"generator_128": bad})
    options = family.parse_options({**TINY_OPTIONS[family.NAME], "ch": 2})
    assert family.options_dict(options)["generator_128"] == "g_resnet5"
    with pytest.raises(GeneratorError, match="generator_128='resnet'"):
        family.build_generator(128, dataclasses.replace(options, generator_128="resnet"))

    # A 128 px checkpoint of the old dcgan5 layout whose sidecar predates the option is refused.
    old, _ = tiny128(family, generator_128="dcgan5")
    legacy = {k: family.options_dict(options)[k] for k in ("ch", "dim_z", "feature_dim")}
    save_checkpoint(tmp_path / "old", old, arch=family.NAME, resolution=128, options=legacy, train=None)
    with pytest.raises(GeneratorError, match=r"old.safetensors does not fit the model its sidecar describes; "
                                             r"missing keys: \['bn_out.*unexpected keys: \['blocks.0.bn"):
        generators.load(family.NAME, checkpoint=tmp_path / "old", resolution=128)
    # Saying which generator it is makes it load.
    save_checkpoint(tmp_path / "old", old, arch=family.NAME, resolution=128,
                    options={**legacy, "generator_128": "dcgan5"}, train=None)
    loaded = generators.load(family.NAME, checkpoint=tmp_path / "old", resolution=128)
    assert isinstance(loaded.net, dcgan_nets.DCGANGenerator) and loaded.options["generator_128"] == "dcgan5"
