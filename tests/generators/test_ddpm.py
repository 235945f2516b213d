"""DDPM family: U-Net layout, options, DDIM sampling, training, checkpoints and diffusers folders."""

import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from diffusers import DDIMScheduler, DDPMPipeline, DDPMScheduler
from torch import nn

import generators
from generators.training import GeneratorTraining
from benchmark.atomic import sha256_file
from generators import ddpm
from generators.base import SAMPLE_BATCH, GeneratorError, NetworkGenerator, isolated_rng
from generators.ema import EmaSetting
from generators.training import fit, resolve_config
from tests.generators.tiny import TINY_OPTIONS

# The smallest useful network: ~0.1M parameters, ~0.1 s per 8-image training step on one thread.
TINY = TINY_OPTIONS["ddpm"]


def tiny_sampler(resolution: int = 32, seed: int = 0, **overrides) -> ddpm.DDIMSampler:
    with isolated_rng(seed):
        return ddpm.build_generator(resolution, ddpm.parse_options({**TINY, **overrides}))


def photos(n: int = 8, resolution: int = 32) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, resolution, resolution, 3), dtype=np.uint8)


def tiny_fit(seed: int = 1, steps: int = 2, **overrides):
    config = resolve_config(ddpm, steps=steps, batch_size=4, seed=seed)
    return fit(ddpm, photos(), config, ddpm.parse_options({**TINY, **overrides}))


def state(net: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in net.state_dict().items()}


# --- network and options ---------------------------------------------------------------------

@pytest.mark.parametrize("resolution", [32, 64, 128])
def test_unet_levels_widths_and_attention_at_16px(resolution):
    unet = ddpm.build_unet(resolution, ddpm.parse_options({"ch": 4}))
    mults = ddpm.CHANNEL_MULTS[resolution]
    assert unet.config.block_out_channels == tuple(4 * m for m in mults)
    assert unet.config.layers_per_block == 2
    with_attention = [i for i, b in enumerate(unet.down_blocks) if type(b).__name__ == "AttnDownBlock2D"]
    assert [resolution // 2**i for i in with_attention] == [16]
    assert unet.mid_block.attentions[0] is not None
    out = unet(torch.randn(2, 3, resolution, resolution), torch.tensor([0, 999])).sample
    assert out.shape == (2, 3, resolution, resolution)


def test_attention_can_be_turned_off():
    unet = ddpm.build_unet(32, ddpm.parse_options({"ch": 4, "attention": False}))
    names = {type(b).__name__ for b in [*unet.down_blocks, *unet.up_blocks]}
    assert names == {"DownBlock2D", "UpBlock2D"}
    assert list(unet.mid_block.attentions) == [None]


def test_default_is_the_documented_small_unet():
    opts = ddpm.parse_options(None)
    assert (opts.ch, opts.layers_per_block, opts.attention, opts.sample_steps) == (64, 2, True, 50)
    assert (opts.num_train_timesteps, opts.beta_schedule, opts.beta_start, opts.beta_end) == (1000, "linear", 1e-4, 0.02)
    net = ddpm.build_generator(128, opts)
    assert net.dim_z == 3 * 128 * 128 and net.resolution == 128
    assert round(sum(p.numel() for p in net.parameters()) / 1e6, 1) == 21.4


def test_options_validation():
    assert ddpm.parse_options(ddpm.options_dict(ddpm.parse_options(TINY))) == ddpm.parse_options(TINY)
    assert json.loads(json.dumps(ddpm.options_dict(ddpm.parse_options(None))))["ema_decay"] == 0.9999
    assert ddpm.parse_options({"dropout": 0}).dropout == 0.0  # YAML may give an int for a float
    bad = [({"width": 3}, "unknown ddpm options"), ({"dim_z": 12}, "dim_z"),
           ({"ch": 0}, "ch=0"), ({"ch": True}, "ch=True"), ({"attention": 1}, "attention=1"),
           ({"ema_decay": 1.0}, "ema_decay"), ({"beta_schedule": "cosine"}, "beta_schedule"),
           ({"prediction_type": "noise"}, "prediction_type"), ({"dropout": float("nan")}, "dropout"),
           ({"beta_start": 0.1, "beta_end": 0.01}, "beta_start"),
           ({"sample_steps": 1001}, "sample_steps"), ({"lr_warmup": -1}, "lr_warmup")]
    for options, message in bad:
        with pytest.raises(GeneratorError, match=message):
            ddpm.parse_options(options)
    with pytest.raises(GeneratorError, match="resolutions"):
        ddpm.build_generator(48, ddpm.parse_options(TINY))


# --- sampling ------------------------------------------------------------------------------

def test_sample_shape_dtype_range():
    gen = NetworkGenerator("ddpm", tiny_sampler(), 32, "")
    images = gen.sample([0, 1, 2])
    assert images.shape == (3, 32, 32, 3) and images.dtype == np.uint8
    assert images.std() > 0 and not np.array_equal(images[0], images[1])
    assert gen.sample([]).shape == (0, 32, 32, 3)
    x = tiny_sampler()(torch.randn(2, 3 * 32 * 32))
    assert x.dtype == torch.float32 and x.shape == (2, 3, 32, 32) and x.abs().max() <= 1
    with pytest.raises(AssertionError):
        tiny_sampler()(torch.randn(2, 100))


def test_sample_independent_of_batch_composition():
    gen = NetworkGenerator("ddpm", tiny_sampler(), 32, "")
    assert np.array_equal(gen.sample([5]), gen.sample([4, 5, 6])[[1]])
    seeds = list(range(SAMPLE_BATCH + 3))  # two render batches
    forward = gen.sample(seeds)
    assert np.array_equal(gen.sample(seeds[::-1])[::-1], forward)
    assert np.array_equal(gen.sample([SAMPLE_BATCH + 1]), forward[[SAMPLE_BATCH + 1]])


class KnownEpsilon(nn.Module):
    """Stands in for the U-Net: eps(x, t) = 0.9 * sqrt(1 - abar_t) * x, recording the timesteps it sees."""

    def __init__(self, alphas_cumprod: np.ndarray):
        super().__init__()
        self.alphas_cumprod = alphas_cumprod
        self.seen: list[int] = []

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> SimpleNamespace:
        self.seen.append(int(t))
        return SimpleNamespace(sample=0.9 * float(np.sqrt(1 - self.alphas_cumprod[int(t)])) * x)


def ddim_by_hand(x: np.ndarray, timesteps: list[int], abar: np.ndarray, clip: bool) -> np.ndarray:
    """Song et al. eq. 12 with sigma = 0, stepping from each timestep to the next (abar = 1 after the last)."""
    for i, t in enumerate(timesteps):
        a, a_prev = abar[t], (abar[timesteps[i + 1]] if i + 1 < len(timesteps) else 1.0)
        eps = 0.9 * np.sqrt(1 - a) * x
        x0 = (x - np.sqrt(1 - a) * eps) / np.sqrt(a)
        if clip:
            x0 = np.clip(x0, -1, 1)
        x = np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev) * eps
    return np.clip(x, -1, 1)


