"""Training on several processes (eval/distributed.py, eval.train under torchrun): CPU, gloo, 2 ranks.

One test runs the real command under torchrun (new interpreters: about 40 s on 2 busy cores);
the others fork the test process into ranks (seconds). Every launch has a deadline, so a hang
(a rank waiting in a collective the other never reaches) fails the test instead of blocking the
suite."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from safetensors.torch import load_file
from torch import nn

from eval import distributed, run_files, train
from eval.distributed import Ranks, ranks_from_env
from eval.run_files import RunError
from tests.eval.test_train import CLASSES, INFO, Out, build_tiny_benchmark, config, tiny_loss

REPO = Path(__file__).resolve().parents[2]
ENTRY = Path(__file__).with_name("ddp_entry.py")
DEADLINE = 240  # seconds for one multi-process launch (about 20 s on 2 busy cores)


def test_ranks_from_env():
    assert ranks_from_env({}) == Ranks(0, 1, 0)
    assert ranks_from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1"}) == Ranks(3, 4, 1)
    with pytest.raises(ValueError, match="LOCAL_RANK is not set"):
        ranks_from_env({"RANK": "0", "WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="WORLD_SIZE='two'"):
        ranks_from_env({"RANK": "0", "WORLD_SIZE": "two", "LOCAL_RANK": "0"})
    with pytest.raises(ValueError, match="RANK 2, WORLD_SIZE 2"):
        ranks_from_env({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})


def test_batchnorm_becomes_syncbatchnorm_on_cuda_ranks_only():
    """By construction: torch refuses SyncBatchNorm in a CPU DDP module, and this machine has no
    GPU pair, so the GPU path is checked by the conversion, not by a run."""
    def net():
        return nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Sequential(nn.BatchNorm2d(4)))

    keys = set(net().state_dict())
    gpus = distributed.sync_batchnorm(net(), torch.device("cuda", 1), 2)
    assert sum(isinstance(m, nn.SyncBatchNorm) for m in gpus.modules()) == 2
    assert set(gpus.state_dict()) == keys  # eval.predict loads it into a plain model
    for device, world in ((torch.device("cpu"), 2), (torch.device("cuda"), 1)):
        kept = distributed.sync_batchnorm(net(), device, world)
        assert not any(isinstance(m, nn.SyncBatchNorm) for m in kept.modules())


def test_cuda_runtime_drives_the_local_rank_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    rt = train.select_runtime(config(), "cuda", Ranks(rank=5, world_size=8, local_rank=1))
    assert (rt.device, rt.rank, rt.world_size, rt.is_main) == (torch.device("cuda", 1), 5, 8, False)
    assert train.select_runtime(config(), "cpu", Ranks(0, 2, 0)).device == torch.device("cpu")


def test_resume_with_another_world_size_is_refused(tmp_path):
    run_files.write_json(tmp_path / "run.json", {"world_size": 2})
    train.check_world_size(tmp_path, 2)
    with pytest.raises(RunError, match="trained on 2 process.*--nproc_per_node 2"):
        train.check_world_size(tmp_path, 1)
    run_files.write_json(tmp_path / "run.json", {})  # runs from before: one process
    with pytest.raises(RunError, match="without torchrun"):
        train.check_world_size(tmp_path, 2)


# --- the training loop on 2 spawned ranks: a stand-in model with BatchNorm and dropout ---

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _spawn(fn, args: tuple, nprocs: int = 2) -> None:
    """Run fn(rank, *args) on `nprocs` forked ranks (no new interpreter to start), killed at the
    deadline; fn joins them with `_join`."""
    port = _free_port()
    ctx = mp.start_processes(fn, args=(port, nprocs, *args), nprocs=nprocs, join=False,
                             start_method="fork")
    end = time.monotonic() + DEADLINE
    while not ctx.join(timeout=max(end - time.monotonic(), 0.1)):
        if time.monotonic() > end:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"the {nprocs} ranks did not finish within {DEADLINE} s (a hang?)")


class BNNet(nn.Module):
    """Linear -> BatchNorm -> ReLU -> dropout -> linear."""

    def __init__(self):
        super().__init__()
        self.body = nn.Linear(12, 8)
        self.norm = nn.BatchNorm1d(8)
        self.drop = nn.Dropout(0.5)
        self.head = nn.Linear(8, CLASSES)

    def forward(self, images: torch.Tensor) -> Out:
        emb = self.drop(torch.relu(self.norm(self.body(images.flatten(1)))))
        return Out(logits=self.head(emb), embedding=emb)


def _bn_parts(rank: int, world_size: int) -> train.TrainParts:
    torch.manual_seed(0)
    model = BNNet()

    def train_batches(epoch: int):
        gen = torch.Generator().manual_seed(epoch)
        for _ in range(2):  # global batches of 8, each rank its share
            labels = torch.randint(0, CLASSES, (8,), generator=gen)
            images = torch.randn(8, 1, 3, 2, 2, generator=gen) + labels[:, None, None, None, None]
            share = slice(rank * 8 // world_size, (rank + 1) * 8 // world_size)
            yield {"image": images[share], "label": labels[share, None], "mix": torch.ones(8, 1)[share]}

    def val_batches():
        labels = torch.arange(6) % CLASSES
        images = torch.randn(6, 3, 2, 2, generator=torch.Generator().manual_seed(7)) + labels[:, None, None, None]
        yield {"image": images[rank::world_size], "label": labels[rank::world_size]}

    return train.TrainParts(model=model, loss=tiny_loss, train_batches=train_batches,
                            val_batches=val_batches, train_count=16, mixing=False)


def _join(rank: int, port: int, world_size: int) -> None:
    """What torchrun does for a rank: its environment."""
    torch.set_num_threads(1)  # a forked child must not reuse the parent's OpenMP pool
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))


def _fit_on_rank(rank: int, port: int, world_size: int, out: str) -> None:
    _join(rank, port, world_size)
    ranks = ranks_from_env()
    distributed.init(ranks)
    try:
        rt = train.Runtime(torch.device("cpu"), None, False, ranks.rank, ranks.world_size)
        parts = _bn_parts(rank, world_size)
        run = Path(out) / "run"
        train.fit(run, config("optim.epochs=2"), parts, INFO, rt)
        result = {f"param.{k}": v for k, v in parts.model.named_parameters()}
        result |= {f"buffer.{k}": v for k, v in parts.model.named_buffers()}
        # the per-rank RNG: restoring a checkpoint's states replays this rank's own draws
        state = distributed.rng_state(rt.device, world_size)
        first = torch.rand(4)
        torch.rand(7)
        distributed.restore_rng(state, rt.device, rank, world_size)
        result |= {"draw": first, "replayed": torch.rand(4)}
        # a failed check on rank 1 stops both ranks; rank 0's metrics decide on both
        result["failed"] = torch.tensor(distributed.failed_ranks(ranks, rank == 1))
        result["metric"] = torch.tensor(distributed.from_main({"val_acc": rank + 0.5}, world_size)["val_acc"])
        torch.save({k: v.detach().clone() for k, v in result.items()}, Path(out) / f"rank{rank}.pt")
    finally:
        distributed.close()


def test_fit_on_two_ranks_keeps_weights_and_buffers_identical(tmp_path):
    _spawn(_fit_on_rank, (str(tmp_path),))
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    torch.manual_seed(0)
    start = BNNet().state_dict()
    for key in r0:
        if key.startswith(("param.", "buffer.")):
            assert torch.equal(r0[key], r1[key]), key  # bit for bit
    assert not torch.equal(r0["param.body.weight"], start["body.weight"])  # it trained
    assert not torch.equal(r0["buffer.norm.running_mean"], start["norm.running_mean"])
    # each rank its own dropout masks (seeded by seed and rank), each restorable
    assert not torch.equal(r0["draw"], r1["draw"])
    for r in (r0, r1):
        assert torch.equal(r["draw"], r["replayed"])
        assert r["failed"].tolist() == [1] and float(r["metric"]) == 0.5
    # rank 0 saved the unwrapped model: plain keys, and every rank's RNG state
    last = run_files.load_checkpoint(tmp_path / "run", "last", with_state=True)
    assert set(last.weights) == set(BNNet().state_dict())
    assert torch.equal(last.weights["norm.running_var"], r0["buffer.norm.running_var"])
    assert len(last.state["rng"]["by_rank"]) == 2


# --- the command under torchrun on a tiny built benchmark ---

SETS = ["--set", "runtime.progress=true", "--set", "data.workers=0", "--set",
        "data.online_corruption=false", "--set", "optim.epochs=2"]


def _torchrun(args: list[str], report: Path, watch: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1",
           "DDP_TEST_REPORT": str(report), "DDP_TEST_WATCH": str(watch)}
    try:
        return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                               "--nproc_per_node", "2", str(ENTRY), *args], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=DEADLINE)
    except subprocess.TimeoutExpired:
        pytest.fail(f"torchrun did not finish within {DEADLINE} s (a hang?)")


@pytest.fixture(scope="module")
def bench(tmp_path_factory) -> Path:
    """18 seen train samples (3 classes x 6) in one shard, 6 seen val samples."""
    return build_tiny_benchmark(tmp_path_factory.mktemp("ddp") / "bench")


@pytest.fixture(scope="module")
def two_ranks(bench, tmp_path_factory) -> Path:
    """Yu et al.'s model, 2 ranks x 4 examples per step, 2 epochs; each rank's report."""
    root = tmp_path_factory.mktemp("two_ranks")
    run = root / "run"
    done = _torchrun(["--benchmark", str(bench), "--model", "yu", "--out", str(run),
                      "--set", "data.batch_size=4", *SETS], report=root / "report", watch=run)
    assert done.returncode == 0, done.stderr[-3000:]
    return root


def _report(root: Path, rank: int) -> dict:
    return json.loads((root / "report" / f"rank{rank}.json").read_text())


def _main_on_rank(rank: int, port: int, world_size: int, argv: list[str], crash_epoch: int,
                  out: str) -> None:
    """`python -m eval.train ARGV` as torchrun's rank `rank`; a crash at the start of
    `crash_epoch` (0: none), as a KeyboardInterrupt would."""
    _join(rank, port, world_size)
    real_epoch = train.train_one_epoch

    def epoch(*args, **kwargs):
        if args[-1] == crash_epoch:
            raise KeyboardInterrupt
        return real_epoch(*args, **kwargs)

    train.train_one_epoch = epoch
    try:
        code = train.main(argv)
    except KeyboardInterrupt:
        code = "crashed"
    Path(out, f"rank{rank}.code").write_text(str(code))


def test_torchrun_matches_one_process_with_the_global_batch(bench, two_ranks, tmp_path):
    """No BatchNorm (Yu): the ranks' batches together are the single process's (eval.data), and
    DDP averages the per-rank mean gradients, so both runs take the same steps up to float32
    rounding (the mean of two 4-sample means vs one 8-sample mean), which Adam amplifies where a
    gradient is near zero (its step is about lr whatever the gradient's size).
    Measured (6 Adam steps, lr 1e-3): per tensor, relative L2 difference at most 5e-4, largest
    element difference 2.3e-4; losses within 2e-5 relative. One process with batch 4 instead
    (no gradient averaging) gives 0.7 and 1.6e-2. Tolerances: 1e-2 relative L2 and 2e-3 per
    element (two Adam steps), 1e-3 relative on the losses, the same accuracies."""
    one = tmp_path / "one"  # one process (forked, like the ranks: one thread, no contention)
    _spawn(_main_on_rank, (["--benchmark", str(bench), "--model", "yu", "--out", str(one),
                            "--set", "data.batch_size=8", *SETS], 0, str(tmp_path)), nprocs=1)
    assert (tmp_path / "rank0.code").read_text() == "0"
    run = two_ranks / "run"
    a, b = run_files.load_checkpoint(one, "last"), run_files.load_checkpoint(run, "last")
    assert a.weights.keys() == b.weights.keys()  # no `module.` prefix
    for name, x in a.weights.items():
        y = b.weights[name]
        assert float((x - y).norm() / x.norm()) < 1e-2, name
        assert float((x - y).abs().max()) < 2e-3, name
    rows = [run_files.load_checkpoint(r, "last", with_state=True).state["history"] for r in (one, run)]
    assert len(rows[0]) == len(rows[1]) == 2
    for x, y in zip(*rows):
        for key in ("train_loss", "val_loss"):
            assert x[key] == pytest.approx(y[key], rel=1e-3), key
        for key in ("train_acc", "val_acc", "val_det_acc"):
            assert x[key] == y[key], key
    assert run_files.read_json(run / "run.json")["world_size"] == 2
    assert run_files.read_json(one / "run.json")["world_size"] == 1
    # each rank ended with the same weights as the other, and as rank 0 saved
    w0, w1 = (load_file(str(two_ranks / "report" / f"rank{r}.safetensors")) for r in (0, 1))
    for name in w0:
        assert torch.equal(w0[name], w1[name]) and torch.equal(w0[name], b.weights[name]), name
    # eval.predict loads the run unchanged
    from eval.predict import load_run
    assert load_run(run, bench, device="cpu").epoch == 2


def test_torchrun_rank_1_writes_and_prints_nothing(two_ranks):
    zero, one = _report(two_ranks, 0), _report(two_ranks, 1)
    assert zero["code"] == one["code"] == 0
    written = {Path(p).name for _, p in zero["events"]}
    assert {"config.json", "run.json", "last.json", "best.json", "metrics.csv", "curves.png"} <= written
    assert one["events"] == []
    assert "epoch 1" in zero["stderr"] and "img/s" in zero["stderr"] and "best" in zero["stdout"]
    assert one["stderr"] == one["stdout"] == ""


def test_torchrun_resume_gives_the_uninterrupted_weights(bench, two_ranks, tmp_path):
    run = tmp_path / "run"
    args = ["--benchmark", str(bench), "--model", "yu", "--out", str(run), "--set",
            "data.batch_size=4", *SETS]
    _spawn(_main_on_rank, (args, 2, str(tmp_path)))
    assert [(tmp_path / f"rank{r}.code").read_text() for r in (0, 1)] == ["crashed"] * 2
    assert run_files.load_checkpoint(run, "last").epoch == 1
    _spawn(_main_on_rank, ([*args, "--resume"], 0, str(tmp_path)))
    assert [(tmp_path / f"rank{r}.code").read_text() for r in (0, 1)] == ["0"] * 2
    a = run_files.load_checkpoint(two_ranks / "run", "last")
    b = run_files.load_checkpoint(run, "last")
    assert a.epoch == b.epoch == 2
    for name in a.weights:
        assert torch.equal(a.weights[name], b.weights[name]), name
    # a config error on every rank: all stop with code 2, one message, nothing written
    bad = tmp_path / "bad"
    _spawn(_main_on_rank, (["--benchmark", str(bench), "--model", "yu", "--out", str(bad),
                            "--set", "optim.epochs=0"], 0, str(tmp_path)))
    assert [(tmp_path / f"rank{r}.code").read_text() for r in (0, 1)] == ["2"] * 2
    assert not bad.exists()
