"""MaterializeSamples: join each chunk's pixels with the placements of its kept images.

Keyed by chunk id, so the pixels move through one grouping as whole batches; what comes out
is one stored sample per kept image, with its full provenance.
"""

from __future__ import annotations

import hashlib
import math

import apache_beam as beam

from benchmark.protocol import CLEAN, REAL
from benchmark.repmix import semantic_labels
from benchmark.shards import ShardSample, shard_name
from pipelines.stage_metrics import counter


class _MaterializeFn(beam.DoFn):
    def __init__(self, classes: tuple[str, ...], semantics: dict[str, bool]):
        self._label = {c: i for i, c in enumerate(classes)}
        self._semantic_label = semantic_labels(semantics)
        self._seen = semantics

    def process(self, element):
        chunk_id, grouped = element
        batches = {b.chunk_id: b for b in grouped["images"]}
        placements = list(grouped["placements"])
        if not placements:
            return
        if len(batches) != 1:
            raise RuntimeError(f"chunk {chunk_id}: {len(batches)} image batches for its placements")
        batch = next(iter(batches.values()))
        index = {k: i for i, k in enumerate(batch.keys)}
        for p in placements:
            i = index.get(p.key)
            if i is None:
                raise RuntimeError(f"chunk {chunk_id}: placed key {p.key} has no image")
            png = batch.pngs[i]
            real = p.source == REAL
            meta = {
                "key": p.key, "split": p.split, "source": p.source, "label": self._label[p.source],
                "semantic": p.semantic, "semantic_label": self._semantic_label[p.semantic],
                "seen": self._seen[p.semantic], "generator": batch.generator,
                "checkpoint_sha256": batch.checkpoint_sha256,
                "sample_index": -1 if real else int(batch.ranks[i]),
                "latent_seed": -1 if real else int(batch.latent_seeds[i]),
                "origin": batch.origins[i] if real else "",
                "cluster": p.cluster, "distance": None if math.isnan(p.distance) else p.distance,
                "filled": p.filled, "corruption": CLEAN, "severity": 0, "corruption_seen": True,
                "corruption_seed": 0, "shard": shard_name(p.split, p.shard), "position": p.position,
                "sha256": hashlib.sha256(png).hexdigest(), "png_bytes": len(png),
            }
            counter("materialized").inc()
            yield ShardSample(key=p.key, png=png, meta=meta)


class MaterializeSamples(beam.PTransform):
    """(image batches keyed by chunk, placements keyed by chunk) -> ShardSample per kept image."""

    def __init__(self, classes: tuple[str, ...], semantics: dict[str, bool]):
        super().__init__()
        self._classes = classes
        self._semantics = semantics

    def expand(self, inputs):
        batches, placements = inputs
        keyed = batches | "KeyByChunk" >> beam.Map(lambda b: (b.chunk_id, b))
        return ({"images": keyed, "placements": placements}
                | "JoinPixelsAndPlacements" >> beam.CoGroupByKey()
                | "EmitSamples" >> beam.ParDo(_MaterializeFn(self._classes, self._semantics)))

