"""Reading a network's weights from a local file, the one way the project does it.

A weights file is a .safetensors file or a .pth/.pt file read with torch.load(weights_only=True),
so reading it can never run code (a pickle that would is refused). Nothing is downloaded: the
path is always one a user gave. Callers turn WeightsFileError into their own error naming the
config key or model that pointed at the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import torch


class WeightsFileError(ValueError):
    """The file is missing or does not hold a flat name -> tensor state dict."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict in a local .safetensors or .pth/.pt file, on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise WeightsFileError(path, "no such file")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # any parse failure means the same thing to the user
        raise WeightsFileError(path, f"cannot be read ({type(exc).__name__}: {exc})") from exc
    if not isinstance(state, Mapping) or not state:
        raise WeightsFileError(path, f"does not hold a state dict (got {type(state).__name__})")
    bad = [k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise WeightsFileError(path, f"is not a flat name->tensor state dict (e.g. entry {bad[0]!r})")
    return dict(state)
