"""The resume store: outputs of finished chunks of work, so a build killed midway continues.

An entry is the output of one chunk (a batch of sampled images, a batch of features), filed
under the sha256 of a canonical JSON of everything that decides that output: the cache format
and protocol version, the library versions, device and torch thread count, the model's weights
and sidecar, the latent seeds, the resolution, the extractor, its weights and settings, and the
input images' hashes. A changed setting or input therefore asks for another key and never meets
stale work.

Entries are written atomically and read back verified: an entry whose bytes do not hash to the
digest it carries, or that was filed under another key, raises CorruptEntry; the caller then
recomputes the chunk and overwrites the entry. Nothing here imports Beam.
"""

from __future__ import annotations

import functools
import hashlib
import json
import struct
from dataclasses import fields
from importlib import metadata
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from benchmark.atomic import sha256_file, write_bytes, write_text
from benchmark.protocol import PROTOCOL_VERSION
from benchmark.records import FeatureBatch, ImageBatch, SampleChunk
from benchmark.shards import ShardSample, ShardStats, encode_meta

FORMAT = "attribution88-cache/1"  # bump when an entry's layout or a key's parts change
_MAGIC = FORMAT.encode() + b"\n"
_DIGEST = 64  # hex sha256
_LENGTH = struct.Struct(">Q")  # the header's length, before the header


class CorruptEntry(ValueError):
    """An entry that cannot be trusted (truncated, altered, misfiled); the message names it."""


