"""Where and how model stages run: the device, and a fixed torch thread count.

The thread count is part of the result, not only of the speed: float reductions split over a
different number of threads round differently, and a trained generator (so every image it
makes) changed between a 2-thread DirectRunner and a 1-thread Dask worker. Every model stage
therefore sets the same count on whatever worker it lands.
"""

from __future__ import annotations

from dataclasses import dataclass

from benchmark.config import RuntimeSpec


@dataclass(frozen=True)
class ComputeSettings:
    device: str  # "cpu" or "cuda", already resolved
    torch_threads: int
    # Beam `accelerator` resource hint for the model stages (runtime.accelerator); only with cuda
    accelerator: str | None = None

    @classmethod
    def for_device(cls, device: str, runtime: RuntimeSpec) -> ComputeSettings:
        """The settings for a resolved device: the accelerator hint only goes with cuda."""
        return cls(device, runtime.torch_threads,
                   accelerator=runtime.accelerator if device == "cuda" else None)

    def resource_hints(self) -> dict[str, str]:
        """Hints for the model stages; runners that do not read hints (Direct, Dask) ignore them."""
        return {} if self.accelerator is None else {"accelerator": self.accelerator}

    def apply(self) -> None:
        """Call in DoFn.setup: pins torch's intra-op threads on this worker."""
        import torch

        if self.device == "cuda" and not torch.cuda.is_available():
            # the driver checks only when the workers run on its machine (_resolve_device)
            raise RuntimeError("runtime.device is cuda but this worker sees no CUDA device")
        torch.set_num_threads(self.torch_threads)
