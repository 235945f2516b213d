"""File helpers: atomic output (temporary name in the same folder, then rename) and hashing.

A reader, a resumed build or a crash therefore only ever sees a complete file or none.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import uuid
from pathlib import Path
from typing import Iterator


_TMP_SUFFIX = ".tmp"
_TMP_NAME = re.compile(r"^\..+\.[0-9a-f]{32}\.tmp$")  # what atomic_path names them


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Hidden and unique, so concurrent retries of the same work never share a temp file.
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}{_TMP_SUFFIX}")
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def remove_stale_temporaries(folder: str | Path) -> int:
    """Delete the temporary files atomic_path left under `folder` (any depth) when its process
    was killed mid-write; returns how many. Only for a folder no other process writes to."""
    removed = 0
    for f in Path(folder).rglob("*.tmp"):
        if _TMP_NAME.match(f.name) and f.is_file():
            f.unlink()
            removed += 1
    return removed


def write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | Path, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks (checkpoints can be GBs)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# Errors that mean "this output cannot be written here", not a bug: a full disk or quota, a
# read-only or forbidden folder.
OUTPUT_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM)
# Beam re-raises a worker's exception as RuntimeError("OSError: [Errno 28] ... [while running
# 'Step']"), so the errno is read back from the message.
_WRAPPED = re.compile(r"\b(?:[A-Za-z]*Error): \[Errno (\d+)\] ([^\n]*)")


def output_error(exc: BaseException) -> str | None:
    """`strerror: filename` when `exc` is (or, from a pipeline worker, carries) an OSError of
    OUTPUT_ERRNOS; None for any other error."""
    if isinstance(exc, OSError) and exc.errno in OUTPUT_ERRNOS:
        return f"{exc.strerror}: {exc.filename}" if exc.filename else str(exc.strerror)
    match = _WRAPPED.search(str(exc))
    if match and int(match.group(1)) in OUTPUT_ERRNOS:
        return match.group(2)
    return None
