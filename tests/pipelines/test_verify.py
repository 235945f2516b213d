"""`python -m pipelines.verify`: a real tiny build passes; each kind of damage is reported by key."""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from benchmark.images import encode_png
from benchmark.verify import scan_shard, verify
from pipelines.verify import main
from tests.pipelines.test_build_e2e import built, photo_config  # noqa: F401, F811 (fixtures)

@pytest.fixture
def copy(built, tmp_path) -> Path:
    return Path(shutil.copytree(built, tmp_path / "copy"))


def _rows(folder: Path) -> list[dict]:
    return pq.read_table(folder / "manifest.parquet").to_pylist()


def _rewrite_tar(path: Path, edit) -> None:
    """Re-write a tar with `edit(members)` applied to its [(name, bytes)] list."""
    with tarfile.open(path) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
    members = edit(members)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    path.write_bytes(buf.getvalue())


def _kinds(report) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for p in report.problems:
        out.setdefault(p.kind, []).append(p.where)
    return out


def test_a_real_build_verifies_clean(built, capsys):
    report = verify(built)
    assert report.ok, [str(p) for p in report.problems]
    assert report.samples == report.images_read == len(_rows(built)) == 2 * 2 * 10
    assert main([str(built), "--workers", "1"]) == 0
    assert capsys.readouterr().out.startswith("OK ")


def test_two_workers_give_the_same_report(copy):
    first = _rows(copy)[0]
    _rewrite_tar(copy / first["shard"], lambda ms: [(n, d) for n, d in ms
                                                    if not n.startswith(first["key"] + ".")])
    one, two = verify(copy, workers=1), verify(copy, workers=2)
    assert one.problems == two.problems and not one.ok


def test_missing_sample_is_named_and_exit_is_1(copy, capsys):
    row = _rows(copy)[3]
    _rewrite_tar(copy / row["shard"], lambda ms: [(n, d) for n, d in ms if not n.startswith(row["key"] + ".")])
    assert main([str(copy), "--workers", "1"]) == 1
    out = capsys.readouterr().out
    assert f"missing: {row['key']}" in out and out.splitlines()[-1].startswith("FAILED")
    kinds = _kinds(verify(copy))
    assert kinds["missing"] == [row["key"]]
    # the samples after it in the same tar moved up one place
    assert set(kinds["misplaced"]) == {r["key"] for r in _rows(copy)
                                       if r["shard"] == row["shard"] and r["position"] > row["position"]}


def test_changed_png_bytes_are_caught_by_sha256(copy):
    row = _rows(copy)[0]
    other = encode_png(np.zeros((32, 32, 3), np.uint8))
    _rewrite_tar(copy / row["shard"], lambda ms: [(n, other if n == f"{row['key']}.png" else d) for n, d in ms])
    report = verify(copy)
    assert _kinds(report) == {"changed": [row["key"]]}
    assert "sha256" in report.problems[0].detail


