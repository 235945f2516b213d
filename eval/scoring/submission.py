"""Read and validate a submission: CSV or Parquet, streamed in blocks, aligned to the truth.

Columns: `key` and `pred` (a class name or id) are required; optionally `score_<class>` for
every class (all or none) and `fake_score`. Any other column is refused, so a misspelled
score column cannot be silently ignored.

The file is read block by block (pyarrow's streaming CSV reader, Parquet batches), and each
block is written straight into arrays the size of the split, so memory is the split's size
plus one block, however large the file. A file larger than the split fails on its first
surplus row (a repeated key or one not in the split) without being read further.

Every problem is a SubmissionError naming the file and the row (1-based, as a spreadsheet
shows it: the header is row 1, the first data row is row 2; Parquet rows are numbered the same
way) or the column, so a participant can fix it without guessing.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from eval.scoring.keyindex import KeyIndex

REQUIRED = ("key", "pred")
FAKE_SCORE = "fake_score"
SCORE_PREFIX = "score_"
# pyarrow's streaming CSV reader keeps some tens of blocks in flight (measured: about 40, with
# 1-16 MiB blocks), so the block is small and the memory the file takes stays ~40 MiB; blocks
# are then regrouped into chunks of CHUNK_ROWS rows, so the per-chunk work stays cheap.
BLOCK_BYTES = 1 << 20
CHUNK_ROWS = 1 << 16
PARQUET_BATCH = CHUNK_ROWS


class SubmissionError(ValueError):
    """A submission that cannot be scored; the message says where and why."""


@dataclass(frozen=True)
class Submission:
    keys: pa.Array  # the split's keys (strings), in the truth's order
    pred: np.ndarray  # int64 class ids, aligned with keys
    class_scores: np.ndarray | None = None  # float64 (n, classes): score_<class>, or None
    fake_score: np.ndarray | None = None  # float64 (n,), or None


def score_columns(classes: Sequence[str]) -> list[str]:
    return [SCORE_PREFIX + c for c in classes]


def _check_columns(path: Path, names: list[str], classes: Sequence[str]) -> list[str]:
    """The score columns present, in class order; raises on missing, unknown or repeated names."""
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise SubmissionError(f"{path}: column(s) {', '.join(repeated)} appear more than once")
    missing = [c for c in REQUIRED if c not in names]
    if missing:
        raise SubmissionError(f"{path}: missing column(s) {', '.join(missing)}; found "
                              f"{', '.join(names) or 'none'}")
    wanted = score_columns(classes)
    unknown = [n for n in names if n not in (*REQUIRED, FAKE_SCORE, *wanted)]
    if unknown:
        raise SubmissionError(
            f"{path}: unknown column(s) {', '.join(unknown)}; a submission has key, pred, "
            f"optionally {', '.join(wanted)} (all or none) and optionally {FAKE_SCORE}")
    present = [n for n in wanted if n in names]
    if present and len(present) != len(wanted):
        absent = [n for n in wanted if n not in names]
        raise SubmissionError(f"{path}: score columns are all or none; missing "
                              f"{', '.join(absent)}")
    return present


def _csv_header(path: Path) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            return next(csv.reader([f.readline()]), [])
    except UnicodeDecodeError:
        raise SubmissionError(f"{path}: not a readable CSV file (not UTF-8 text)") from None


def _batches(path: Path, classes: Sequence[str], block_size: int
             ) -> tuple[list[str], bool, Iterator[pa.RecordBatch]]:
    """(score columns, has fake_score, record batches) of a CSV or Parquet file."""
    if not path.is_file():
        raise SubmissionError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise SubmissionError(f"{path}: the file is empty")
    suffix = path.suffix.lower()
    if suffix == ".csv":
        names = _csv_header(path)
        scores = _check_columns(path, names, classes)
        invalid: list = []

        def on_invalid(row) -> str:
            invalid.append(row)
            return "error"

        try:
            # Every column as text: pred may be a name or an id, and scores are parsed below
            # so that a bad value is reported with its row (pyarrow's message has no row).
            reader = pacsv.open_csv(
                path, read_options=pacsv.ReadOptions(block_size=block_size),
                parse_options=pacsv.ParseOptions(invalid_row_handler=on_invalid),
                convert_options=pacsv.ConvertOptions(
                    column_types={n: pa.string() for n in names}, strings_can_be_null=False))
        except (pa.ArrowInvalid, OSError) as exc:
            raise SubmissionError(_csv_problem(path, invalid, exc)) from None

        def stream() -> Iterator[pa.RecordBatch]:
            try:
                yield from reader
            except (pa.ArrowInvalid, OSError) as exc:
                raise SubmissionError(_csv_problem(path, invalid, exc)) from None

        return scores, FAKE_SCORE in names, stream()
    if suffix == ".parquet":
        try:
            file = pq.ParquetFile(path)
        except (pa.ArrowInvalid, OSError) as exc:
            raise SubmissionError(f"{path}: not a readable PARQUET file ({exc})") from None
        names = file.schema_arrow.names
        scores = _check_columns(path, names, classes)
        for name in (*scores, *([FAKE_SCORE] if FAKE_SCORE in names else [])):
            kind = file.schema_arrow.field(name).type
            if not (pa.types.is_floating(kind) or pa.types.is_integer(kind)):
                raise SubmissionError(f"{path}: column {name} has type {kind}; scores are numbers")

        def stream() -> Iterator[pa.RecordBatch]:
            try:
                yield from file.iter_batches(batch_size=PARQUET_BATCH)
            except (pa.ArrowInvalid, OSError) as exc:
                raise SubmissionError(f"{path}: not a readable PARQUET file ({exc})") from None

        return scores, FAKE_SCORE in names, stream()
    raise SubmissionError(f"{path}: expected a .csv or .parquet file")


def _regroup(batches: Iterator[pa.RecordBatch], rows: int) -> Iterator[pa.RecordBatch]:
    """The same rows, in order, in batches of at least `rows` rows (the last may be shorter)."""
    pending: list[pa.RecordBatch] = []
    count = 0
    for batch in batches:
        pending.append(batch)
        count += batch.num_rows
        if count >= rows:
            yield pa.Table.from_batches(pending).combine_chunks().to_batches()[0]
            pending, count = [], 0
    if count:
        yield pa.Table.from_batches(pending).combine_chunks().to_batches()[0]


def _csv_problem(path: Path, invalid: list, exc: Exception) -> str:
    if invalid:
        row = invalid[0]
        return (f"{path}: a line has {row.actual_columns} field(s), expected "
                f"{row.expected_columns}: {row.text[:80]!r}")
    return f"{path}: not a readable CSV file ({exc})"


def _first_bad(array: pa.Array, convert) -> int:
    """Index of the first element `convert` refuses, by bisection (a few calls, not one per row)."""
    lo, hi = 0, len(array)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        try:
            convert(array.slice(lo, mid - lo))
            lo = mid
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            hi = mid
    return lo


def _to_float(column: pa.Array, name: str, path: Path, first_row: int) -> np.ndarray:
    """Finite float64 values; a missing, non-numeric, NaN or infinite value names its row."""
    def convert(a: pa.Array) -> pa.Array:
        out = pc.cast(a, pa.float64())
        if out.null_count:
            raise pa.ArrowInvalid("null")
        return out

    try:
        values = convert(column).to_numpy(zero_copy_only=False)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        bad = _first_bad(column, convert)
        raise SubmissionError(f"{path}: row {first_row + bad}, column {name}: "
                              f"{column[bad].as_py()!r} is not a number") from None
    finite = np.isfinite(values)
    if not finite.all():
        bad = int(np.argmin(finite))
        raise SubmissionError(f"{path}: row {first_row + bad}, column {name}: {values[bad]} is "
                              f"not a finite number")
    return values


def _parse_pred(column: pa.Array, classes: Sequence[str], path: Path, first_row: int) -> np.ndarray:
    """Class ids from names or ids (vectorised: pyarrow looks names up, ids are range-checked)."""
    count = len(classes)
    if pa.types.is_dictionary(column.type):  # e.g. a pandas categorical written to Parquet
        column = column.cast(column.type.value_type)
    if pa.types.is_integer(column.type):
        ids = pc.fill_null(column, -1).to_numpy().astype(np.int64)
    elif pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
        column = pc.fill_null(pc.utf8_trim_whitespace(column), "")
        ids = np.full(len(column), -1, dtype=np.int64)
        by_name = pc.index_in(column, value_set=pa.array(list(classes)))
        named = pc.is_valid(by_name).to_numpy(zero_copy_only=False)
        ids[named] = pc.drop_null(by_name).to_numpy()
        # At most 9 digits: an id too long to be one is refused by the range check, not by an
        # integer overflow in the cast.
        digits = pc.match_substring_regex(column, r"^[0-9]{1,9}$").to_numpy(zero_copy_only=False)
        digits &= ~named
        if digits.any():
            ids[digits] = pc.cast(pc.filter(column, pa.array(digits)), pa.int64()).to_numpy()
    else:
        raise SubmissionError(f"{path}: column pred has type {column.type}; expected class "
                              f"names or integer ids")
    ok = (ids >= 0) & (ids < count)
    if not ok.all():
        bad = int(np.argmin(ok))
        value = column[bad].as_py()
        raise SubmissionError(f"{path}: row {first_row + bad}, column pred: "
                              f"{'' if value is None else str(value)!r} is not a class name "
                              f"({', '.join(classes)}) or an id 0..{count - 1}")
    return ids


def _positions(keys: pa.Array, index: KeyIndex, path: Path, first_row: int) -> np.ndarray:
    """Each key's position in the split, or an error naming the first key that is not in it."""
    where = index.positions(keys)
    if (where < 0).any():
        bad = int(np.argmin(where >= 0))
        key = keys[bad].as_py()
        raise SubmissionError(f"{path}: row {first_row + bad}, column key: "
                              f"{'' if key is None else key!r} is not in the split")
    return where


