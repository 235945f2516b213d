"""The dataset card, OUT/README.md: Hub front matter, then what a reader wants to see first.

The front matter is the Hugging Face Hub's dataset-card YAML: a license placeholder, task
categories, `configs` with the shards of each split as `data_files`, and `dataset_info` with the
features and split sizes. So `datasets.load_dataset(OUT)` reads the folder with the right
splits, columns and counts (and checks the counts), and the folder can be pushed to the Hub as
it is. The body: counts, sample grids, selection distances, corruption x severity counts,
how to load, and the config that built it.

Everything comes from the config and the manifest (no clock, no host, no runner), so the card
is byte-identical for the same config on any runner.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pyarrow as pa
import yaml

from benchmark import protocol
from benchmark.atomic import write_text
from benchmark.config import BuildConfig
from benchmark.croissant import DatasetText
from benchmark.manifest import MANIFEST_SCHEMA
from benchmark.repmix import semantic_labels

# `python -m pipelines.build_attribution88` without any runner option: runner options change
# where a build runs, never its bytes, and a card naming them would differ between runners.
CANONICAL_COMMAND = "python -m pipelines.build_attribution88 --config config.json --out OUT"
# Until the publisher sets it: the photos' and the generators' terms decide the license.
LICENSE_PLACEHOLDER = "unknown"
HUB_DTYPES = {pa.string(): "string", pa.int32(): "int32", pa.int64(): "int64",
              pa.float64(): "float64", pa.bool_(): "bool"}
# The Hub's size buckets: (upper bound, name).
SIZE_CATEGORIES = ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"),
                   (1_000_000, "100K<n<1M"), (10_000_000, "1M<n<10M"),
                   (100_000_000, "10M<n<100M"))


def size_category(samples: int) -> str:
    for bound, name in SIZE_CATEGORIES:
        if samples < bound:
            return name
    return "n>100M"


def hub_features(classes: tuple[str, ...], semantics: list[str],
                 schema: pa.Schema = MANIFEST_SCHEMA) -> list[dict]:
    """The features of a shard sample as the Hub's webdataset loader gives them: `__key__`,
    `__url__`, `json` (the manifest row; `label` and `semantic_label` as class labels) and
    `png` (an image). Declared, not inferred: inference reads the first samples only, and a
    shard opening with real photos (null `distance`) would type that column null."""
    struct = []
    for column in schema:
        if column.name == "label":
            dtype = {"class_label": {"names": {i: c for i, c in enumerate(classes)}}}
        elif column.name == "semantic_label":
            dtype = {"class_label": {"names": {i: s for i, s in enumerate(semantics)}}}
        elif column.type in HUB_DTYPES:
            dtype = HUB_DTYPES[column.type]
        else:
            raise ValueError(f"dataset card: manifest column {column.name!r} has type "
                             f"{column.type}, which has no Hub dtype here")
        struct.append({"name": column.name, "dtype": dtype})
    return [{"name": "__key__", "dtype": "string"}, {"name": "__url__", "dtype": "string"},
            {"name": "json", "struct": struct}, {"name": "png", "dtype": "image"}]


def front_matter(cfg: BuildConfig, manifest: pa.Table) -> str:
    """The card's YAML header, between its `---` lines."""
    seen = {s: spec.seen for s, spec in cfg.semantics.items()}
    semantics = [s for s, _ in sorted(semantic_labels(seen).items(), key=lambda kv: kv[1])]
    splits = Counter(manifest.column("split").to_pylist())
    present = [s for s in protocol.SPLIT_NAMES if splits[s]]
    # The Hub wants a size per split; the stored PNG bytes are what a reader downloads.
    png_bytes = Counter()
    for r in manifest.select(["split", "png_bytes"]).to_pylist():
        png_bytes[r["split"]] += r["png_bytes"]
    meta = {
        "license": LICENSE_PLACEHOLDER,
        "pretty_name": f"{cfg.protocol} synthetic-image attribution benchmark",
        "task_categories": ["image-classification"],
        "tags": ["synthetic-image-attribution", "gan-fingerprints", "image-forensics",
                 "imagenet-c", "webdataset", "croissant"],
        "size_categories": [size_category(len(manifest))],
        "configs": [{"config_name": "default", "default": True,
                     "data_files": [{"split": s, "path": f"{s}-*.tar"} for s in present]}],
        "dataset_info": {
            "features": hub_features(tuple(cfg.classes), semantics),
            "splits": [{"name": s, "num_bytes": png_bytes[s], "num_examples": splits[s]}
                       for s in present],
        },
    }
    body = yaml.safe_dump(meta, sort_keys=False, default_flow_style=False, allow_unicode=True,
                          width=100)
    return ("# license: a placeholder. Set it (and `license` in croissant.json) to the terms "
            "of the photos and\n# generators used, before publishing: "
            "https://hf.co/docs/hub/repositories-licenses\n" + body)


