"""Several processes, one model: torchrun's ranks, the process group, DistributedDataParallel and
the few collectives the training loop needs.

    python -m torch.distributed.run --nproc_per_node N -m eval.train ...   (torchrun)

As torchvision's classification reference (references/classification/utils.py
init_distributed_mode, train.py): torchrun sets RANK, WORLD_SIZE and LOCAL_RANK; process r
drives GPU LOCAL_RANK; `data.batch_size` is per process, so a step sees world_size x batch_size
examples; BatchNorm becomes SyncBatchNorm on CUDA; only rank 0 writes files and logs. Without
those variables, or with WORLD_SIZE 1, nothing here does anything and a run is one plain process.

Backend: gloo for CPU tensors, NCCL for CUDA ones ("cpu:gloo,cuda:nccl" where CUDA exists, so
the small CPU collectives below work beside NCCL's).

BatchNorm on the CPU: torch's DDP refuses SyncBatchNorm layers on CPU modules ("SyncBatchNorm
layers only work with GPU modules", torch 2.14), so CPU ranks keep plain BatchNorm: each rank
normalises with its own batch's statistics, and DDP broadcasts rank 0's running statistics at
every training forward (`broadcast_buffers`). The gradients then differ from one process with the
whole batch; they match it for models without BatchNorm (Yu, DCT-CNN) or with SyncBatchNorm.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Mapping, Sequence

import torch
import torch.distributed as dist
from torch import nn

from benchmark.keys import derive_seed

ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0  # this process's GPU on its node


def ranks_from_env(environ: Mapping[str, str] = os.environ) -> Ranks:
    """torchrun's RANK, WORLD_SIZE, LOCAL_RANK; none set: one process. ValueError names a bad one."""
    if not any(k in environ for k in ENV):
        return Ranks()
    values = {}
    for key in ENV:
        try:
            values[key] = int(environ[key])
        except KeyError:
            raise ValueError(f"environment: {key} is not set, but {', '.join(k for k in ENV if k in environ)} "
                             f"is; start with torchrun") from None
        except ValueError:
            raise ValueError(f"environment: {key}={environ[key]!r} is not an integer") from None
    ranks = Ranks(values["RANK"], values["WORLD_SIZE"], values["LOCAL_RANK"])
    if ranks.world_size < 1 or not 0 <= ranks.rank < ranks.world_size or ranks.local_rank < 0:
        raise ValueError(f"environment: RANK {ranks.rank}, WORLD_SIZE {ranks.world_size}, "
                         f"LOCAL_RANK {ranks.local_rank}: need 0 <= RANK < WORLD_SIZE")
    return ranks


def backend() -> str:
    return "cpu:gloo,cuda:nccl" if torch.cuda.is_available() else "gloo"


def init(ranks: Ranks) -> None:
    """Join the process group (MASTER_ADDR/MASTER_PORT from the environment, as torchrun sets)."""
    if ranks.world_size == 1:
        return
    if torch.cuda.is_available():
        torch.cuda.set_device(ranks.local_rank)
    dist.init_process_group(backend(), rank=ranks.rank, world_size=ranks.world_size)


def close() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def failed_ranks(ranks: Ranks, failed: bool) -> list[int]:
    """The ranks whose checks failed, on every rank, so all stop together (a rank that stopped
    alone would leave the others waiting in their first collective)."""
    if ranks.world_size == 1:
        return [0] if failed else []
    flags = torch.zeros(ranks.world_size, dtype=torch.int32)
    flags[ranks.rank] = int(failed)
    dist.all_reduce(flags)
    return [r for r, f in enumerate(flags.tolist()) if f]


def sync_batchnorm(model: nn.Module, device: torch.device, world_size: int) -> nn.Module:
    """BatchNorm -> SyncBatchNorm for several CUDA ranks (torchvision's --sync-bn, always on
    here: per-GPU batches are small, 32 RepMix pairs); the same model otherwise (see the module
    docstring for the CPU). The state dict's keys do not change."""
    if world_size > 1 and device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return model


def wrap(model: nn.Module, device: torch.device, world_size: int) -> nn.Module:
    """DistributedDataParallel around `model` (which rank 0's weights and buffers overwrite on
    every rank); `model` itself for one process. Train through the wrapper, save and evaluate
    the unwrapped model (no `module.` in its keys)."""
    if world_size == 1:
        return model
    return nn.parallel.DistributedDataParallel(
        model, device_ids=[device.index] if device.type == "cuda" else None)


def sync_buffers(model: nn.Module, world_size: int) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every rank: each rank's last training
    step updated its own, and every rank should evaluate the model rank 0 saves."""
    if world_size == 1:
        return
    for buffer in model.buffers():
        dist.broadcast(buffer.data, src=0)


def barrier(world_size: int) -> None:
    """Wait for every rank (a no-op in one process): e.g. before reading a file rank 0 wrote."""
    if world_size > 1:
        dist.barrier()


def sum_across(values: Sequence[float], world_size: int) -> list[float]:
    """Element-wise sums over the ranks (float64 on the CPU, gloo); `values` for one process."""
    if world_size == 1:
        return [float(v) for v in values]
    t = torch.tensor([float(v) for v in values], dtype=torch.float64)
    dist.all_reduce(t)
    return t.tolist()


def from_main(values: Mapping[str, float], world_size: int) -> dict[str, float]:
    """Rank 0's metrics on every rank, so early-stopping decisions agree bit for bit."""
    if world_size == 1:
        return dict(values)
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
    dist.broadcast(t, src=0)
    return dict(zip(keys, t.tolist()))


# --- RNG: one stream per rank (dropout masks must differ between ranks), saved and restored ---

def seed_ranks(seed: int, rank: int, world_size: int) -> None:
    """A fresh run on several ranks: torch's generators seeded by (seed, rank), after the model
    is built (so its initialisation is the single-process one)."""
    if world_size > 1:
        torch.manual_seed(derive_seed(seed, "train-rank", str(rank)))


def rng_state(device: torch.device, world_size: int) -> dict:
    """The generators' states for a checkpoint: this process's as `torch`/`cuda` (the format of
    a single-process run) and, with several ranks, every rank's under `by_rank`. A collective:
    every rank calls it."""
    own = {"torch": torch.get_rng_state(),
           "cuda": torch.cuda.get_rng_state_all() if device.type == "cuda" else []}
    if world_size == 1:
        return own
    cuda = (torch.cuda.get_rng_state(device) if device.type == "cuda"
            else torch.zeros(0, dtype=torch.uint8))
    by_rank = []
    for mine in (own["torch"], cuda):
        gathered = [torch.empty_like(mine) for _ in range(world_size)]
        dist.all_gather(gathered, mine)
        by_rank.append(gathered)
    return {**own, "by_rank": [{"torch": t, "cuda": c} for t, c in zip(*by_rank)]}


def restore_rng(state: dict, device: torch.device, rank: int, world_size: int) -> None:
    if world_size == 1:
        torch.set_rng_state(state["torch"])
        if device.type == "cuda" and state["cuda"]:
            torch.cuda.set_rng_state_all(list(state["cuda"]))
        return
    by_rank = state.get("by_rank") or []
    if len(by_rank) != world_size:
        raise ValueError(f"the checkpoint holds the RNG states of {len(by_rank) or 1} rank(s), "
                         f"not {world_size}")
    torch.set_rng_state(by_rank[rank]["torch"])
    if device.type == "cuda" and by_rank[rank]["cuda"].numel():
        torch.cuda.set_rng_state(by_rank[rank]["cuda"], device)
