"""Submissions with score columns, streamed in blocks; every bad one named by row or column."""

from __future__ import annotations

import re

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from eval.scoring.keyindex import KeyIndex
from eval.score import main
from eval.scoring.submission import SubmissionError, load_submission
from tests.eval.conftest import CLASSES, make_benchmark, truth_rows

SCORE_HEADER = "key,pred,score_real,score_sngan,score_progan,fake_score"


def _scores(i: int) -> list[float]:
    return [round((i % 7) / 10, 2), round((i % 5) / 10, 2), round((i % 3) / 10, 2)]


def _lines(keys, order=None):
    order = range(len(keys)) if order is None else order
    return [SCORE_HEADER] + [f"{keys[i]},{CLASSES[i % 3]},{','.join(map(str, _scores(i)))},0.{i % 10}"
                             for i in order]


def _set(lines, row, column, value):
    """`lines` with one field replaced: `row` as the error names it (header = row 1)."""
    fields = lines[row - 1].split(",")
    fields[SCORE_HEADER.split(",").index(column)] = value
    return lines[:row - 1] + [",".join(fields)] + lines[row:]


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n")
    return path


def test_score_columns_are_read_and_aligned_to_the_truth(bench, tmp_path):
    keys = [r["key"] for r in truth_rows(bench)]
    sub = _write(tmp_path / "s.csv", _lines(keys, order=list(reversed(range(len(keys))))))
    got = load_submission(sub, keys, CLASSES)
    assert got.keys.to_pylist() == keys
    assert got.pred.tolist() == [i % 3 for i in range(len(keys))]
    assert got.class_scores.tolist() == [_scores(i) for i in range(len(keys))]
    assert got.fake_score.tolist() == [i % 10 / 10 for i in range(len(keys))]


def test_a_parquet_submission_with_integer_ids_and_scores(bench, tmp_path):
    keys = [r["key"] for r in truth_rows(bench)]
    sub = tmp_path / "s.parquet"
    pq.write_table(pa.table({"key": keys, "pred": pa.array([1] * len(keys), pa.int8()),
                             **{f"score_{c}": [0.5] * len(keys) for c in CLASSES}}), sub)
    got = load_submission(sub, keys, CLASSES)
    assert got.pred.tolist() == [1] * len(keys) and got.fake_score is None
    assert got.class_scores.shape == (len(keys), 3)


def _cli_fails(bench, tmp_path, capsys, sub):
    out = tmp_path / "report.json"
    assert main(["--benchmark", str(bench), "--submission", str(sub), "--out", str(out)]) == 2
    assert not any(p.name.startswith("report") for p in tmp_path.iterdir())
    return capsys.readouterr().err


@pytest.mark.parametrize("edit, message", [
    (lambda ls: [ls[0].replace(",score_progan", "")] + [",".join(l.split(",")[:4] + l.split(",")[5:]) for l in ls[1:]],
     r"score columns are all or none; missing score_progan"),
    (lambda ls: [ls[0].replace("score_sngan", "score_sngann")] + ls[1:],
     r"unknown column\(s\) score_sngann"),
    (lambda ls: [ls[0] + ",notes"] + [l + ",x" for l in ls[1:]], r"unknown column\(s\) notes"),
    (lambda ls: [ls[0].replace("fake_score", "pred")] + ls[1:], r"column\(s\) pred appear more than once"),
    (lambda ls: _set(ls, 4, "score_sngan", "nan"), r"row 4, column score_sngan: nan is not a finite"),
    (lambda ls: _set(ls, 6, "fake_score", "inf"), r"row 6, column fake_score: inf is not a finite"),
    (lambda ls: _set(ls, 6, "fake_score", "-inf"), r"row 6, column fake_score: -inf is not a finite"),
    (lambda ls: _set(ls, 3, "fake_score", ""), r"row 3, column fake_score: '' is not a number"),
    (lambda ls: _set(ls, 3, "score_real", "high"), r"row 3, column score_real: 'high' is not a number"),
    (lambda ls: ls[:2] + [ls[2].rsplit(",", 1)[0]] + ls[3:], r"a line has 5 field\(s\), expected 6"),
])
def test_bad_score_columns_exit_2_naming_the_row_or_column(bench, tmp_path, capsys, edit, message):
    keys = [r["key"] for r in truth_rows(bench)]
    sub = _write(tmp_path / "s.csv", edit(_lines(keys)))
    err = _cli_fails(bench, tmp_path, capsys, sub)
    assert "s.csv" in err and re.search(message, err), err