def corruption_table(manifest: pa.Table, split: str) -> list[str]:
    """Markdown rows: per corruption (protocol order; clean last), its count per severity."""
    rows = [r for r in manifest.select(["split", "corruption", "severity", "corruption_seen"])
            .to_pylist() if r["split"] == split]
    if not rows:
        return []
    counts = Counter((r["corruption"], r["severity"]) for r in rows)
    seen = {r["corruption"]: r["corruption_seen"] for r in rows}
    order = [c for c in protocol.CORRUPTIONS if c in seen]
    order += sorted(c for c in seen if c not in order and c != protocol.CLEAN)
    sev = protocol.SEVERITIES
    lines = ["| corruption | in training | " + " | ".join(f"severity {s}" for s in sev)
             + " | total |", "|---|---|" + "---:|" * (len(sev) + 1)]
    for c in order:
        cells = [counts.get((c, s), 0) for s in sev]
        lines.append(f"| {c} | {'seen' if seen[c] else 'unseen'} | "
                     + " | ".join(str(n) for n in cells) + f" | {sum(cells)} |")
    if protocol.CLEAN in seen:
        lines.append("| clean | - | " + " | ".join("" for _ in sev)
                     + f" | {counts.get((protocol.CLEAN, 0), 0)} |")
    total = len(rows)
    lines.append("| **all** | | " + " | ".join(
        str(sum(counts.get((c, s), 0) for c in order)) for s in sev) + f" | {total} |")
    return lines


def _count_table(cfg: BuildConfig, manifest: pa.Table) -> list[str]:
    counts = Counter((r["source"], r["semantic"], r["split"])
                     for r in manifest.select(["source", "semantic", "split"]).to_pylist())
    lines = ["| source | semantic | train | val | test |", "|---|---|---:|---:|---:|"]
    for source in cfg.classes:
        for semantic in cfg.semantics:
            c = [counts.get((source, semantic, s), 0) for s in protocol.SPLIT_NAMES]
            lines.append(f"| {source} | {semantic} | {c[0]} | {c[1]} | {c[2]} |")
    return lines


def _loading(splits: list[str]) -> list[str]:
    first = splits[-1]
    return [
        "## Loading", "",
        "`OUT` is this folder (or, with `datasets`, its Hub repository id once pushed).", "",
        "With the benchmark's own reader (`eval.open_benchmark`, what training, prediction and "
        "scoring use):", "",
        "```python",
        "from eval import open_benchmark",
        "",
        'bench = open_benchmark("OUT")',
        "bench.classes, bench.splits              # class names (label order), split names",
        f'table = bench.manifest(split="{first}")      # pyarrow Table; .to_pandas() for pandas',
        f'data = bench.dataset("{first}", seen_only=True, corruptions=["jpeg_compression"])',
        "for sample in data:                      # a torch IterableDataset",
        '    sample["image"], sample["label"]     # uint8 (3, H, W) tensor, class index',
        "```", "",
        "With Hugging Face `datasets` (splits, features and counts come from this card's header):",
        "",
        "```python",
        "from datasets import load_dataset",
        "",
        'ds = load_dataset("OUT")',
        f'ds["{first}"][0]["png"], ds["{first}"][0]["json"]["label"]   # PIL image, manifest row',
        "```", "",
        "With webdataset alone: `wds.WebDataset(\"OUT/train-{000000..000009}.tar\")` yields "
        "`png` and `json` (the manifest row) per key. `croissant.json` describes the same "
        "files and records in MLCommons Croissant 1.0 (`mlcroissant.Dataset(\"OUT/"
        "croissant.json\").records(\"samples\")`).", "",
    ]