@pytest.mark.parametrize("spacing, clip, timesteps", [
    ("trailing", True, [999, 749, 499, 249]),   # starts at T-1, where x_T is pure noise
    ("leading", False, [750, 500, 250, 0]),
])
def test_ddim_eta0_matches_the_update_computed_by_hand(spacing, clip, timesteps):
    opts = ddpm.parse_options({**TINY, "sample_steps": 4, "timestep_spacing": spacing, "clip_sample": clip})
    betas = np.linspace(1e-4, 0.02, 1000)  # Ho et al.'s linear schedule, in float64
    abar = np.cumprod(1 - betas)
    fake = KnownEpsilon(abar)
    sampler = ddpm.DDIMSampler(fake, 8, ddpm.scheduler_config(opts), opts.sample_steps)
    z = torch.randn(3, sampler.dim_z, generator=torch.Generator().manual_seed(0))
    torch.manual_seed(1)
    out = sampler(z)
    assert fake.seen == timesteps
    expected = ddim_by_hand(z.double().view(3, 3, 8, 8).numpy(), timesteps, abar, clip)
    assert (np.abs(expected) < 1).mean() > 0.5  # not just saturated pixels
    np.testing.assert_allclose(out.numpy(), expected, atol=1e-4)
    # eta = 0: no randomness at all, whatever the global RNG.
    torch.manual_seed(2)
    assert torch.equal(sampler(z), out)


# --- training ------------------------------------------------------------------------------

def test_training_steps_change_weights_with_finite_loss_and_leave_global_rng_alone():
    before = state(tiny_sampler(seed=1))
    rng_state = torch.get_rng_state()
    seen = []
    config = resolve_config(ddpm, steps=3, batch_size=4, seed=1)
    result = fit(ddpm, photos(), config, ddpm.parse_options(TINY),
                 on_step=lambda stats, gen: seen.append((stats, gen)))
    assert torch.equal(torch.get_rng_state(), rng_state)
    assert [s.step for s, _ in seen] == [1, 2, 3]
    assert all(np.isfinite(s.g_loss) and s.g_loss > 0 for s, _ in seen)
    assert result.discriminator is None and seen[-1][1] is result.generator
    assert not result.generator.training
    after = result.generator.state_dict()
    assert set(after) == set(before) and all(k.startswith("unet.") for k in after)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert "unet.conv_in.weight" in changed and "unet.conv_out.weight" in changed


