"""The same build on a distributed runner gives the same bytes as the DirectRunner."""

from __future__ import annotations


import pytest

from pipelines.build_attribution88 import main
from tests.pipelines.test_build_e2e import _tar_bytes, built, photo_config  # noqa: F401 (fixtures)


def test_dask_runner_on_a_local_cluster_builds_the_same_bytes(photo_config, built):  # noqa: F811
    distributed = pytest.importorskip("distributed")
    out = photo_config.parent / "dask"
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, distributed.Client(cluster):
        code = main(["--config", str(photo_config), "--out", str(out), "--quiet",
                     "--runner", "apache_beam.runners.dask.dask_runner.DaskRunner",
                     f"--dask_client_address={cluster.scheduler_address}"])
    assert code == 0
    assert _tar_bytes(out) == _tar_bytes(built)
    for name in ("manifest.parquet", "rejections.parquet", "dataset_info.json", "README.md",
                 "croissant.json", "samples-test.png"):
        assert (out / name).read_bytes() == (built / name).read_bytes(), name