def test_wrong_size_and_undecodable_pngs(copy):
    rows = _rows(copy)
    small, broken = rows[0]["key"], rows[1]["key"]
    shard = rows[0]["shard"]
    assert rows[1]["shard"] == shard

    def edit(ms):
        out = []
        for n, d in ms:
            if n == f"{small}.png":
                d = encode_png(np.zeros((16, 16, 3), np.uint8))
            elif n == f"{broken}.png":
                d = d[: len(d) // 2]
            out.append((n, d))
        return out

    _rewrite_tar(copy / shard, edit)
    report = verify(copy)
    bad = {p.where: p.detail for p in report.problems if p.kind == "bad_png"}
    assert set(bad) == {small, broken}
    assert "16x16 px, not 32x32" in bad[small] and "does not decode" in bad[broken]


def test_extra_member_and_unlisted_tar(copy):
    rows = _rows(copy)
    shard = rows[0]["shard"]
    png = encode_png(np.zeros((32, 32, 3), np.uint8))
    _rewrite_tar(copy / shard, lambda ms: ms + [("intruder.png", png)])
    shutil.copy(copy / shard, copy / "train-999999.tar")
    kinds = _kinds(verify(copy))
    assert "intruder" in kinds["extra"]
    assert "train-999999.tar" in kinds["file"]
    # the copy's samples are stored twice: each is a duplicate, named by key
    assert set(kinds["duplicate"]) == {r["key"] for r in rows if r["shard"] == shard}
    assert any(w.startswith(f"{DATASET}:shards") for w in kinds["info"])


DATASET = "dataset_info.json"


def test_truncated_and_deleted_tars(copy):
    rows = _rows(copy)
    shards = sorted({r["shard"] for r in rows})
    data = (copy / shards[0]).read_bytes()
    (copy / shards[0]).write_bytes(data[: len(data) // 3])
    (copy / shards[1]).unlink()
    report = verify(copy)
    kinds = _kinds(report)
    assert shards[0] in kinds["file"] and shards[1] in kinds["file"]
    lost = {r["key"] for r in rows if r["shard"] == shards[1]}
    assert lost <= set(kinds["missing"])
    assert any(p.kind == "missing" and "its tar" in p.detail for p in report.problems)
    assert kinds["count"]  # the cells those samples belonged to are short


def test_sample_json_that_differs_from_the_manifest(copy):
    row = _rows(copy)[2]
    meta = dict(row, label=7)
    _rewrite_tar(copy / row["shard"], lambda ms: [(n, json.dumps(meta).encode() if n == f"{row['key']}.json" else d)
                                                  for n, d in ms])
    report = verify(copy)
    assert _kinds(report) == {"bad_meta": [row["key"]]}
    assert "['label']" in report.problems[0].detail


def test_dataset_info_and_config_that_disagree_with_the_files(copy):
    info = json.loads((copy / DATASET).read_text())
    info["samples"] += 1
    (copy / DATASET).write_text(json.dumps(info))
    config = json.loads((copy / "config.json").read_text())
    config["splits"]["test"] = 3
    (copy / "config.json").write_text(json.dumps(config, sort_keys=True, indent=2) + "\n")
    kinds = _kinds(verify(copy))
    assert f"{DATASET}:samples" in kinds["info"] and f"{DATASET}:config_sha256" in kinds["info"]
    assert set(kinds["count"]) == {f"{c}/{s}/test" for c in ("real", "sngan") for s in ("faces", "rooms")}


def test_not_a_benchmark_exits_2(tmp_path, capsys):
    assert main([str(tmp_path)]) == 2
    assert "manifest.parquet not found" in capsys.readouterr().err


def test_json_report_lists_every_problem(copy, tmp_path):
    for shard in sorted(copy.glob("test-*.tar")):
        shard.unlink()
    out = tmp_path / "report.json"
    assert main([str(copy), "--workers", "1", "--show", "1", "--json", str(out)]) == 1
    report = json.loads(out.read_text())
    test_keys = {r["key"] for r in _rows(copy) if r["split"] == "test"}
    assert {p["where"] for p in report["problems"] if p["kind"] == "missing"} == test_keys
    assert report["ok"] is False and report["images_read"] == len(_rows(copy)) - len(test_keys)


def test_scan_groups_members_by_key_in_order(built):
    shard = sorted(built.glob("train-*.tar"))[0]
    scan = scan_shard(shard, 32)
    rows = sorted((r for r in _rows(built) if r["shard"] == shard.name), key=lambda r: r["position"])
    assert [s.key for s in scan.samples] == [r["key"] for r in rows]
    assert all(s.members == ("json", "png") and s.problem is None for s in scan.samples)


def test_a_tar_cut_at_a_member_boundary_is_called_truncated(copy):
    shard = sorted(copy.glob("train-*.tar"))[0]
    with tarfile.open(shard) as tar:
        members = tar.getmembers()
    cut = members[2].offset  # right after the first sample's .json and .png
    shard.write_bytes(shard.read_bytes()[:cut])
    report = verify(copy)
    assert any(p.kind == "file" and p.where == shard.name and "truncated" in p.detail
               for p in report.problems)
    assert report.images_read == report.samples - (len(members) // 2 - 1)
