"""`python -m pipelines.export_repmix`: the command around benchmark.repmix.export_split."""

from pipelines.export_repmix import main
from tests.benchmark.tiny_repmix import csv_rows, tiny_benchmark


def test_default_dest_is_beside_the_csvs_and_all_splits_by_default(tmp_path, capsys):
    out = tiny_benchmark(tmp_path / "out")
    assert main([str(out)]) == 0
    printed = capsys.readouterr().out.splitlines()
    for split, line in zip(("train", "val", "test"), printed):
        listed = csv_rows(out / "repmix" / f"{split}.csv")
        assert line == f"{split}: {len(listed)} written, 0 already there, in {out / 'repmix' / split}"
        assert all((out / "repmix" / r["path"]).is_file() for r in listed)


def test_one_split_to_another_dest(tmp_path, capsys):
    out = tiny_benchmark(tmp_path / "out")
    assert main([str(out), "--split", "val", "--dest", str(tmp_path / "d")]) == 0
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["val"]
    assert not (out / "repmix" / "val").exists()
    assert main([str(out), "--split", "val", "--dest", str(tmp_path / "d")]) == 0
    assert "val: 0 written, 8 already there" in capsys.readouterr().out


def test_not_a_benchmark_exits_1_naming_the_file(tmp_path, capsys):
    assert main([str(tmp_path), "--split", "test"]) == 1
    assert f"export failed: {tmp_path / 'manifest.parquet'} not found" in capsys.readouterr().err