def test_nan_in_a_parquet_score_names_the_row(bench, tmp_path, capsys):
    keys = [r["key"] for r in truth_rows(bench)]
    sub = tmp_path / "s.parquet"
    values = [0.5] * len(keys)
    values[4] = float("nan")
    pq.write_table(pa.table({"key": keys, "pred": ["real"] * len(keys), "fake_score": values}), sub)
    err = _cli_fails(bench, tmp_path, capsys, sub)
    assert "row 6, column fake_score: nan is not a finite number" in err


def test_a_text_score_column_in_parquet_is_refused(bench, tmp_path, capsys):
    keys = [r["key"] for r in truth_rows(bench)]
    sub = tmp_path / "s.parquet"
    pq.write_table(pa.table({"key": keys, "pred": ["real"] * len(keys), "fake_score": ["x"] * len(keys)}), sub)
    assert "column fake_score has type string" in _cli_fails(bench, tmp_path, capsys, sub)


@pytest.fixture
def bench2000(tmp_path):
    folder = tmp_path / "b2000"
    folder.mkdir()
    return make_benchmark(folder, 2000, val_rows=0)


def test_a_file_larger_than_the_block_is_streamed_and_aligned(bench2000, tmp_path, monkeypatch):
    import eval.scoring.submission as submission

    monkeypatch.setattr(submission, "CHUNK_ROWS", 300)  # several chunks, each of several blocks
    keys = [r["key"] for r in truth_rows(bench2000)]
    order = np.random.default_rng(0).permutation(len(keys))
    sub = _write(tmp_path / "s.csv", _lines(keys, order))
    assert sub.stat().st_size > 20 * 4096
    got = load_submission(sub, keys, CLASSES, block_size=4096)
    assert got.pred.tolist() == [i % 3 for i in range(len(keys))]
    assert got.class_scores.tolist() == [_scores(i) for i in range(len(keys))]


@pytest.mark.parametrize("edit, message", [
    (lambda ls: ls + [ls[11]], "row 2002, column key: .* repeats row 12"),  # across chunks
    (lambda ls: ls[:1201] + [ls[1200]] + ls[1202:], "row 1202, column key: .* repeats row 1201"),
    (lambda ls: _set(ls, 1701, "score_real", "nan"), "row 1701, column score_real: nan is not a finite"),
    (lambda ls: ls[:1500] + ["nope-faces-s1,real,0,0,0,0"] + ls[1501:], "row 1501, column key: 'nope-faces-s1'"),
])
def test_errors_deep_in_a_streamed_file_name_the_right_row(bench2000, tmp_path, monkeypatch, edit, message):
    import eval.scoring.submission as submission

    monkeypatch.setattr(submission, "CHUNK_ROWS", 300)
    keys = [r["key"] for r in truth_rows(bench2000)]
    sub = _write(tmp_path / "s.csv", edit(_lines(keys)))
    with pytest.raises(SubmissionError, match=message):
        load_submission(sub, keys, CLASSES, block_size=4096)


def test_parquet_row_groups_are_streamed_and_rows_numbered(bench2000, tmp_path, monkeypatch):
    import eval.scoring.submission as submission

    monkeypatch.setattr(submission, "PARQUET_BATCH", 128)
    monkeypatch.setattr(submission, "CHUNK_ROWS", 256)
    keys = [r["key"] for r in truth_rows(bench2000)]
    preds = [i % 3 for i in range(len(keys))]
    sub = tmp_path / "s.parquet"
    pq.write_table(pa.table({"key": keys, "pred": preds}), sub, row_group_size=100)
    assert pq.ParquetFile(sub).num_row_groups == 20
    assert load_submission(sub, keys, CLASSES).pred.tolist() == preds
    bad = list(preds)
    bad[1234] = 7
    pq.write_table(pa.table({"key": keys, "pred": bad}), sub, row_group_size=100)
    with pytest.raises(SubmissionError, match=r"row 1236, column pred: '7'"):
        load_submission(sub, keys, CLASSES)


def test_key_index_agrees_with_a_dict():
    rng = np.random.default_rng(0)
    truth = [f"src{rng.integers(0, 9)}-faces-s{i:0{rng.integers(1, 12)}d}" for i in range(3000)]
    truth = list(dict.fromkeys(truth))
    index = KeyIndex(truth)
    probe = (truth[::3] + ["", "x" * 200, "src1-faces-s1\x00", "été", "src1-faces-s" + "9" * 20]
             + [k + "x" for k in truth[:50]] + [k[:-1] for k in truth[50:100]])
    expect = {k: i for i, k in enumerate(truth)}
    got = index.positions(pa.array(probe + [None]))
    assert got.tolist() == [expect.get(k, -1) for k in probe] + [-1]


