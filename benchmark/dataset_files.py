"""The files beside the shards: classes, dataset_info.json, count checks (the card and its
figures: benchmark.dataset_card, benchmark.card_figures; croissant.json: benchmark.croissant).

All are derived from the manifest and the config alone (no clock, no host), so they are as
reproducible as the shards; timings go to build_stats.json, which is not.
"""

from __future__ import annotations

import json
import tarfile
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from benchmark import protocol
from benchmark.atomic import write_text
from benchmark.config import BuildConfig
from benchmark.images import photo_short_side
from benchmark.repmix import semantic_labels


def write_classes(path: Path, cfg: BuildConfig) -> None:
    """Class names in label order, and the semantics in label order (seen first), each with
    the index the manifest's `semantic_label` and the RepMix CSVs' `dlabel` carry."""
    seen = {s: spec.seen for s, spec in cfg.semantics.items()}
    labels = semantic_labels(seen)
    data = {"classes": list(cfg.classes),
            "semantics": [{"name": s, "label": i, "seen": seen[s]}
                          for s, i in sorted(labels.items(), key=lambda kv: kv[1])]}
    write_text(path, json.dumps(data, indent=2) + "\n")


def read_pngs(out_dir: Path, wanted: list[tuple[str, str]]) -> dict[str, bytes]:
    """PNG payloads of (shard, key) pairs, each shard opened once."""
    by_shard: dict[str, set[str]] = {}
    for shard, key in wanted:
        by_shard.setdefault(shard, set()).add(key)
    found = {}
    for shard, keys in sorted(by_shard.items()):
        with tarfile.open(out_dir / shard) as tar:
            for member in tar:
                key, _, ext = member.name.partition(".")
                if ext == "png" and key in keys:
                    found[key] = tar.extractfile(member).read()
    return found


def count_table(manifest: pa.Table) -> dict[tuple[str, str, str], int]:
    return Counter((r["source"], r["semantic"], r["split"])
                   for r in manifest.select(["source", "semantic", "split"]).to_pylist())


def upsampled_photos(manifest: pa.Table, cfg: BuildConfig) -> dict[str, tuple[int, int]]:
    """Per semantic: (Real-class photos whose short side was under the build's resolution, so
    they were upsampled to it, Real-class photos); read from the photos' headers. A photo gone
    since it was read is not counted as upsampled: the card must not fail a finished build."""
    out: dict[str, list[int]] = {s: [0, 0] for s in cfg.semantics}
    rows = manifest.filter(pc.equal(manifest.column("source"), protocol.REAL)).select(["semantic", "origin"])
    for row in rows.to_pylist():
        counts = out[row["semantic"]]
        counts[1] += 1
        try:
            side = photo_short_side(Path(cfg.semantics[row["semantic"]].path) / row["origin"])
        except OSError:
            continue
        counts[0] += side < cfg.resolution
    return {s: (c[0], c[1]) for s, c in out.items()}


def rejection_counts(rejections: pa.Table) -> dict[str, int]:
    """Refused inputs by kind of reason: the reason up to its first detail (" (" or ":")."""
    kinds = Counter()
    for reason in rejections.column("reason").to_pylist():
        cut = min((i for i in (reason.find(" ("), reason.find(":")) if i >= 0), default=len(reason))
        kinds[reason[:cut]] += 1
    return dict(sorted(kinds.items()))


def write_dataset_info(path: Path, cfg: BuildConfig, manifest: pa.Table, *, rejected: int,
                       weights_id: str, generator_options: dict[tuple[str, str], dict | None],
                       software: dict[str, str]) -> dict:
    """dataset_info.json: what was built, from what, with what; returns what it wrote.

    `generator_options` gives each (source, semantic) network's recorded options (None for
    folders and other projects' files). Written last by the driver: its presence marks the
    folder as a complete benchmark.
    """
    models = sorted({(r["source"], r["semantic"], r["generator"], r["checkpoint_sha256"])
                     for r in manifest.select(["source", "semantic", "generator",
                                               "checkpoint_sha256"]).to_pylist()
                     if r["source"] != protocol.REAL})
    splits = manifest.column("split").to_pylist()
    info = {
        "protocol": cfg.protocol, "protocol_version": protocol.PROTOCOL_VERSION,
        "paper_scale": cfg.paper_scale,
        "config_sha256": cfg.fingerprint(), "seed": cfg.seed, "resolution": cfg.resolution,
        "classes": list(cfg.classes), "samples": len(manifest), "rejected_inputs": rejected,
        "splits": {s: sum(1 for x in splits if x == s) for s in protocol.SPLIT_NAMES},
        "shards": sorted(set(manifest.column("shard").to_pylist())),
        "features": {"extractor": cfg.selection.extractor, "weights": weights_id},
        "generators": [{"source": s, "semantic": m, "arch": a, "checkpoint_sha256": h,
                        "options": generator_options.get((s, m))}
                       for s, m, a, h in models],
        "corruptions": cfg.corruptions.model_dump(mode="json"),
        "software": software,
    }
    write_text(path, json.dumps(info, indent=2, sort_keys=True) + "\n")
    return info


def check_counts(manifest: pa.Table, cfg: BuildConfig) -> list[str]:
    """Every (class, semantic, split) cell holds exactly the configured count."""
    counts = count_table(manifest)
    problems = []
    for source in cfg.classes:
        for semantic in cfg.semantics:
            for split, want in cfg.splits.counts().items():
                got = counts.get((source, semantic, split), 0)
                if got != want:
                    problems.append(f"{source}/{semantic}/{split}: {got} samples, expected {want}")
    wanted = {(c, s, split) for c in cfg.classes for s in cfg.semantics for split in cfg.splits.counts()}
    for cell in sorted(set(counts) - wanted):
        problems.append(f"{'/'.join(cell)}: {counts[cell]} samples in a cell the config does not have")
    keys = manifest.column("key").to_pylist()
    if len(set(keys)) != len(keys):
        problems.append(f"{len(keys) - len(set(keys))} duplicate keys in the manifest")
    return problems
