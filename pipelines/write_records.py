"""WriteRecords: the single leaf of the build, writing manifest.parquet and rejections.parquet.

One leaf on purpose: Beam's DaskRunner computes only the last leaf of a pipeline, so every
branch (shards, rejections) must end here.
"""

from __future__ import annotations

from pathlib import Path

import apache_beam as beam

from benchmark.manifest import write_manifest, write_rejections

MANIFEST = "manifest"
REJECTION = "rejection"


def _write(element, out_dir: str):
    _, tagged = element
    manifest = [record for kind, record in tagged if kind == MANIFEST]
    rejections = {(r["key"], r["stage"]): r for kind, r in tagged if kind == REJECTION}
    write_rejections(rejections.values(), Path(out_dir) / "rejections.parquet")
    write_manifest(manifest, Path(out_dir) / "manifest.parquet")
    yield len(manifest)


class WriteRecords(beam.PTransform):
    def __init__(self, out_dir: str):
        super().__init__()
        self._out_dir = out_dir

    def expand(self, inputs):
        manifest_rows, rejection_rows = inputs
        tagged = ((manifest_rows | "TagManifest" >> beam.Map(lambda r: (MANIFEST, r)),
                   rejection_rows | "TagRejections" >> beam.Map(lambda r: (REJECTION, r)))
                  | "FlattenRecords" >> beam.Flatten()
                  | "KeyAll" >> beam.Map(lambda t: (None, t))
                  | "GatherRecords" >> beam.GroupByKey()
                  | "WriteTables" >> beam.FlatMap(_write, self._out_dir))
        return tagged
