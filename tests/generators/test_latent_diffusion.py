"""Latent diffusion from a local diffusers folder: same images as diffusers' LDMPipeline, the
U-Net at the latent size, per-seed determinism, checkpoint identity and clear refusals."""

import json

import numpy as np
import pytest
import torch
from diffusers import UNet2DConditionModel

import generators
from generators import latent_diffusion as ldm
from generators.base import SAMPLE_BATCH, GeneratorError, isolated_rng
from generators.diffusers_folder import WEIGHTS_NAME, weights_sha256
from tests.generators.tiny import save_tiny_ldm, tiny_ldm_scheduler

LATENT = 8  # latent side; the tiny autoencoders have 2 levels, so f = 2 and images are 16 px
RESOLUTION = 16
STEPS = 3


@pytest.mark.parametrize("kind", ["vqvae", "vae"])
def test_images_are_those_of_diffusers_ldm_pipeline(tmp_path, kind):
    """The reference sampler on the same z_T (a seed's CPU randn): same pixels up to rounding."""
    pipe = save_tiny_ldm(tmp_path / "m", kind)
    gen = ldm.load_diffusers_folder(tmp_path / "m", RESOLUTION, sample_steps=STEPS)
    seeds = [3, 11]
    ours = gen.sample(seeds)
    assert ours.shape == (2, RESOLUTION, RESOLUTION, 3) and ours.dtype == np.uint8
    for image, seed in zip(ours, seeds):
        reference = pipe(batch_size=1, generator=torch.Generator().manual_seed(seed),
                         num_inference_steps=STEPS, output_type="np").images[0]
        assert np.abs(image.astype(np.float64) - reference * 255).max() <= 1.0
    assert ours.std() > 5  # a real image's spread, not a saturated or constant one


