"""Command line: train a generator from scratch on a folder of photos.

    python -m generators.train --arch sngan --images photos/ --out ckpt/sngan_cat \
        --resolution 128 --steps 2000 --batch-size 64 --seed 0 --ch 64

`python -m generators.train` runs main() here (generators/train.py only forwards, so that
importing this module never shadows the generators.train() function).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from typing import Any

import numpy as np
import yaml
from tqdm import tqdm

from benchmark.command_line import command_parser
from generators.base import GeneratorError
from generators.folder import FolderGenerator
from generators.training import GeneratorTraining, StepStats, train

PROG = "python -m generators.train"  # the name in --help; a88 passes its own

# Images decoded per call: bounds the temporary arrays while filling the training set.
_LOAD_CHUNK = 256


def read_photos(folder: Path, resolution: int) -> np.ndarray:
    """Every image in `folder` (name order), centre-cropped and resized, as uint8 (N, R, R, 3)."""
    source = FolderGenerator(folder, resolution)
    images = np.empty((source.count, resolution, resolution, 3), dtype=np.uint8)
    for start in range(0, source.count, _LOAD_CHUNK):
        stop = min(start + _LOAD_CHUNK, source.count)
        images[start:stop] = source.sample(range(start, stop))
    return images


def parse_args(argv: list[str] | None, prog: str = PROG) -> argparse.Namespace:
    p = command_parser(prog, __doc__.split("\n\n")[0], [
        "--arch sngan --images photos/ --out ckpt/sngan_cat --resolution 128 --steps 2000 "
        "--batch-size 64 --seed 0 --ch 64"])
    p.add_argument("--arch", default="sngan", help="trainable architecture (default: sngan)")
    p.add_argument("--images", type=Path, required=True, help="folder of jpg/jpeg/png/webp photos")
    p.add_argument("--out", type=Path, required=True, help="checkpoint stem or .safetensors path")
    p.add_argument("--resolution", type=int, default=128, help="training resolution (default: 128)")
    p.add_argument("--steps", type=int, required=True, help="generator updates")
    p.add_argument("--batch-size", type=int, default=64, help="batch size (default: 64)")
    p.add_argument("--seed", type=int, default=0, help="seed for init, batches and latents (default: 0)")
    p.add_argument("--ch", type=int, help="base channel width (default: the architecture's published one)")
    p.add_argument("--dim-z", type=int, help="latent size (default: the architecture's)")
    p.add_argument("--option", action="append", default=[], metavar="KEY=VALUE",
                   help="another architecture option, e.g. --option truncation_psi=0.7 (repeatable)")
    p.add_argument("--n-dis", type=int, help="D updates per G update (default: the architecture's)")
    p.add_argument("--lr-g", type=float, help="generator learning rate (default: the architecture's)")
    p.add_argument("--lr-d", type=float, help="discriminator learning rate (default: the architecture's)")
    p.add_argument("--checkpoint-every", type=int, default=0,
                   help="save the whole training state every N steps; rerunning the same command "
                        "resumes from it (default: 0, never)")
    p.add_argument("--grid-every", type=int, default=0,
                   help="also write a sample grid every N steps (default: 0, only at the end)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    return p.parse_args(argv)


def parse_options(args: argparse.Namespace) -> dict[str, Any]:
    """--ch, --dim-z and every --option KEY=VALUE (VALUE read as a YAML scalar: 3, 0.7, true, text)."""
    options: dict[str, Any] = {}
    for item in args.option:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise GeneratorError(f"--option {item!r}: expected KEY=VALUE")
        options[key] = yaml.safe_load(value)
    for key, value in (("ch", args.ch), ("dim_z", args.dim_z)):
        if value is not None:
            options[key] = value
    return options


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    args = parse_args(argv, prog)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        options = parse_options(args)
        images = read_photos(args.images, args.resolution)
        logging.getLogger(__name__).info("read %d photos from %s", len(images), args.images)
        # A progress bar on stderr (stdout carries only the checkpoint path, for scripts).
        with tqdm(total=args.steps, desc=f"train {args.arch}", unit="step", file=sys.stderr,
                  mininterval=1.0) as bar:
            def progress(stats: StepStats) -> None:
                bar.n = stats.step  # a resumed run starts part-way
                bar.set_postfix(d_loss=f"{stats.d_loss:.3f}", g_loss=f"{stats.g_loss:.3f}", refresh=False)
                bar.refresh()

            config = GeneratorTraining(steps=args.steps, batch_size=args.batch_size,
                                       seed=args.seed, lr_g=args.lr_g, lr_d=args.lr_d,
                                       n_dis=args.n_dis)
            path = train(args.arch, images, args.out, config, options, grid_every=args.grid_every,
                         checkpoint_every=args.checkpoint_every, progress=progress,
                         device=args.device)
    except GeneratorError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
