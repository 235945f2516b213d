"""croissant.json: the manifest and the shards as Croissant 1.0 distribution and record sets.

The format's own validator (mlcroissant) runs on a real build in
tests/pipelines/test_dataset_folder.py; these check the structure on any machine."""

from __future__ import annotations

import hashlib
import json

import pyarrow as pa
import pytest

from benchmark.croissant import (CONFORMS_TO, DatasetText, FileEntry, croissant_metadata,
                                 describe_files, write_croissant)
from benchmark.manifest import MANIFEST_SCHEMA

TEXT = DatasetText(name="tiny", description="a test", version="1.2.0", license="unknown")


def _files():
    return [FileEntry("train-000001.tar", 20, "b" * 64), FileEntry("manifest.parquet", 10, "a" * 64),
            FileEntry("train-000000.tar", 30, "c" * 64)]


def test_distribution_lists_the_manifest_then_the_shards_with_their_hashes():
    doc = croissant_metadata(TEXT, _files())
    assert doc["conformsTo"] == CONFORMS_TO and doc["@type"] == "sc:Dataset"
    assert doc["@context"]["cr"] == "http://mlcommons.org/croissant/"
    objects = [d for d in doc["distribution"] if d["@type"] == "cr:FileObject"]
    assert [(d["contentUrl"], d["sha256"], d["contentSize"], d["encodingFormat"]) for d in objects] == [
        ("manifest.parquet", "a" * 64, "10 B", "application/x-parquet"),
        ("train-000000.tar", "c" * 64, "30 B", "application/x-tar"),
        ("train-000001.tar", "b" * 64, "20 B", "application/x-tar")]
    (pngs,) = [d for d in doc["distribution"] if d["@type"] == "cr:FileSet"]
    assert pngs["containedIn"] == [{"@id": "train-000000.tar"}, {"@id": "train-000001.tar"}]
    assert (pngs["includes"], pngs["encodingFormat"]) == ("*.png", "image/png")


def test_samples_have_a_field_per_manifest_column_and_the_image_joined_on_the_key():
    doc = croissant_metadata(TEXT, _files())
    images, samples = doc["recordSet"]
    fields = {f["name"]: f for f in samples["field"]}
    assert list(fields) == [*MANIFEST_SCHEMA.names, "image"]
    for column in MANIFEST_SCHEMA.names:
        assert fields[column]["source"] == {"fileObject": {"@id": "manifest.parquet"},
                                            "extract": {"column": column}}
        assert fields[column]["@id"] == f"samples/{column}" and fields[column]["description"]
    assert (fields["key"]["dataType"], fields["label"]["dataType"], fields["distance"]["dataType"],
            fields["seen"]["dataType"]) == ("sc:Text", "sc:Integer", "sc:Float", "sc:Boolean")
    assert fields["key"]["references"] == {"field": {"@id": "images/key"}}
    assert fields["image"]["source"] == {"field": {"@id": "images/image"}}
    key, image = images["field"]
    assert key["source"]["transform"] == {"regex": "^(.*)\\.png$"}
    assert image["source"]["extract"] == {"fileProperty": "content"}
    assert image["dataType"] == "sc:ImageObject"


@pytest.mark.parametrize("files", [
    [FileEntry("train-000000.tar", 1, "c" * 64)],  # no manifest
    [FileEntry("manifest.parquet", 1, "a" * 64)],  # no shard
    [FileEntry("manifest.parquet", 1, "a" * 64), FileEntry("train-000000.tar", 1, "c" * 64),
     FileEntry("rejections.parquet", 1, "d" * 64)],  # a file the record sets do not know
])
def test_other_file_lists_are_refused(files):
    with pytest.raises(ValueError, match="manifest.parquet"):
        croissant_metadata(TEXT, files)


def test_a_column_type_without_a_croissant_type_is_named():
    schema = pa.schema([("key", pa.string()), ("when", pa.timestamp("s"))])
    with pytest.raises(ValueError, match="'when'"):
        croissant_metadata(TEXT, _files(), schema, {"key": "k", "when": "w"})


def test_written_file_hashes_the_files_and_is_the_same_bytes_twice(tmp_path):
    (tmp_path / "manifest.parquet").write_bytes(b"manifest")
    (tmp_path / "val-000000.tar").write_bytes(b"tar bytes")
    manifest = pa.table({"shard": ["val-000000.tar", "val-000000.tar"]})
    write_croissant(tmp_path, TEXT, manifest)
    first = (tmp_path / "croissant.json").read_bytes()
    doc = json.loads(first)
    tar = [d for d in doc["distribution"] if d["name"] == "val-000000.tar"][0]
    assert tar["sha256"] == hashlib.sha256(b"tar bytes").hexdigest()
    assert describe_files(tmp_path, ["val-000000.tar"])[0].size == 9
    write_croissant(tmp_path, TEXT, manifest)
    assert (tmp_path / "croissant.json").read_bytes() == first
