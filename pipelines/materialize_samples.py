"""MaterializeSamples: join each chunk's pixels with the placements of its kept images.

Keyed by chunk id, so the pixels move through one grouping as whole batches; what comes out
is one stored sample per kept image, with its full provenance.
"""

from __future__ import annotations

import apache_beam as beam

from benchmark.manifest import SampleRecord, StoredSample
from benchmark.repmix import semantic_labels
from pipelines.stage_metrics import METER


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
            record = SampleRecord.clean(p, batch, i, label=self._label[p.source],
                                        semantic_label=self._semantic_label[p.semantic],
                                        seen=self._seen[p.semantic])
            METER.count("materialized")
            yield StoredSample(record, batch.pngs[i])


class MaterializeSamples(beam.PTransform):
    """(image batches keyed by chunk, placements keyed by chunk) -> StoredSample per kept image."""

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

