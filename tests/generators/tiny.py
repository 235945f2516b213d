"""Helpers the per-architecture tests share: random training photos and tiny network pairs."""

from __future__ import annotations

import json
from types import ModuleType

import numpy as np

from generators.base import isolated_rng

# Tiny versions of every network family at 32 px: a few training steps take seconds.
TINY_OPTIONS = {
    "progan": {"ch": 8, "dim_z": 16},
    "cramergan": {"ch": 8, "dim_z": 32, "feature_dim": 8},
    "mmdgan": {"ch": 8, "dim_z": 32, "feature_dim": 8},
    "sngan": {"ch": 8, "dim_z": 32},
    "stylegan": {"ch": 8, "dim_z": 16, "n_mlp": 2},
    "stylegan2": {"ch": 8, "dim_z": 16, "n_mlp": 2},
    "stylegan3": {"ch": 4, "dim_z": 8, "dim_w": 8, "num_layers": 3},
    "ddpm": {"ch": 8, "layers_per_block": 1, "sample_steps": 2},
}


def random_photos(n: int = 16, resolution: int = 32) -> np.ndarray:
    """uint8 (n, R, R, 3) noise: enough for a few training steps of a tiny network."""
    return np.random.default_rng(0).integers(0, 256, (n, resolution, resolution, 3), dtype=np.uint8)


def tiny_networks(family: ModuleType, options: dict, resolution: int = 32, seed: int = 0, **extra):
    """(generator, discriminator) of `family` built from options + extra on a private RNG."""
    opts = family.parse_options({**options, **extra})
    with isolated_rng(seed):
        return family.build_generator(resolution, opts), family.build_discriminator(resolution, opts)


def tiny_ldm_scheduler():
    from diffusers import DDIMScheduler

    # CompVis/ldm-celebahq-256's schedule: scaled-linear betas, no x0 clipping.
    return DDIMScheduler(beta_schedule="scaled_linear", beta_start=0.0015, beta_end=0.0195, clip_sample=False)


def save_tiny_ldm(folder, kind: str = "vqvae", seed: int = 0, scaling_factor: float = 0.6, latent: int = 8):
    """A tiny latent-diffusion model saved in diffusers' LDMPipeline layout (kind "vqvae": a
    VQModel in vqvae/; "vae": an AutoencoderKL in vae/). The autoencoder has 2 levels (f = 2),
    so images are 2 * latent px. Returns the in-memory LDMPipeline."""
    from diffusers import AutoencoderKL, LDMPipeline, UNet2DModel, VQModel

    channels = 3 if kind == "vqvae" else 4
    common = dict(in_channels=3, out_channels=3, down_block_types=("DownEncoderBlock2D",) * 2,
                  up_block_types=("UpDecoderBlock2D",) * 2, block_out_channels=(8, 16),
                  layers_per_block=1, norm_num_groups=4, sample_size=2 * latent,
                  scaling_factor=scaling_factor, latent_channels=channels)
    with isolated_rng(seed):
        ae = VQModel(num_vq_embeddings=32, **common) if kind == "vqvae" else AutoencoderKL(**common)
        unet = UNet2DModel(sample_size=latent, in_channels=channels, out_channels=channels, layers_per_block=1,
                           block_out_channels=(8, 16), down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                           up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4)
    pipe = LDMPipeline(vqvae=ae, unet=unet, scheduler=tiny_ldm_scheduler())
    pipe.save_pretrained(folder)
    if kind == "vae":  # LDMPipeline names its autoencoder vqvae/; the KL layout names it vae/
        (folder / "vqvae").rename(folder / "vae")
        index = json.loads((folder / "model_index.json").read_text())
        index["vae"] = index.pop("vqvae")
        (folder / "model_index.json").write_text(json.dumps(index))
    return pipe