def test_key_index_falls_back_for_non_ascii_split_keys():
    truth = ["été-1", "a-2", "b-3"]
    assert KeyIndex(truth).positions(pa.array(["b-3", "été-1", "zz"])).tolist() == [2, 0, -1]


def test_a_spreadsheet_csv_with_bom_crlf_and_padded_ids_is_read(tmp_path):
    sub = tmp_path / "s.csv"
    sub.write_bytes(b"\xef\xbb\xbfkey,pred\r\na-1,real\r\nb-2, 1 \r\n")
    assert load_submission(sub, ["b-2", "a-1"], ("real", "x")).pred.tolist() == [1, 0]


def test_binary_bytes_named_csv_are_refused(tmp_path):
    sub = tmp_path / "s.csv"
    sub.write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(SubmissionError, match="not a readable CSV file"):
        load_submission(sub, ["a"], ("real", "x"))


def test_a_categorical_pred_column_is_read(bench, tmp_path):
    keys = [r["key"] for r in truth_rows(bench)]
    sub = tmp_path / "s.parquet"
    preds = pa.array([CLASSES[i % 3] for i in range(len(keys))]).dictionary_encode()
    pq.write_table(pa.table({"key": keys, "pred": preds}), sub)
    assert load_submission(sub, keys, CLASSES).pred.tolist() == [i % 3 for i in range(len(keys))]


def _last_byte_hash(keys, width):
    """A deliberately weak hash: keys ending alike collide."""
    return np.array([ord(k[-1]) if k else 0 for k in keys.to_pylist()], dtype=np.uint64)


def test_key_index_checks_the_strings_behind_a_hash_match(monkeypatch):
    import eval.scoring.keyindex as keyindex

    monkeypatch.setattr(keyindex, "_hash", _last_byte_hash)
    index = KeyIndex(["a-1", "a-2", "a-3"])
    assert index.positions(pa.array(["a-2", "b-1", "a-3", "zz3"])).tolist() == [1, -1, 2, -1]
    colliding = KeyIndex(["a-1", "b-1", "c-2"])  # the split's own hashes collide: dict fallback
    assert colliding.positions(pa.array(["b-1", "a-1", "d-1"])).tolist() == [1, 0, -1]


# ------------------------------------------------------------------ bounded fuzzing

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

FUZZ_KEYS = ["a-1", "b-2", "c-3"]
FUZZ_CLASSES = ("real", "x", "y")
_VALID = "key,pred,score_real,score_x,score_y,fake_score\na-1,real,0.9,0.05,0.05,0.1\n" \
         "b-2,x,0.1,0.8,0.1,0.9\nc-3,2,0.2,0.2,0.6,0.8\n"
_FIELDS = st.sampled_from(["", "a-1", "b-2", "c-3", "real", "x", "y", "0", "2", "3", "-1", "0.5", "nan",
                           "1e309", "inf", '"', "\"a,b\"", "\x00", "é", " ", "score_x", "key"])


def _check_fuzzed(tmp_path, data: bytes, name: str = "s.csv") -> None:
    """Either a well-formed Submission aligned to the keys, or a SubmissionError naming the file."""
    sub = tmp_path / name
    sub.write_bytes(data)
    try:
        result = load_submission(sub, FUZZ_KEYS, FUZZ_CLASSES)
    except SubmissionError as exc:
        assert str(sub) in str(exc)
    else:
        assert result.pred.shape == (3,) and set(result.pred.tolist()) <= {0, 1, 2}
        if result.class_scores is not None:
            assert result.class_scores.shape == (3, 3) and np.isfinite(result.class_scores).all()


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(_FIELDS, min_size=1, max_size=7), min_size=0, max_size=6),
       st.sampled_from(["key,pred", "key,pred,score_real,score_x,score_y,fake_score", "key,pred,fake_score",
                        "key,pred,score_x", "pred,key", ""]))
def test_fuzz_csv_rows_are_scored_or_refused_by_name(tmp_path, rows, header):
    lines = [header] + [",".join(r) for r in rows]
    _check_fuzzed(tmp_path, ("\n".join(lines) + "\n").encode("utf-8", "surrogatepass"))


# pyarrow fails to decode an invalid-UTF-8 line for the invalid-row callback and reports that
# as an unraisable exception; the file is still refused with a SubmissionError.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, len(_VALID)), st.binary(max_size=12), st.booleans())
def test_fuzz_damaged_bytes_of_a_valid_file_are_scored_or_refused(tmp_path, at, noise, cut):
    data = _VALID.encode()
    data = data[:at] + noise if cut else data[:at] + noise + data[at + len(noise):]
    _check_fuzzed(tmp_path, data)