def test_training_is_deterministic_for_a_seed():
    first, again, other = tiny_fit(seed=3), tiny_fit(seed=3), tiny_fit(seed=4)
    a, b, c = (r.generator.state_dict() for r in (first, again, other))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert first.last.g_loss == again.last.g_loss
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_dropout_is_seeded_too():
    a = tiny_fit(seed=3, dropout=0.5).generator.state_dict()
    torch.manual_seed(123)
    b = tiny_fit(seed=3, dropout=0.5).generator.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_saved_weights_are_the_warmed_up_ema():
    init = state(tiny_sampler(seed=5))
    # No learning-rate warm-up: the first step must move the weights well beyond the tolerance.
    result = tiny_fit(seed=5, steps=1, ema_decay=0.9999, lr_warmup=0)
    ema, raw = result.generator.state_dict(), result.raw_generator.state_dict()
    assert torch.equal(raw["unet.conv_in.weight"], tiny_fit(seed=5, steps=1, ema_decay=0.0, lr_warmup=0)
                       .generator.state_dict()["unet.conv_in.weight"])
    decay = 2 / 11  # min(0.9999, (1 + 1) / (10 + 1)) after the first step
    for k in init:
        torch.testing.assert_close(ema[k], decay * init[k] + (1 - decay) * raw[k])
    assert result.ema == EmaSetting(beta=0.9999, warmup=True)


def test_learning_rate_warmup_scales_the_first_update():
    init = state(tiny_sampler(seed=6))
    # Zero-initialised tensors (GroupNorm biases): their change is not lost to float32 rounding.
    zeros = [k for k in init if not init[k].any()]
    assert zeros

    def moved(warmup):
        after = tiny_fit(seed=6, steps=1, ema_decay=0.0, lr_warmup=warmup).generator.state_dict()
        return max(after[k].abs().max().item() for k in zeros)

    # Adam's first step moves each weight by about lr; with warm-up it is lr / warmup.
    assert moved(0) == pytest.approx(2e-4, rel=0.01)
    assert moved(1000) == pytest.approx(2e-7, rel=0.01)


class Recorder(nn.Module):
    """Stands in for the U-Net: returns a fixed output and keeps what it was called with."""

    def __init__(self, output: torch.Tensor):
        super().__init__()
        self.output = output
        self.calls: list[tuple[torch.Tensor, torch.Tensor]] = []

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> SimpleNamespace:
        self.calls.append((x, t))
        return SimpleNamespace(sample=self.output)


def test_denoising_loss_is_the_simple_loss_at_the_forward_process_sample():
    opts = ddpm.parse_options(None)
    sched = DDPMScheduler(**ddpm.scheduler_config(opts))
    gen = torch.Generator().manual_seed(0)
    x0, eps, out = (torch.rand(2, 3, 4, 4, generator=gen) * 2 - 1 for _ in range(3))
    t = torch.tensor([0, 999])
    fake = Recorder(out)
    loss = ddpm.denoising_loss(fake, sched, x0, t, eps)
    abar = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)[t].view(-1, 1, 1, 1)
    (x_t, seen_t), = fake.calls
    torch.testing.assert_close(x_t.double(), abar.sqrt() * x0 + (1 - abar).sqrt() * eps, atol=1e-5, rtol=1e-5)
    assert torch.equal(seen_t, t)
    torch.testing.assert_close(loss, ((out - eps) ** 2).mean())


def test_velocity_target_matches_its_definition():
    opts = ddpm.parse_options({"prediction_type": "v_prediction"})
    sched = DDPMScheduler(**ddpm.scheduler_config(opts))
    x0, eps, t = torch.randn(2, 3, 4, 4), torch.randn(2, 3, 4, 4), torch.tensor([10, 900])
    abar = sched.alphas_cumprod[t].view(-1, 1, 1, 1)
    torch.testing.assert_close(ddpm._training_target(sched, x0, eps, t), abar.sqrt() * eps - (1 - abar).sqrt() * x0)
    assert np.isfinite(tiny_fit(steps=1, prediction_type="v_prediction").last.g_loss)


# --- checkpoints and diffusers folders -----------------------------------------------------

