"""Build progress in the terminal while the pipeline runs, and the per-stage summary after it.

The DirectRunner's driver blocks in `run()` and the workers are other processes (or other
machines), so the stages' `Meter` appends progress records to a folder in the staging area
(pipelines.stage_metrics) and a driver thread tails them: per stage, items done of expected,
the rate and an ETA; tqdm bars on a terminal, a log line every `interval` seconds otherwise.
The same records give the summary on runners that report no Beam metrics (DaskRunner).
"""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from benchmark.config import BuildConfig
from benchmark.plan import BuildPlan
from benchmark.records import REFERENCE

log = logging.getLogger("attribution88.progress")


@dataclass(frozen=True)
class Stage:
    name: str  # the stage's timer (`<name>_ms`)
    label: str
    unit: str
    counters: tuple[str, ...]  # what counts as one item done


STAGES = (
    Stage("read_real", "reading photos", "photos", ("real_read", "real_rejected")),
    Stage("train_generators", "training", "steps", ("train_steps", "train_steps_reused")),
    Stage("sample_generators", "sampling", "images", ("sampled", "sampled_from_cache")),
    Stage("compute_features", "features", "images",
          ("features_candidate", "features_reference", "features_from_cache")),
    Stage("select_by_quality", "selection", "samples", ("selected",)),
    Stage("apply_corruptions", "corruptions", "samples", ("clean", "corrupted")),
    Stage("write_shards", "writing shards", "samples", ("written", "written_kept")),
)


def expected_totals(cfg: BuildConfig, plan: BuildPlan) -> dict[str, int]:
    """Items each stage will handle, from the plan; stages left out have no fixed count."""
    photos = sum(len(c.files) for c in plan.real_chunks)
    if plan.train_tasks:
        photos += sum(len(c.files) for c in plan.train_chunks)
    samples = sum(m.samples for m in plan.models) + sum(t.samples for t in plan.train_tasks)
    references = sum(len(c.files) for c in plan.real_chunks if c.role == REFERENCE)
    stored = len(cfg.classes) * len(cfg.semantics) * sum(cfg.splits.counts().values())
    totals = {"read_real": photos, "sample_generators": samples,
              "compute_features": samples + references, "apply_corruptions": stored,
              "write_shards": stored}
    if plan.train_tasks:
        totals["train_generators"] = sum(t.training.steps for t in plan.train_tasks)
    return totals


class ProgressTail:
    """Running totals of the progress records in `folder` (each *.jsonl file read once, in
    order; a line still being written waits for its newline)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.totals: dict[str, int] = {}
        self.first: dict[str, float] = {}  # counter -> time of its first record
        self.last: dict[str, float] = {}
        self._offsets: dict[Path, int] = {}

    def poll(self) -> dict[str, int]:
        for path in sorted(self.folder.glob("*.jsonl")):
            offset = self._offsets.get(path, 0)
            with open(path, "rb") as f:
                f.seek(offset)
                data = f.read()
            end = data.rfind(b"\n") + 1
            for line in data[:end].splitlines():
                record = json.loads(line)
                t = record.pop("t")
                for name, n in record.items():
                    self.totals[name] = self.totals.get(name, 0) + n
                    self.first.setdefault(name, t)
                    self.last[name] = max(self.last.get(name, t), t)
            self._offsets[path] = offset + end
        return self.totals

    def done(self, stage: Stage) -> int:
        return sum(self.totals.get(c, 0) for c in stage.counters)

    def rate(self, stage: Stage) -> float | None:
        """Items per second of wall time since the stage's first record."""
        times = [t for c in stage.counters for t in (self.first.get(c), self.last.get(c))
                 if t is not None]
        span = max(times) - min(times) if times else 0.0
        return self.done(stage) / span if span > 0 else None


def _duration(seconds: float) -> str:
    seconds = int(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s"


def status_line(stage: Stage, done: int, expected: int | None, rate: float | None) -> str:
    """e.g. `sampling: 3,400/11,200 images (30%), 45.2/s, ETA 2m53s`."""
    text = f"{stage.label}: {done:,}"
    if expected:
        text += f"/{expected:,} {stage.unit} ({100 * done / expected:.0f}%)"
    else:
        text += f" {stage.unit}"
    if rate:
        text += f", {rate:.1f}/s"
        if expected and done < expected:
            text += f", ETA {_duration((expected - done) / rate)}"
    return text


class ProgressReporter:
    """A driver thread showing the stages' progress until stopped; a context manager."""

    def __init__(self, folder: Path, expected: dict[str, int], *, interval: float = 30.0,
                 bars: bool | None = None, stream=None, enabled: bool = True):
        self.enabled = enabled
        self.tail = ProgressTail(folder)
        self.expected = expected
        self.stream = stream or sys.stderr
        self.bars = self.stream.isatty() if bars is None else bars
        self.interval = 0.5 if self.bars else interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="a88-progress", daemon=True)
        self._shown: dict[str, int] = {}
        self._tqdm: dict[str, object] = {}

    def __enter__(self) -> "ProgressReporter":
        if self.enabled:
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if not self.enabled:
            return
        self._stop.set()
        self._thread.join()
        for bar in self._tqdm.values():
            bar.close()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.report()
        self.report()

    def report(self) -> list[str]:
        """Read new records and show what changed; returns the lines it logged."""
        try:
            self.tail.poll()
        except (OSError, ValueError):  # the folder is gone (build over) or a line is odd
            return []
        lines = []
        for stage in STAGES:
            done = self.tail.done(stage)
            if done == self._shown.get(stage.name, 0):
                continue
            if self.bars:
                self._bar(stage).update(done - self._shown.get(stage.name, 0))
            else:
                line = status_line(stage, done, self.expected.get(stage.name), self.tail.rate(stage))
                log.info("%s", line)
                lines.append(line)
            self._shown[stage.name] = done
        return lines

    def _bar(self, stage: Stage):
        if stage.name not in self._tqdm:
            from tqdm import tqdm

            self._tqdm[stage.name] = tqdm(total=self.expected.get(stage.name), desc=stage.label,
                                          unit=f" {stage.unit}", position=len(self._tqdm),
                                          file=self.stream, dynamic_ncols=True)
        return self._tqdm[stage.name]


def stage_summary(metrics: dict[str, int]) -> list[dict]:
    """Per stage that ran: worker-seconds, items, items per worker-second (from Beam metrics,
    or from the progress records' totals where the runner reports none)."""
    rows = []
    for stage in STAGES:
        ms = metrics.get(f"{stage.name}_ms")
        items = sum(metrics.get(c, 0) for c in stage.counters)
        if ms is None and not items:
            continue
        seconds = (ms or 0) / 1000
        rows.append({"stage": stage.name, "seconds": round(seconds, 2), "items": items,
                     "unit": stage.unit,
                     "items_per_second": round(items / seconds, 2) if seconds > 0 else None})
    return rows


def summary_table(rows: list[dict]) -> str:
    lines = [f"  {'stage':<18} {'seconds':>9} {'items':>10}  {'items/s':>9}"]
    for r in rows:
        rate = f"{r['items_per_second']:9.1f}" if r["items_per_second"] else f"{'':>9}"
        lines.append(f"  {r['stage']:<18} {r['seconds']:9.1f} {r['items']:10,}  {rate} {r['unit']}")
    return "\n".join(lines)