def load_submission(path: str | Path, truth_keys, classes: Sequence[str],
                    block_size: int = BLOCK_BYTES) -> Submission:
    """The submission's predictions (and scores), aligned to `truth_keys` (a list or a pyarrow
    string array: the split's keys); every key exactly once."""
    path = Path(path)
    scores, has_fake, batches = _batches(path, classes, block_size)
    index = KeyIndex(truth_keys)
    n = len(index)
    pred = np.full(n, -1, dtype=np.int64)
    row_of = np.full(n, -1, dtype=np.int64)  # submission row that gave each truth key
    class_scores = np.empty((n, len(classes))) if scores else None
    fake = np.empty(n) if has_fake else None
    rows = 0
    for batch in _regroup(batches, CHUNK_ROWS):
        if batch.num_rows == 0:
            continue
        first_row = rows + 2
        where = _positions(batch.column("key"), index, path, first_row)
        local = np.arange(batch.num_rows, dtype=np.int64) + first_row
        # Repeats: of a row in an earlier chunk (row_of already set), then inside this chunk.
        earlier = row_of[where] >= 0
        order = np.argsort(where, kind="stable")
        inside = np.zeros(batch.num_rows, dtype=bool)
        inside[order[1:]] = where[order[1:]] == where[order[:-1]]
        repeated = earlier | inside
        if repeated.any():
            bad = int(np.argmax(repeated))
            if earlier[bad]:
                first = int(row_of[where[bad]])
            else:
                first = int(local[np.argmax(where == where[bad])])
            raise SubmissionError(f"{path}: row {local[bad]}, column key: "
                                  f"{batch.column('key')[bad].as_py()!r} repeats row {first}")
        pred[where] = _parse_pred(batch.column("pred"), classes, path, first_row)
        for j, name in enumerate(scores):
            class_scores[where, j] = _to_float(batch.column(name), name, path, first_row)
        if has_fake:
            fake[where] = _to_float(batch.column(FAKE_SCORE), FAKE_SCORE, path, first_row)
        row_of[where] = local
        rows += batch.num_rows
    if rows == 0:
        raise SubmissionError(f"{path}: a header but no rows")
    absent = np.flatnonzero(row_of < 0)
    if len(absent):
        raise SubmissionError(f"{path}: {len(absent)} key(s) of the split have no prediction, "
                              f"e.g. {', '.join(index.keys.take(pa.array(absent[:3])).to_pylist())}")
    return Submission(keys=index.keys, pred=pred,
                      class_scores=class_scores, fake_score=fake)
