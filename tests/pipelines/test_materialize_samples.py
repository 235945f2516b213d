"""MaterializeSamples: each kept image gets its labels; the semantic index puts seen ones first."""

import apache_beam as beam
from apache_beam.testing import test_pipeline
from apache_beam.testing.util import assert_that, equal_to

from benchmark.records import CANDIDATE, ImageBatch, Placement
from pipelines.materialize_samples import MaterializeSamples


def _batch(semantic: str) -> ImageBatch:
    return ImageBatch(chunk_id=f"c-{semantic}", source="sngan", semantic=semantic, role=CANDIDATE,
                      keys=(f"sngan-{semantic}-s00000000",), pngs=(b"png-" + semantic.encode(),),
                      ranks=(0,), origins=("",), generator="sngan", checkpoint_sha256="0" * 64,
                      latent_seeds=(7,))


def test_semantic_label_counts_seen_semantics_first():
    # Config order: an unseen semantic first. The released RepMix analysis reads indices
    # below the number of seen semantics as seen, so `rooms` must come after both seen ones.
    semantics = {"rooms": False, "faces": True, "birds": True}
    batches = [_batch(s) for s in semantics]
    placements = [(b.chunk_id, Placement(key=b.keys[0], chunk_id=b.chunk_id, source="sngan",
                                         semantic=b.semantic, split="test", shard=0, position=i))
                  for i, b in enumerate(batches)]
    with test_pipeline.TestPipeline() as p:
        out = ((p | "Batches" >> beam.Create(batches), p | "Placements" >> beam.Create(placements))
               | MaterializeSamples(("real", "sngan"), semantics)
               | beam.Map(lambda s: (s.record.semantic, s.record.semantic_label, s.record.seen,
                                     s.record.label)))
        assert_that(out, equal_to([("faces", 0, True, 1), ("birds", 1, True, 1),
                                   ("rooms", 2, False, 1)]))
