"""ReadRealImages: photo files -> decoded, centre-cropped, resized PNG batches (+ rejections)."""

from __future__ import annotations

import logging
from pathlib import Path

import apache_beam as beam

from benchmark.images import MAX_PIXELS, MIN_SIDE, ImageDecodeError, center_crop_resize, decode_photo, encode_png
from benchmark.protocol import REAL
from benchmark.records import ImageBatch, RealChunk
from pipelines.stage_metrics import METER, Meter

log = logging.getLogger(__name__)


class _ReadChunkFn(beam.DoFn):
    def __init__(self, resolution: int, roots: dict[str, str], max_pixels: int, min_side: int,
                 meter: Meter):
        self._meter = meter
        self._resolution = resolution
        self._roots = roots  # semantic -> folder, to record paths relative to it
        self._max_pixels, self._min_side = max_pixels, min_side

    def process(self, chunk: RealChunk):
        keys, pngs, ranks, origins, rejections = [], [], [], [], []
        with self._meter.timed("read_real"):
            for rank, f in enumerate(chunk.files, start=chunk.first_rank):
                origin = Path(f.path).relative_to(self._roots[chunk.semantic]).as_posix()
                try:
                    data = Path(f.path).read_bytes()
                    img = center_crop_resize(decode_photo(data, max_pixels=self._max_pixels,
                                                          min_side=self._min_side), self._resolution)
                except (ImageDecodeError, OSError) as exc:
                    reason = exc.reason if isinstance(exc, ImageDecodeError) else f"unreadable: {exc.strerror}"
                    self._meter.count("real_rejected")
                    rejections.append({"key": f.key, "source": REAL, "semantic": chunk.semantic,
                                       "path": f.path, "stage": "read_real", "reason": reason})
                    continue
                keys.append(f.key)
                pngs.append(encode_png(img))
                ranks.append(rank)
                origins.append(origin)
        self._meter.count("real_read", len(keys))
        log.info("read %s: %d photos", chunk.chunk_id, len(keys))
        yield ImageBatch(chunk_id=chunk.chunk_id, source=REAL, semantic=chunk.semantic,
                         role=chunk.role, keys=tuple(keys), pngs=tuple(pngs), ranks=tuple(ranks),
                         origins=tuple(origins), generator="photo", checkpoint_sha256="",
                         rejections=tuple(rejections))


class ReadRealImages(beam.PTransform):
    """RealChunks -> ImageBatches, each carrying the rejection rows of its undecodable files."""

    def __init__(self, resolution: int, roots: dict[str, str], *, max_pixels: int = MAX_PIXELS,
                 min_side: int = MIN_SIDE, meter: Meter = METER):
        super().__init__()
        self._meter = meter
        self._resolution = resolution
        self._roots = roots
        self._max_pixels, self._min_side = max_pixels, min_side

    def expand(self, chunks):
        return (chunks
                | "ReshuffleChunks" >> beam.Reshuffle()
                | "DecodePhotos" >> beam.ParDo(_ReadChunkFn(self._resolution, self._roots,
                                                          self._max_pixels, self._min_side,
                                                          self._meter)))
