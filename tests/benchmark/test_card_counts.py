"""The dataset card counts what the build did to odd inputs: photos upsampled, inputs refused."""

from __future__ import annotations

from types import SimpleNamespace

import pyarrow as pa
from PIL import Image

from benchmark.dataset_files import rejection_counts, upsampled_photos


def test_upsampled_photos_are_counted_per_semantic_from_their_headers(tmp_path):
    for name, size in (("small.png", (20, 50)), ("big.png", (64, 80)), ("edge.png", (32, 32))):
        Image.new("RGB", size).save(tmp_path / name)
    manifest = pa.table({
        "source": ["real", "real", "real", "real", "sngan"],
        "semantic": ["faces", "faces", "faces", "faces", "faces"],
        "origin": ["small.png", "big.png", "edge.png", "deleted.png", ""],
    })
    cfg = SimpleNamespace(resolution=32, semantics={"faces": SimpleNamespace(path=tmp_path),
                                                    "rooms": SimpleNamespace(path=tmp_path)})
    assert upsampled_photos(manifest, cfg) == {"faces": (1, 4), "rooms": (0, 0)}


def test_rejections_are_counted_by_kind_of_reason():
    table = pa.table({"reason": ["not a decodable image (its header: OSError: x)", "symlink loop",
                                 "duplicate: the same bytes as a/1.jpg", "duplicate: the same bytes as b.jpg",
                                 "unreadable: Permission denied"]})
    assert rejection_counts(table) == {"duplicate": 2, "not a decodable image": 1, "symlink loop": 1,
                                       "unreadable": 1}