def cache_key(parts: Mapping[str, Any]) -> str:
    """sha256 of the canonical JSON of `parts` (sorted keys, no whitespace)."""
    text = json.dumps(parts, sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


@functools.cache
def software() -> dict[str, str | None]:
    """Versions of the libraries whose maths or encoders decide the bytes of a chunk's output
    (read once per process: on a distributed runner, the worker's own)."""
    import cv2

    return {"torch": _version("torch"), "torchvision": _version("torchvision"),
            "diffusers": _version("diffusers"), "numpy": np.__version__, "opencv": cv2.__version__}


class ChunkStore:
    """Entries under ROOT/<key[:2]>/<key>.entry, plus the claims that tie a chunk id to its key.

    Layout of an entry: FORMAT line, sha256 (hex) of the rest, newline, the key, newline, payload.
    """

    def __init__(self, root: str | Path):
        self.root = Path(root)

    def entry_path(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.entry"

    def put(self, key: str, payload: bytes) -> None:
        body = key.encode() + b"\n" + payload
        write_bytes(self.entry_path(key),
                    _MAGIC + hashlib.sha256(body).hexdigest().encode() + b"\n" + body)

    def get(self, key: str) -> bytes | None:
        """The payload filed under `key`; None when there is none. Raises CorruptEntry."""
        path = self.entry_path(key)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        head = len(_MAGIC) + _DIGEST + 1
        if not data.startswith(_MAGIC) or len(data) < head + len(key) + 1:
            raise CorruptEntry(f"{path}: not a {FORMAT} entry, or cut short")
        body = data[head:]
        if hashlib.sha256(body).hexdigest().encode() != data[len(_MAGIC):head - 1]:
            raise CorruptEntry(f"{path}: its bytes do not match the sha256 it carries")
        if body[:len(key) + 1] != key.encode() + b"\n":
            raise CorruptEntry(f"{path}: filed under {key} but written for another key")
        return body[len(key) + 1:]

    # A chunk's output does not carry the key its input was looked up under (for features, that
    # needs the input images), so a miss leaves a claim: chunk id -> key, read when storing.
    def _claim_path(self, chunk_id: str) -> Path:
        return self.root / "claims" / hashlib.sha256(chunk_id.encode()).hexdigest()

    def claim(self, chunk_id: str, key: str) -> None:
        write_text(self._claim_path(chunk_id), key)

    def claimed(self, chunk_id: str) -> str | None:
        try:
            key = self._claim_path(chunk_id).read_text()
        except FileNotFoundError:
            return None
        return key if len(key) == _DIGEST else None


# ----------------------------------------------------------------------------- payloads


def pack(header: Mapping[str, Any], blobs: Sequence[bytes]) -> bytes:
    """A JSON header (with each blob's size) followed by the blobs, byte for byte."""
    text = json.dumps({**header, "blob_sizes": [len(b) for b in blobs]}, sort_keys=True,
                      separators=(",", ":"), allow_nan=False).encode()
    return _LENGTH.pack(len(text)) + text + b"".join(blobs)


def unpack(payload: bytes) -> tuple[dict[str, Any], list[bytes]]:
    """Inverse of pack; raises CorruptEntry when the sizes do not add up."""
    try:
        (n,) = _LENGTH.unpack_from(payload)
        header = json.loads(payload[_LENGTH.size:_LENGTH.size + n])
        sizes = header.pop("blob_sizes")
    except (struct.error, ValueError, KeyError, TypeError) as exc:
        raise CorruptEntry(f"unreadable entry header ({exc})") from None
    start = _LENGTH.size + n
    if sum(sizes) != len(payload) - start:
        raise CorruptEntry(f"entry blobs hold {len(payload) - start} bytes, header says {sum(sizes)}")
    blobs = []
    for size in sizes:
        blobs.append(payload[start:start + size])
        start += size
    return header, blobs


_TUPLES = ("keys", "ranks", "origins", "latent_seeds")


def encode_image_batch(batch: ImageBatch) -> bytes:
    header = {f.name: getattr(batch, f.name) for f in fields(ImageBatch) if f.name != "pngs"}
    return pack(header, batch.pngs)


def decode_image_batch(payload: bytes) -> ImageBatch:
    header, pngs = unpack(payload)
    for name in _TUPLES:
        header[name] = tuple(header[name])
    header["rejections"] = tuple(header["rejections"])
    return ImageBatch(pngs=tuple(pngs), **header)


def encode_cell_features(element: tuple[tuple[str, str], FeatureBatch]) -> bytes:
    cell, batch = element
    feats = np.ascontiguousarray(batch.features)
    return pack({"cell": list(cell), "chunk_id": batch.chunk_id, "role": batch.role,
                 "keys": batch.keys, "dtype": feats.dtype.str, "shape": feats.shape},
                [feats.tobytes()])


def decode_cell_features(payload: bytes) -> tuple[tuple[str, str], FeatureBatch]:
    header, (raw,) = unpack(payload)
    feats = np.frombuffer(raw, dtype=np.dtype(header["dtype"])).reshape(header["shape"]).copy()
    return tuple(header["cell"]), FeatureBatch(chunk_id=header["chunk_id"], role=header["role"],
                                               keys=tuple(header["keys"]), features=feats)


# ----------------------------------------------------------------------------- stages


def model_files_sha256(checkpoint: str, folder: str) -> str:
    """sha256 of what besides the weights decides a network's images: a checkpoint's JSON
    sidecar (its options: truncation, channel widths) or a diffusers folder's config files;
    the digest of nothing for another project's weights file, which has neither."""
    digest = hashlib.sha256()
    if checkpoint:
        path = Path(checkpoint)
        files = [path.with_name(path.name.removesuffix(".safetensors") + ".json")]
        root = path.parent
    else:
        root = Path(folder)
        files = sorted(root.rglob("*.json"))
    for f in files:
        if f.is_file():
            digest.update(f"{f.relative_to(root)}\t{sha256_file(f)}\n".encode())
    return digest.hexdigest()


class SampledChunks:
    """Cache rules for SampleChunk -> ImageBatch (the sampling stage).

    A folder of images is not cached: reading it back is the whole work, and its identity
    (file names and sizes) would not notice an image replaced by another of the same size.
    """

    stage = "sample_generators"  # fault-hook and log name
    counter = "sampled"  # images from the cache count as `sampled_from_cache`

    def __init__(self, resolution: int, device: str, torch_threads: int):
        self._context = {"format": FORMAT, "protocol": PROTOCOL_VERSION, "stage": self.stage,
                         "resolution": resolution, "device": device, "torch_threads": torch_threads}
        self._model_files: dict[tuple[str, str], str] = {}

    def cacheable(self, chunk: SampleChunk) -> bool:
        return chunk.model.arch != "folder"

    def key(self, chunk: SampleChunk) -> str:
        m = chunk.model
        if (m.checkpoint, m.folder) not in self._model_files:
            self._model_files[(m.checkpoint, m.folder)] = model_files_sha256(m.checkpoint, m.folder)
        return cache_key({**self._context, "software": software(), "chunk_id": chunk.chunk_id,
                          "source": m.source, "semantic": m.semantic, "arch": m.arch,
                          "checkpoint_sha256": m.checkpoint_sha256,
                          "model_files_sha256": self._model_files[(m.checkpoint, m.folder)],
                          "start": chunk.start, "stop": chunk.stop, "seeds": list(chunk.seeds),
                          # only when given, so other models' keys stay what they were
                          **({"settings": dict(m.settings)} if m.settings else {})})

    @staticmethod
    def input_id(chunk: SampleChunk) -> str:
        return chunk.chunk_id

    @staticmethod
    def output_id(batch: ImageBatch) -> str:
        return batch.chunk_id

    @staticmethod
    def count(batch: ImageBatch) -> int:
        return len(batch.keys)

    encode = staticmethod(encode_image_batch)
    decode = staticmethod(decode_image_batch)


class CellFeatures:
    """Cache rules for ImageBatch -> ((source, semantic), FeatureBatch) (the features stage,
    one output per batch)."""

    stage = "compute_features"
    counter = "features"

    def __init__(self, extractor: str, settings: Mapping[str, Any], weights: str, device: str,
                 torch_threads: int):
        """`settings`: the extractor's config section; `weights`: its weights file or `random`."""
        self._context = {"format": FORMAT, "protocol": PROTOCOL_VERSION, "stage": self.stage,
                         "extractor": extractor, "settings": dict(settings), "device": device,
                         "torch_threads": torch_threads}
        self._weights = weights
        self._weights_sha256: str | None = None

    def _weights_id(self) -> str:
        # Hashed where the extractor loads, once: the file this worker reads is the one that counts.
        if self._weights_sha256 is None:
            self._weights_sha256 = "random" if self._weights == "random" else sha256_file(self._weights)
        return self._weights_sha256

    @staticmethod
    def cacheable(batch: ImageBatch) -> bool:
        return True

    def key(self, batch: ImageBatch) -> str:
        pngs = hashlib.sha256(b"".join(hashlib.sha256(p).digest() for p in batch.pngs)).hexdigest()
        return cache_key({**self._context, "software": software(), "weights": self._weights_id(),
                          "chunk_id": batch.chunk_id, "role": batch.role, "source": batch.source, "semantic": batch.semantic,
                          "keys": list(batch.keys), "pngs_sha256": pngs})

    @staticmethod
    def input_id(batch: ImageBatch) -> str:
        return batch.chunk_id

    @staticmethod
    def output_id(element: tuple[tuple[str, str], FeatureBatch]) -> str:
        return element[1].chunk_id

    @staticmethod
    def count(element: tuple[tuple[str, str], FeatureBatch]) -> int:
        return len(element[1].keys)

    encode = staticmethod(encode_cell_features)
    decode = staticmethod(decode_cell_features)


# ----------------------------------------------------------------------------- shards


def shard_inputs_sha256(name: str, samples: Sequence[ShardSample]) -> str:
    """What decides a shard's bytes: its name, and each sample's key, PNG and metadata in order."""
    digest = hashlib.sha256(f"{FORMAT}\t{name}\n".encode())
    for s in samples:
        digest.update(s.key.encode() + b"\t" + hashlib.sha256(s.png).digest()
                      + hashlib.sha256(encode_meta(s.meta)).digest())
    return digest.hexdigest()


class FinishedShards:
    """Completion records of written shards: a rerun keeps a tar whose record matches the
    samples it would write now and whose bytes still hash to what was written."""

    def __init__(self, root: str | Path):
        self._store = ChunkStore(root)

    def is_finished(self, path: Path, samples: Sequence[ShardSample]) -> bool:
        """Raises CorruptEntry for a damaged record (the shard is then rewritten)."""
        payload = self._store.get(shard_inputs_sha256(path.name, samples))
        if payload is None or not path.is_file():
            return False
        done = json.loads(payload)
        return path.stat().st_size == done["bytes"] and sha256_file(path) == done["sha256"]

    def mark_finished(self, path: Path, samples: Sequence[ShardSample], stats: ShardStats) -> None:
        self._store.put(shard_inputs_sha256(path.name, samples),
                        json.dumps({"bytes": stats.bytes, "sha256": stats.sha256}).encode())
