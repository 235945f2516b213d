"""Unconditional latent diffusion (Rombach et al., CVPR 2022) from a local diffusers folder.

An LDM denoises in the latent space of a pretrained autoencoder instead of in pixels: the U-Net
runs on (C, R/f, R/f) latents (f = 2**(levels-1) of the autoencoder, 4 for CompVis'
ldm-celebahq-256), and the autoencoder's decoder maps the final latent to an R x R image. The
folder is diffusers' LDMPipeline layout:

    model_index.json            (optional)
    unet/       UNet2DModel     config.json + diffusion_pytorch_model.safetensors
    vqvae/      VQModel         (or vae/ AutoencoderKL, the KL-regularised first stage)
    scheduler/  scheduler_config.json

Sampling, as LDMPipeline and the paper's DDIM sampler: z_T ~ N(0, I) of the U-Net's shape,
deterministic DDIM (eta = 0, the pipeline's default) over `sample_steps` steps with the
folder's noise schedule and timestep spacing, then z_0 / scaling_factor (the paper rescales the
latents to unit variance for diffusion, Sec. 4.3.2 / Appendix G; diffusers stores that factor
in the autoencoder's config) goes through the decoder. A VQ decoder quantises the latent to its
codebook first: the paper "absorbs the quantization layer into the decoder", and
VQModel.decode does the same. Images are decoded values clamped to [-1, 1] -> uint8.

The seed's latent (generators.base.seed_latents, dim_z = C*h*w) *is* z_T, and render() runs
fixed-size batches with no cross-sample operation, so image s depends on seed s only. The
folder's scheduler class is not used: whatever it names, sampling is DDIM with its settings, as
LDMPipeline (which requires a DDIMScheduler) does. checkpoint_sha256 covers the U-Net's and the
autoencoder's weights files (generators.diffusers_folder.weights_sha256).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

# Before diffusers: sets HF_HUB_OFFLINE, which huggingface_hub reads once at import.
from generators.diffusers_folder import (SCHEDULER_CONFIG_NAME, check_folder, component_config,
                                         load_component, read_json, weights_file, weights_sha256)

import torch  # noqa: E402
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DModel, VQModel  # noqa: E402
from torch import nn  # noqa: E402

from generators.base import GeneratorError, NetworkGenerator  # noqa: E402
from generators.ddpm import PREDICTION_TYPES, ddim_denoise, ddim_settings  # noqa: E402

NAME = "ldm"
# LDMPipeline's default number of DDIM steps.
SAMPLE_STEPS = 50
# First-stage autoencoders by sub-folder: the VQ-regularised one LDMPipeline uses, and the
# KL-regularised one of the paper's other first stage (and of Stable Diffusion).
AUTOENCODERS = {"vqvae": ("VQModel", VQModel), "vae": ("AutoencoderKL", AutoencoderKL)}


class LatentDecoder(nn.Module):
    """Latent (N, C, h, w) of the diffusion model -> image (N, 3, h*f, w*f) in about [-1, 1]."""

    def __init__(self, autoencoder: nn.Module):
        super().__init__()
        self.autoencoder = autoencoder  # VQModel or AutoencoderKL; only its decoder runs
        config = autoencoder.config
        # Diffusion latents are the autoencoder's scaled by this (Rombach et al. Sec. 4.3.2);
        # shift_factor (0 here for LDM and SD 1/2) is the offset some later autoencoders add.
        self.scaling_factor = float(config.scaling_factor)
        self.shift_factor = float(getattr(config, "shift_factor", None) or 0.0)
        self.factor = 2 ** (len(config.block_out_channels) - 1)  # one downsampling per level but the last
        quantized = getattr(config, "vq_embed_dim", None)  # VQModel: the codebook's width
        self.channels = quantized or config.latent_channels

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        assert latents.ndim == 4 and latents.shape[1] == self.channels, tuple(latents.shape)
        z = latents / self.scaling_factor + self.shift_factor
        # VQModel.decode quantises z to the codebook first (force_not_quantize=False).
        images = self.autoencoder.decode(z).sample
        assert images.shape[1:] == (3, latents.shape[2] * self.factor, latents.shape[3] * self.factor), (
            tuple(images.shape))
        return images


class LatentDDIMSampler(nn.Module):
    """Seed latent (N, C*h*w) = z_T -> image (N, 3, R, R) in [-1, 1]: DDIM in latent space, then decode."""

    def __init__(self, unet: UNet2DModel, decoder: LatentDecoder, scheduler: Mapping[str, Any], sample_steps: int):
        super().__init__()
        self.unet = unet  # denoises latents of (in_channels, sample_size, sample_size)
        self.decoder = decoder  # latents -> pixels
        side = unet.config.sample_size
        self.latent_shape = (unet.config.in_channels, side, side)
        self.resolution = side * decoder.factor  # side of the decoded images
        self.dim_z = unet.config.in_channels * side * side  # the latent is z_T itself
        self.scheduler_config = ddim_settings(scheduler)  # DDIMScheduler keyword arguments
        self.sample_steps = sample_steps  # DDIM steps per image

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        assert z.ndim == 2 and z.shape[1] == self.dim_z, f"expected (N, {self.dim_z}), got {tuple(z.shape)}"
        latents = ddim_denoise(self.unet, DDIMScheduler(**self.scheduler_config), self.sample_steps,
                               z.view(-1, *self.latent_shape))
        images = self.decoder(latents)
        assert images.shape[1:] == (3, self.resolution, self.resolution), tuple(images.shape)
        return images.clamp(-1, 1)


def _autoencoder_dir(folder: Path) -> tuple[Path, str, type]:
    found = [(folder / sub, name, cls) for sub, (name, cls) in AUTOENCODERS.items() if (folder / sub).is_dir()]
    if not found:
        raise GeneratorError(f"diffusers folder {folder}: no autoencoder: expected a vqvae/ (VQModel) "
                             f"or vae/ (AutoencoderKL) sub-folder")
    if len(found) > 1:
        raise GeneratorError(f"diffusers folder {folder}: both vqvae/ and vae/; keep the one the U-Net was trained with")
    return found[0]


def load_diffusers_folder(path: Path | str, resolution: int, device: str = "cpu", *,
                          sample_steps: int = SAMPLE_STEPS) -> NetworkGenerator:
    """A Generator from a local LDMPipeline-style folder (see the module doc), safetensors only.

    Refused with a GeneratorError naming the folder and file: a missing or pickled weights
    file, a conditional U-Net, latent channels that do not match the autoencoder's, decoded
    images whose side is not `resolution`, or a prediction type DDIM does not know.
    """
    # Checked first so that a typo is never taken for a Hub repository id.
    folder = check_folder(Path(path))
    unet_dir = folder / "unet"
    unet_config = component_config(unet_dir, folder, ("UNet2DModel",))
    ae_dir, ae_class, ae_cls = _autoencoder_dir(folder)
    ae_config = component_config(ae_dir, folder, (ae_class,))
    weights = [weights_file(unet_dir, folder), weights_file(ae_dir, folder)]
    scheduler_path = folder / "scheduler" / SCHEDULER_CONFIG_NAME
    scheduler = read_json(scheduler_path, folder)
    kind = scheduler.get("prediction_type", "epsilon")
    if kind not in PREDICTION_TYPES:
        raise GeneratorError(f"diffusers folder {folder}: {scheduler_path} prediction_type {kind!r} "
                             f"is not one of {list(PREDICTION_TYPES)}")
    if unet_config.get("class_embed_type") is not None or unet_config.get("num_class_embeds") is not None:
        raise GeneratorError(f"diffusers folder {folder}: class-conditional UNets are not supported")
    channels = ae_config.get("vq_embed_dim") or ae_config.get("latent_channels", 4)
    for key in ("in_channels", "out_channels"):
        if unet_config.get(key) != channels:
            raise GeneratorError(f"diffusers folder {folder}: unet/{key}={unet_config.get(key)} but "
                                 f"{ae_dir.name}/ has {channels} latent channels")
    side = unet_config.get("sample_size")
    factor = 2 ** (len(ae_config.get("block_out_channels", [])) - 1)
    if not isinstance(side, int) or side * factor != resolution:
        raise GeneratorError(f"diffusers folder {folder}: decodes {side}x{side} latents to "
                             f"{side * factor if isinstance(side, int) else side} px images (x{factor}), "
                             f"not the requested resolution {resolution}")
    if not 1 <= sample_steps <= scheduler.get("num_train_timesteps", 1000):
        raise GeneratorError(f"diffusers folder {folder}: sample_steps={sample_steps} must be in "
                             f"[1, num_train_timesteps]")
    unet = load_component(UNet2DModel, unet_dir, folder)
    decoder = LatentDecoder(load_component(ae_cls, ae_dir, folder))
    sampler = LatentDDIMSampler(unet, decoder, scheduler, sample_steps)
    return NetworkGenerator(NAME, sampler, resolution, weights_sha256(folder, weights), device)
