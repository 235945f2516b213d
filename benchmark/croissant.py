"""croissant.json: the benchmark folder in MLCommons Croissant 1.0 (JSON-LD), for dataset search
engines and Croissant loaders (mlcroissant, TFDS, ...).

What it declares, with the 1.0 vocabulary (http://mlcommons.org/croissant/1.0):
- distribution: `manifest.parquet` and every tar shard as a cr:FileObject (contentUrl relative
  to the folder, sha256, size), and the PNG members of the tars as one cr:FileSet contained in
  them;
- record sets: `images` (key <- a PNG member's file name, image <- its bytes) and `samples`,
  one record per manifest row, a cr:Field per manifest column (extracted from that column),
  joined on the key with `images` for the image itself.
All of it follows from the manifest's schema and the files, so it is as reproducible as they are
(no date: datePublished, which validators recommend, is left out on purpose).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa

from benchmark.atomic import sha256_file, write_text
from benchmark.manifest import MANIFEST_DOCS, MANIFEST_SCHEMA

CROISSANT = "croissant.json"
CONFORMS_TO = "http://mlcommons.org/croissant/1.0"
MANIFEST = "manifest.parquet"
PNG_FILES = "png-files"
# The 1.0 JSON-LD context, as the format's reference datasets spell it.
CONTEXT = {
    "@language": "en",
    "@vocab": "https://schema.org/",
    "citeAs": "cr:citeAs",
    "column": "cr:column",
    "conformsTo": "dct:conformsTo",
    "cr": "http://mlcommons.org/croissant/",
    "rai": "http://mlcommons.org/croissant/RAI/",
    "data": {"@id": "cr:data", "@type": "@json"},
    "dataType": {"@id": "cr:dataType", "@type": "@vocab"},
    "dct": "http://purl.org/dc/terms/",
    "equivalentProperty": "cr:equivalentProperty",
    "examples": {"@id": "cr:examples", "@type": "@json"},
    "extract": "cr:extract",
    "field": "cr:field",
    "fileProperty": "cr:fileProperty",
    "fileObject": "cr:fileObject",
    "fileSet": "cr:fileSet",
    "format": "cr:format",
    "includes": "cr:includes",
    "isLiveDataset": "cr:isLiveDataset",
    "jsonPath": "cr:jsonPath",
    "key": "cr:key",
    "md5": "cr:md5",
    "parentField": "cr:parentField",
    "path": "cr:path",
    "recordSet": "cr:recordSet",
    "references": "cr:references",
    "regex": "cr:regex",
    "repeated": "cr:repeated",
    "replace": "cr:replace",
    "samplingRate": "cr:samplingRate",
    "sc": "https://schema.org/",
    "separator": "cr:separator",
    "source": "cr:source",
    "subField": "cr:subField",
    "transform": "cr:transform",
}
DATA_TYPES = {pa.string(): "sc:Text", pa.int32(): "sc:Integer", pa.int64(): "sc:Integer",
              pa.float64(): "sc:Float", pa.bool_(): "sc:Boolean"}
ENCODINGS = {".parquet": "application/x-parquet", ".tar": "application/x-tar"}
CITATION = """@inproceedings{bui2022repmix,
  title={RepMix: Representation Mixing for Robust Attribution of Synthesized Images},
  author={Bui, Tu and Yu, Ning and Collomosse, John},
  booktitle={European Conference on Computer Vision (ECCV)},
  year={2022}
}"""


@dataclass(frozen=True)
class DatasetText:
    """The prose fields: who the dataset is, in words."""

    name: str
    description: str
    version: str
    license: str  # the card's placeholder until the publisher sets it


@dataclass(frozen=True)
class FileEntry:
    name: str  # path relative to the folder (its contentUrl)
    size: int
    sha256: str


def describe_files(folder: Path, names: list[str]) -> list[FileEntry]:
    """Size and sha256 of each named file of `folder` (the shards are read once, in full)."""
    return [FileEntry(n, (folder / n).stat().st_size, sha256_file(folder / n)) for n in names]


def _field(record_set: str, name: str, data_type: str, description: str, source: dict) -> dict:
    return {"@type": "cr:Field", "@id": f"{record_set}/{name}", "name": name,
            "description": description, "dataType": data_type, "source": source}


def croissant_metadata(text: DatasetText, files: list[FileEntry],
                       schema: pa.Schema = MANIFEST_SCHEMA,
                       docs: dict[str, str] = MANIFEST_DOCS) -> dict:
    """The JSON-LD document. `files` lists the manifest and the shards (anything else is
    refused: the record sets only know those)."""
    manifests = [f for f in files if f.name == MANIFEST]
    shards = [f for f in files if f.name.endswith(".tar")]
    others = [f.name for f in files if f.name != MANIFEST and not f.name.endswith(".tar")]
    if len(manifests) != 1 or not shards or others:
        raise ValueError(f"croissant: need {MANIFEST} once and at least one .tar shard, got "
                         f"{[f.name for f in files]}")
    distribution = [{"@type": "cr:FileObject", "@id": f.name, "name": f.name,
                     "contentUrl": f.name, "contentSize": f"{f.size} B",
                     "encodingFormat": ENCODINGS[Path(f.name).suffix], "sha256": f.sha256}
                    for f in manifests + sorted(shards, key=lambda f: f.name)]
    distribution.append({
        "@type": "cr:FileSet", "@id": PNG_FILES, "name": PNG_FILES,
        "description": "The stored images: the KEY.png members of the shards (lossless).",
        "containedIn": [{"@id": f.name} for f in sorted(shards, key=lambda f: f.name)],
        "encodingFormat": "image/png", "includes": "*.png"})
    images = {
        "@type": "cr:RecordSet", "@id": "images", "name": "images",
        "description": "Each stored image, keyed by its member name in the shards.",
        "key": {"@id": "images/key"},
        "field": [
            _field("images", "key", "sc:Text", "sample key (the member's name less .png)",
                   {"fileSet": {"@id": PNG_FILES}, "extract": {"fileProperty": "filename"},
                    "transform": {"regex": "^(.*)\\.png$"}}),
            _field("images", "image", "sc:ImageObject", "the stored PNG",
                   {"fileSet": {"@id": PNG_FILES}, "extract": {"fileProperty": "content"}}),
        ]}
    fields = []
    for column in schema:
        if column.type not in DATA_TYPES:
            raise ValueError(f"croissant: manifest column {column.name!r} has type "
                             f"{column.type}, which has no Croissant data type here")
        fields.append(_field("samples", column.name, DATA_TYPES[column.type], docs[column.name],
                             {"fileObject": {"@id": MANIFEST}, "extract": {"column": column.name}}))
    fields[schema.names.index("key")]["references"] = {"field": {"@id": "images/key"}}
    fields.append({"@type": "cr:Field", "@id": "samples/image", "name": "image",
                   "description": "the stored PNG (images/image joined on the key)",
                   "dataType": "sc:ImageObject", "source": {"field": {"@id": "images/image"}}})
    samples = {"@type": "cr:RecordSet", "@id": "samples", "name": "samples",
               "description": "One record per sample: its manifest.parquet row and its image.",
               "key": {"@id": "samples/key"}, "field": fields}
    return {
        "@context": CONTEXT, "@type": "sc:Dataset", "name": text.name,
        "description": text.description, "conformsTo": CONFORMS_TO, "version": text.version,
        "license": text.license, "citeAs": CITATION,
        "keywords": ["synthetic image attribution", "GAN", "image forensics",
                     "image classification", "ImageNet-C", "WebDataset"],
        "distribution": distribution, "recordSet": [images, samples],
    }


def write_croissant(folder: Path, text: DatasetText, manifest: pa.Table) -> dict:
    """croissant.json in `folder`, describing its manifest and the shards the manifest lists."""
    shards = sorted(set(manifest.column("shard").to_pylist()))
    doc = croissant_metadata(text, describe_files(folder, [MANIFEST, *shards]))
    write_text(folder / CROISSANT, json.dumps(doc, indent=2, sort_keys=True) + "\n")
    return doc