def test_checkpoint_round_trip_and_mismatches(tmp_path):
    path = generators.train("ddpm", photos(), tmp_path / "g",
                            GeneratorTraining(steps=2, batch_size=4, seed=1), options=TINY)
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["options"]["sample_steps"] == 2 and sidecar["options"]["timestep_spacing"] == "trailing"
    assert (sidecar["train"]["lr_g"], sidecar["train"]["betas"]) == (2e-4, [0.9, 0.999])
    gen = generators.load("ddpm", checkpoint=path, resolution=32)
    in_memory = NetworkGenerator("ddpm", tiny_fit(seed=1).generator, 32, "")
    assert np.array_equal(gen.sample([0, 7]), in_memory.sample([0, 7]))
    assert gen.checkpoint_sha256 == sha256_file(path)

    with pytest.raises(GeneratorError, match="not the requested 64"):
        generators.load("ddpm", checkpoint=path, resolution=64)
    with pytest.raises(GeneratorError, match="is for arch 'ddpm', not 'sngan'"):
        generators.load("sngan", checkpoint=path, resolution=32)
    sidecar["options"]["ch"] = 16
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    with pytest.raises(GeneratorError, match="does not fit the model"):
        generators.load("ddpm", checkpoint=path, resolution=32)
    sidecar["options"]["dim_z"] = 5
    path.with_suffix(".json").write_text(json.dumps(sidecar))
    with pytest.raises(GeneratorError, match="g.json: ddpm has no dim_z"):
        generators.load("ddpm", checkpoint=path, resolution=32)


def test_diffusers_folder_round_trip(tmp_path):
    opts = ddpm.parse_options(TINY)
    sampler = tiny_sampler()
    expected = NetworkGenerator("ddpm", sampler, 32, "").sample([0, 3])
    # A UNet folder with its scheduler config beside it.
    sampler.unet.save_pretrained(tmp_path / "unet_only")
    DDIMScheduler(**ddpm.scheduler_config(opts)).save_pretrained(tmp_path / "unet_only")
    gen = ddpm.load_diffusers_folder(tmp_path / "unet_only", 32, sample_steps=2)
    assert gen.arch == "ddpm" and gen.resolution == 32
    assert gen.checkpoint_sha256 == sha256_file(tmp_path / "unet_only" / ddpm.WEIGHTS_NAME)
    assert np.array_equal(gen.sample([0, 3]), expected)
    # A whole DDPMPipeline folder (unet/ and scheduler/), DDPM scheduler config included.
    DDPMPipeline(unet=sampler.unet, scheduler=DDPMScheduler(**ddpm.scheduler_config(opts))).save_pretrained(
        tmp_path / "pipeline")
    gen = ddpm.load_diffusers_folder(str(tmp_path / "pipeline"), 32, sample_steps=2)
    assert np.array_equal(gen.sample([0, 3]), expected)
    # The folder's own sampler settings count: more steps, different images.
    assert not np.array_equal(ddpm.load_diffusers_folder(tmp_path / "pipeline", 32, sample_steps=3).sample([0]),
                              expected[:1])


def test_hub_is_offline():
    # Set by generators.ddpm before diffusers is imported: nothing may be fetched at run time.
    assert os.environ["HF_HUB_OFFLINE"] == "1"


def test_diffusers_folder_errors(tmp_path):
    opts = ddpm.parse_options(TINY)
    sampler = tiny_sampler()
    folder = tmp_path / "model"
    sampler.unet.save_pretrained(folder)

    def fails(message, path=folder, resolution=32):
        with pytest.raises(GeneratorError, match=message) as e:
            ddpm.load_diffusers_folder(path, resolution)
        assert str(path) in str(e.value)

    fails("does not exist", path=tmp_path / "google" / "ddpm-cifar10-32")
    fails("scheduler_config.json missing")
    DDIMScheduler(**ddpm.scheduler_config(opts)).save_pretrained(folder)
    fails("sample_size 32 differs from the requested resolution 64", resolution=64)
    scheduler = json.loads((folder / "scheduler_config.json").read_text())
    (folder / "scheduler_config.json").write_text(json.dumps({**scheduler, "prediction_type": "noise"}))
    fails("prediction_type 'noise'")
    (folder / "scheduler_config.json").write_text("{not json")
    fails("not readable JSON")
    (folder / "scheduler_config.json").write_text(json.dumps(scheduler))
    # Weights that do not fit the config are reported, not half-loaded.
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "block_out_channels": [16, 32, 32, 32]}))
    fails("could not be loaded")
    (folder / "config.json").write_text(json.dumps(config))
    # Pickled weights are never read.
    (folder / ddpm.WEIGHTS_NAME).rename(folder / ddpm.PICKLED_WEIGHTS_NAME)
    fails("pickled diffusion_pytorch_model.bin, which is refused")
    (folder / "config.json").unlink()
    fails("config.json missing")



def test_generators_load_opens_a_diffusers_folder(tmp_path):
    opts = ddpm.parse_options(TINY)
    sampler = tiny_sampler()
    sampler.unet.save_pretrained(tmp_path / "m")
    DDIMScheduler(**ddpm.scheduler_config(opts)).save_pretrained(tmp_path / "m")
    gen = generators.load("ddpm", folder=tmp_path / "m", resolution=32)
    assert np.array_equal(gen.sample([0]), ddpm.load_diffusers_folder(tmp_path / "m", 32).sample([0]))
