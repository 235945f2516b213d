"""Atomic output: a reader sees the old complete file or the new complete file, never a part."""

import hashlib
import os

import pytest

from benchmark.atomic import atomic_path, sha256_file, write_bytes, write_text


class WriterCrash(RuntimeError):
    pass


def test_success_replaces_the_file_and_leaves_no_temp(tmp_path):
    target = tmp_path / "sub" / "data.bin"
    write_bytes(target, b"new bytes")
    assert target.read_bytes() == b"new bytes"
    assert os.listdir(target.parent) == ["data.bin"]
    write_text(target, "é\n")
    assert target.read_bytes() == "é\n".encode("utf-8")
    assert os.listdir(target.parent) == ["data.bin"]


def test_old_file_stays_untouched_until_the_new_one_is_complete(tmp_path):
    target = tmp_path / "data.bin"
    target.write_bytes(b"old")
    with atomic_path(target) as tmp:
        # Same folder, so the final rename cannot cross file systems.
        assert tmp.parent == target.parent and tmp.name != target.name
        with open(tmp, "wb") as f:
            f.write(b"new, first half")
            f.flush()
            assert target.read_bytes() == b"old"
            f.write(b" and second half")
        assert target.read_bytes() == b"old"
    assert target.read_bytes() == b"new, first half and second half"
    assert os.listdir(tmp_path) == ["data.bin"]


@pytest.mark.parametrize("existing", [None, b"old"], ids=["new-file", "existing-file"])
def test_a_writer_that_fails_midway_leaves_the_old_state_and_no_temp(tmp_path, existing):
    target = tmp_path / "data.bin"
    if existing is not None:
        target.write_bytes(existing)
    with pytest.raises(WriterCrash):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"partial")
            raise WriterCrash()
    if existing is None:
        assert os.listdir(tmp_path) == []
    else:
        assert target.read_bytes() == existing and os.listdir(tmp_path) == ["data.bin"]


def test_a_writer_that_fails_before_creating_the_temp_raises_its_own_error(tmp_path):
    with pytest.raises(WriterCrash):
        with atomic_path(tmp_path / "data.bin"):
            raise WriterCrash()
    assert os.listdir(tmp_path) == []


def test_concurrent_writers_of_one_path_get_their_own_temp(tmp_path):
    target = tmp_path / "data.bin"
    with atomic_path(target) as first, atomic_path(target) as second:
        assert first != second
        first.write_bytes(b"first")
        second.write_bytes(b"second")
    # The outer writer finishes last, so its complete file is the one that stays.
    assert target.read_bytes() == b"first"
    assert os.listdir(tmp_path) == ["data.bin"]


def test_sha256_file(tmp_path):
    data = bytes(range(256)) * (3 << 12)  # three full 1 MiB blocks, then a short one
    (tmp_path / "f").write_bytes(data + b"tail")
    assert sha256_file(tmp_path / "f") == hashlib.sha256(data + b"tail").hexdigest()