def test_latent_scaling_factor_is_undone_before_decoding(tmp_path):
    """Rombach et al. scale latents to unit variance; z_0 / scaling_factor is what the decoder sees."""
    save_tiny_ldm(tmp_path / "a", scaling_factor=0.6)
    save_tiny_ldm(tmp_path / "b", scaling_factor=1.0)
    a = ldm.load_diffusers_folder(tmp_path / "a", RESOLUTION, sample_steps=STEPS)
    b = ldm.load_diffusers_folder(tmp_path / "b", RESOLUTION, sample_steps=STEPS)
    z = torch.randn(1, 3, LATENT, LATENT, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(a.net.decoder(z * 0.6), b.net.decoder(z), atol=1e-5)
        assert not torch.allclose(a.net.decoder(z), b.net.decoder(z), atol=1e-2)


def test_unet_runs_at_the_latent_size_and_the_decoder_maps_latents_to_pixels(tmp_path):
    save_tiny_ldm(tmp_path / "m")
    gen = ldm.load_diffusers_folder(tmp_path / "m", RESOLUTION, sample_steps=STEPS)
    seen = {"unet": [], "decoder": []}
    gen.net.unet.register_forward_hook(lambda m, args, out: seen["unet"].append((tuple(args[0].shape), tuple(out.sample.shape))))
    gen.net.decoder.register_forward_hook(lambda m, args, out: seen["decoder"].append((tuple(args[0].shape), tuple(out.shape))))
    gen.sample([0])
    assert seen["unet"] == [((SAMPLE_BATCH, 3, LATENT, LATENT),) * 2] * STEPS
    assert seen["decoder"] == [((SAMPLE_BATCH, 3, LATENT, LATENT), (SAMPLE_BATCH, 3, RESOLUTION, RESOLUTION))]
    assert gen.net.dim_z == 3 * LATENT * LATENT


def test_each_image_depends_only_on_its_seed(tmp_path):
    save_tiny_ldm(tmp_path / "m")
    gen = generators.load("ldm", folder=tmp_path / "m", resolution=RESOLUTION)
    gen.net.sample_steps = STEPS
    together = gen.sample([5, 6, 7, 8])
    apart = np.concatenate([gen.sample([5]), gen.sample([6, 7]), gen.sample([8])])
    assert np.array_equal(together, apart)
    assert np.array_equal(gen.sample([8, 5])[::-1], together[[0, 3]])
    assert not np.array_equal(together[0], together[1])
    # Opening the folder again gives the same bytes.
    again = ldm.load_diffusers_folder(tmp_path / "m", RESOLUTION, sample_steps=STEPS)
    assert np.array_equal(again.sample([5, 6, 7, 8]), together)


def test_step_count_is_a_setting(tmp_path):
    save_tiny_ldm(tmp_path / "m")
    two = ldm.load_diffusers_folder(tmp_path / "m", RESOLUTION, sample_steps=2).sample([0])
    three = ldm.load_diffusers_folder(tmp_path / "m", RESOLUTION, sample_steps=3).sample([0])
    assert not np.array_equal(two, three)
    assert ldm.load_diffusers_folder(tmp_path / "m", RESOLUTION).net.sample_steps == ldm.SAMPLE_STEPS


def test_checkpoint_sha256_covers_unet_and_autoencoder_weights(tmp_path):
    save_tiny_ldm(tmp_path / "m")
    gen = ldm.load_diffusers_folder(tmp_path / "m", RESOLUTION)
    files = [tmp_path / "m" / "unet" / WEIGHTS_NAME, tmp_path / "m" / "vqvae" / WEIGHTS_NAME]
    assert gen.checkpoint_sha256 == weights_sha256(tmp_path / "m", files)
    # Another autoencoder under the same U-Net is another model.
    save_tiny_ldm(tmp_path / "other", seed=1)
    (tmp_path / "m" / "vqvae" / WEIGHTS_NAME).write_bytes((tmp_path / "other" / "vqvae" / WEIGHTS_NAME).read_bytes())
    assert ldm.load_diffusers_folder(tmp_path / "m", RESOLUTION).checkpoint_sha256 != gen.checkpoint_sha256


def test_folder_errors_name_the_folder_and_file(tmp_path):
    folder = tmp_path / "model"
    save_tiny_ldm(folder)

    def fails(message, path=folder, resolution=RESOLUTION, **kw):
        with pytest.raises(GeneratorError, match=message) as e:
            ldm.load_diffusers_folder(path, resolution, **kw)
        assert str(path) in str(e.value)

    fails("does not exist", path=tmp_path / "CompVis" / "ldm-celebahq-256")
    fails(r"decodes 8x8 latents to 16 px images \(x2\), not the requested resolution 32", resolution=32)
    fails("sample_steps=0", sample_steps=0)
    with pytest.raises(GeneratorError, match="needs checkpoint|no folder"):
        generators.load("ldm", resolution=RESOLUTION)
    scheduler = folder / "scheduler" / "scheduler_config.json"
    config = json.loads(scheduler.read_text())
    scheduler.write_text(json.dumps({**config, "prediction_type": "noise"}))
    fails("prediction_type 'noise'")
    scheduler.unlink()
    fails("scheduler_config.json missing")
    tiny_ldm_scheduler().save_pretrained(folder / "scheduler")
    # A U-Net whose channels are not the autoencoder's latent channels.
    unet_config = json.loads((folder / "unet" / "config.json").read_text())
    (folder / "unet" / "config.json").write_text(json.dumps({**unet_config, "in_channels": 4}))
    fails("unet/in_channels=4 but vqvae/ has 3 latent channels")
    (folder / "unet" / "config.json").write_text(json.dumps(unet_config))
    # Weights that do not fit the config are reported, not half-loaded.
    (folder / "unet" / "config.json").write_text(json.dumps({**unet_config, "block_out_channels": [16, 16]}))
    fails("unet/ could not be loaded")
    (folder / "unet" / "config.json").write_text(json.dumps(unet_config))
    # Pickled weights are never read.
    (folder / "vqvae" / WEIGHTS_NAME).rename(folder / "vqvae" / "diffusion_pytorch_model.bin")
    fails("pickled diffusion_pytorch_model.bin, which is refused")
    (folder / "vqvae" / "diffusion_pytorch_model.bin").rename(folder / "vqvae" / WEIGHTS_NAME)
    (folder / "vae").mkdir()
    fails("both vqvae/ and vae/")
    (folder / "vae").rmdir()
    (folder / "vqvae").rename(folder / "first_stage")
    fails("no autoencoder")
    (folder / "first_stage").rename(folder / "vqvae")
    # A text-conditioned U-Net is another family.
    with isolated_rng(0):
        UNet2DConditionModel(sample_size=LATENT, in_channels=3, out_channels=3, layers_per_block=1,
                             block_out_channels=(8, 16), norm_num_groups=4, cross_attention_dim=8,
                             down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                             up_block_types=("CrossAttnUpBlock2D", "UpBlock2D")).save_pretrained(folder / "unet")
    fails("describes a UNet2DConditionModel, expected UNet2DModel")
