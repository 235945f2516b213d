"""Read and validate a submission: a CSV or Parquet file with `key` and `pred` columns.

Every problem is a SubmissionError naming the file and the row (1-based, as a spreadsheet
shows it, header = row 1) or the column, so a participant can fix it without guessing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

REQUIRED = ("key", "pred")


class SubmissionError(ValueError):
    """A submission that cannot be scored; the message says where and why."""


@dataclass(frozen=True)
class Submission:
    keys: np.ndarray  # object array of str, in the truth's order
    pred: np.ndarray  # int64 class ids, aligned with keys


def _read_table(path: Path) -> pa.Table:
    if not path.is_file():
        raise SubmissionError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise SubmissionError(f"{path}: the file is empty")
    suffix = path.suffix.lower()
    try:
        if suffix == ".parquet":
            return pq.read_table(path)
        if suffix == ".csv":
            # Every column as text: a class name or an id, parsed below with row numbers.
            return pacsv.read_csv(path, convert_options=pacsv.ConvertOptions(
                column_types={c: pa.string() for c in REQUIRED}, strings_can_be_null=False))
    except (pa.ArrowInvalid, OSError) as exc:
        raise SubmissionError(f"{path}: not a readable {suffix[1:].upper()} file ({exc})") from None
    raise SubmissionError(f"{path}: expected a .csv or .parquet file")


def _parse_pred(values: list, classes: tuple[str, ...], path: Path) -> np.ndarray:
    index = {c: i for i, c in enumerate(classes)}
    out = np.empty(len(values), dtype=np.int64)
    for row, v in enumerate(values):
        text = "" if v is None else str(v).strip()
        if text in index:
            out[row] = index[text]
        elif text.lstrip("-").isdigit() and 0 <= int(text) < len(classes):
            out[row] = int(text)
        else:
            raise SubmissionError(f"{path}: row {row + 2}, column pred: {text!r} is not a class "
                                  f"name ({', '.join(classes)}) or an id 0..{len(classes) - 1}")
    return out


def load_submission(path: str | Path, truth_keys: list[str], classes: tuple[str, ...]) -> Submission:
    """The submission's predictions, aligned to `truth_keys`; every key must appear exactly once."""
    path = Path(path)
    table = _read_table(path)
    missing = [c for c in REQUIRED if c not in table.column_names]
    if missing:
        raise SubmissionError(f"{path}: missing column(s) {', '.join(missing)}; found "
                              f"{', '.join(table.column_names) or 'none'}")
    if table.num_rows == 0:
        raise SubmissionError(f"{path}: a header but no rows")
    keys = [str(k) if k is not None else "" for k in table.column("key").to_pylist()]
    pred = _parse_pred(table.column("pred").to_pylist(), classes, path)
    position = {k: i for i, k in enumerate(truth_keys)}
    first_row: dict[str, int] = {}
    for row, key in enumerate(keys):
        if key not in position:
            raise SubmissionError(f"{path}: row {row + 2}, column key: {key!r} is not in the split")
        if key in first_row:
            raise SubmissionError(f"{path}: row {row + 2}, column key: {key!r} repeats row "
                                  f"{first_row[key] + 2}")
        first_row[key] = row
    if len(first_row) != len(truth_keys):
        absent = [k for k in truth_keys if k not in first_row]
        raise SubmissionError(f"{path}: {len(absent)} key(s) of the split have no prediction, "
                              f"e.g. {', '.join(absent[:3])}")
    order = np.array([first_row[k] for k in truth_keys], dtype=np.int64)
    return Submission(keys=np.array(truth_keys, dtype=object), pred=pred[order])
