"""Command line: convert another project's generator file into our checkpoint format, once.

    python -m generators.convert --arch stylegan2 --checkpoint 550000.pt --resolution 256 --out ckpt/sg2-cat
    python -m generators.convert --arch stylegan2 --checkpoint network-snapshot.pkl --resolution 128 \
        --out ckpt/sg2-cat --trust-pickle

The file is opened exactly as generators.load would open it (generators.external: a rosinality
.pt read without unpickling code, or, with --trust-pickle and NVIDIA's code importable, an
NVIDIA .pkl whose conversion is checked against NVIDIA's own forward pass) and written as
OUT.safetensors + OUT.json, the sidecar recording the source file's name and sha256. A build
then names the converted checkpoint: builds never unpickle, so this is the one place a trusted
pickle is opened. The converted generator samples the same bytes as the original file.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmark.command_line import command_parser
from generators import load
from generators.base import GeneratorError
from generators.checkpoint import save_checkpoint
from generators.external import is_external

PROG = "python -m generators.convert"  # the name in --help; a88 passes its own


def parse_args(argv: list[str] | None, prog: str = PROG) -> argparse.Namespace:
    p = command_parser(prog, __doc__.split("\n\n")[0], [
        "--arch stylegan2 --checkpoint 550000.pt --resolution 256 --out ckpt/sg2-cat"])
    p.add_argument("--arch", required=True, help="our architecture the file holds (e.g. stylegan2)")
    p.add_argument("--checkpoint", type=Path, required=True, help="the other project's file (.pt, .pth, .pkl)")
    p.add_argument("--resolution", type=int, required=True, help="the generator's native resolution")
    p.add_argument("--out", type=Path, required=True, help="checkpoint stem or .safetensors path to write")
    p.add_argument("--trust-pickle", action="store_true",
                   help="unpickle an NVIDIA .pkl: this runs code stored in the file; only for files you trust")
    return p.parse_args(argv)


def convert(arch: str, checkpoint: Path, resolution: int, out: Path, trust_pickle: bool = False) -> Path:
    """Write `checkpoint` (another project's format) as our checkpoint at `out`; returns the .safetensors."""
    if not is_external(checkpoint):
        raise GeneratorError(f"{checkpoint} is not another project's checkpoint file (.pt, .pth, .pkl); "
                             f"ours need no conversion")
    gen = load(arch, checkpoint=checkpoint, resolution=resolution, trust_pickle=trust_pickle)
    paths = save_checkpoint(out, gen.net, arch=gen.arch, resolution=gen.resolution, options=gen.options,
                            train=None, converted_from={"file": checkpoint.name,
                                                        "sha256": gen.checkpoint_sha256})
    return paths.weights


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    args = parse_args(argv, prog)
    try:
        path = convert(args.arch, args.checkpoint, args.resolution, args.out, args.trust_pickle)
    except GeneratorError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
