"""A full disk or a read-only output folder: a clear error, exit 1, and no OUT folder."""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

import pipelines.write_shards
from benchmark.atomic import output_error
from pipelines.build_attribution88 import main
from tests.pipelines.test_build_e2e import write_tiny_inputs


@pytest.fixture
def config(tmp_path) -> Path:
    return write_tiny_inputs(tmp_path)


def test_no_space_left_while_writing_shards(config, monkeypatch, capsys):
    """The fault is raised inside a Beam worker (the shard writer), which Beam re-raises wrapped."""
    def full(path, samples):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(pipelines.write_shards, "write_shard", full)
    out = config.parent / "out"
    assert main(["--config", str(config), "--out", str(out), "--quiet"]) == 1
    err = capsys.readouterr().err
    assert "build failed: cannot write the output (No space left on device" in err
    assert ".tar" in err and "a rerun with room to write reuses it" in err
    assert not out.exists()


def test_read_only_output_folder(config, monkeypatch, capsys):
    real_mkdir = Path.mkdir

    def forbidden(self, *args, **kwargs):
        if ".partial-" in self.name:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", forbidden)
    out = config.parent / "ro" / "out"
    assert main(["--config", str(config), "--out", str(out), "--quiet"]) == 1
    assert "cannot write the output (Permission denied" in capsys.readouterr().err
    assert not out.exists()


def test_output_error_reads_direct_and_wrapped_errors():
    assert output_error(OSError(errno.ENOSPC, "No space left on device", "/o/x.tar")) == \
        "No space left on device: /o/x.tar"
    wrapped = RuntimeError("OSError: [Errno 30] Read-only file system: '/o/x' [while running 'WriteShards/WriteTar']")
    assert output_error(wrapped) == "Read-only file system: '/o/x' [while running 'WriteShards/WriteTar']"
    # not the disk: left to the traceback
    assert output_error(FileNotFoundError(errno.ENOENT, "No such file", "/x")) is None
    assert output_error(RuntimeError("ValueError: bad [Errno 28] is not an OSError")) is None
    assert output_error(ValueError("x")) is None


def test_a_bug_keeps_its_traceback(config, monkeypatch):
    import pipelines.build_attribution88 as driver

    def bug(*args, **kwargs):
        raise KeyError("not a disk error")

    monkeypatch.setattr(driver, "plan_build", bug)
    with pytest.raises(Exception, match="not a disk error"):
        main(["--config", str(config), "--out", str(config.parent / "out"), "--quiet"])


def test_a_semantic_short_of_decodable_photos_is_a_clear_error():
    from benchmark.real_sets import RealSetError
    from benchmark.records import ImageBatch
    from pipelines.build_attribution88 import input_error
    from pipelines.select_by_quality import _keep_real

    batch = ImageBatch(chunk_id="real-faces-real_class-c000000", source="real", semantic="faces",
                       role="real_class", keys=("real-faces-a", "real-faces-b"), pngs=(), ranks=(0, 3),
                       origins=(), generator="photo", checkpoint_sha256="")
    with pytest.raises(RealSetError, match="semantics.faces.path: only 2 of the Real-class candidate "
                                           "photos decoded, the Real class needs 5") as info:
        list(_keep_real(("faces", [batch]), 5))
    assert input_error(info.value) == str(info.value)
    # as Beam re-raises it from a worker
    wrapped = RuntimeError(f"RealSetError: {info.value} [while running 'SelectByQuality/KeepRealByRank']")
    assert input_error(wrapped) == str(info.value)
    # as the PortableRunner and multi_processing re-raise it: the worker's chained traceback as text
    chained = RuntimeError(
        "Pipeline job-1 failed in state FAILED: Error running pipeline.\n"
        "Traceback (most recent call last):\n  File \"pipelines/select_by_quality.py\", line 80\n"
        f"benchmark.real_sets.RealSetError: {info.value}\n\n"
        "During handling of the above exception, another exception occurred:\n\n"
        "Traceback (most recent call last):\n  File \"apache_beam/runners/common.py\", line 1514\n"
        f"benchmark.real_sets.RealSetError: {info.value} [while running 'SelectByQuality/KeepRealByRank']\n")
    assert input_error(chained) == str(info.value)
    assert input_error(RuntimeError("ValueError: something else")) is None
    lost = ("cell sngan-faces, sample features: 2 of 3 planned chunks arrived; the runner lost "
            "elements on the way")
    assert input_error(RuntimeError(f"benchmark.plan.LostChunksError: {lost} "
                                    "[while running 'SelectByQuality/SelectCell']")) == lost
    assert [p.key for _, ps in _keep_real(("faces", [batch]), 2) for p in ps] == ["real-faces-a", "real-faces-b"]