def write_card(path: Path, cfg: BuildConfig, manifest: pa.Table, *, grids: dict[str, str],
               histogram: str | None, rejected: int, features_weights: str,
               refused: dict[str, int] | None = None,
               upsampled: dict[str, tuple[int, int]] | None = None) -> None:
    """README.md: the Hub header and the card body (see the module docstring)."""
    splits = [s for s in protocol.SPLIT_NAMES if s in set(manifest.column("split").to_pylist())]
    lines = [
        "---", front_matter(cfg, manifest).rstrip("\n"), "---", "",
        f"# {cfg.protocol} benchmark (protocol {protocol.PROTOCOL_VERSION})", "",
        "Built by `python -m pipelines.build_attribution88`. Classes: "
        + ", ".join(f"{i} {c}" for i, c in enumerate(cfg.classes)) + ".", "",
        f"{len(manifest)} samples at {cfg.resolution}x{cfg.resolution}, stored as lossless PNG in "
        "WebDataset shards (`SPLIT-NNNNNN.tar`, members `KEY.png` and `KEY.json`). "
        "`manifest.parquet` has one row per sample with its provenance; "
        f"`rejections.parquet` lists {rejected} input files that could not be used.", "",
        "Semantics: " + ", ".join(f"{s} ({'seen' if v.seen else 'unseen'})"
                                  for s, v in cfg.semantics.items()) + ".", "",
    ]
    if refused:
        lines += ["Refused inputs by reason: " + ", ".join(f"{k} {v}" for k, v in refused.items()) + ".", ""]
    if upsampled:
        lines += [f"Real photos with a short side under {cfg.resolution} px, kept and upsampled to it: "
                  + ", ".join(f"{s} {n} of {total}" for s, (n, total) in upsampled.items()) + ".", ""]
    lines += ["## Counts", "", *_count_table(cfg, manifest), ""]
    for split, name in grids.items():
        lines += [f"## {split} samples", "",
                  "A row per class, in class order; under each image its semantic"
                  + (", and the corruption and severity stored in it." if split != "train"
                     else "."), "", f"![{split} samples]({name})", ""]
    lines += ["## Selection distances", ""]
    if histogram:
        lines += [f"Each kept synthetic image's distance to its nearest real reference photo in "
                  f"the selection's feature space ({cfg.selection.extractor}, weights "
                  f"`{features_weights}`), per class; the quality filter kept the closest. "
                  "Real photos have none.", "", f"![selection distances]({histogram})", ""]
    else:
        lines += ["No sample records a selection distance.", ""]
    lines += ["## Corruptions", "",
              "Train images are stored clean (training corrupts them online). Val and test "
              "images carry the corruptions below, one per image; `unseen` ones are held out "
              "of training.", ""]
    for split in ("val", "test"):
        table = corruption_table(manifest, split)
        if table:
            lines += [f"{split}:", "", *table, ""]
    lines += _loading(splits)
    lines += [
        "## Build", "",
        f"Config fingerprint (sha256 of the settings in `config.json`; `config_sha256` in "
        f"`dataset_info.json`): `{cfg.fingerprint()}`. This command rebuilds the folder from "
        "the inputs `config.json` names; with the software versions `dataset_info.json` "
        "records, the shards, the manifest and this card come out byte for byte the same:", "",
        "```", CANONICAL_COMMAND, "```", "",
        "A Beam runner option (`--runner`, `--direct_num_workers`, ...) changes where the build "
        "runs, not a byte of its output. `build_stats.json` holds the timings, the one file "
        "that differs between runs.", "",
    ]
    write_text(path, "\n".join(lines))


def croissant_text(cfg: BuildConfig, manifest: pa.Table) -> DatasetText:
    """croissant.json's name, description, version and license, in the card's words."""
    name = (cfg.protocol if cfg.protocol == protocol.PROTOCOL_NAME
            else f"{cfg.protocol}-attribution-benchmark")
    semantics = ", ".join(f"{s} ({'seen' if v.seen else 'unseen'})"
                          for s, v in cfg.semantics.items())
    description = (
        f"A synthetic-image attribution benchmark built with the {protocol.PROTOCOL_NAME} "
        f"protocol's tooling (RepMix, Bui et al. 2022): {len(manifest)} images at "
        f"{cfg.resolution}x{cfg.resolution} px, lossless PNG in WebDataset shards. Classes "
        f"(label order): {', '.join(cfg.classes)}; class 0 holds real photos, the others one "
        f"generator each. Semantics: {semantics}. Splits train/val/test; each val/test image "
        f"carries one ImageNet-C corruption. Config fingerprint {cfg.fingerprint()}.")
    return DatasetText(name=name, description=description, version=protocol.PROTOCOL_VERSION,
                       license=LICENSE_PLACEHOLDER)
