"""The model stages' handlers: loaded once per worker process, every chunk out, weights checked."""

from __future__ import annotations

from pathlib import Path

import apache_beam as beam
import numpy as np
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

import generators
import pipelines.feature_handler as feature_handler
from benchmark.config import FeaturesSpec, InceptionSpec, LpipsSpec, RuntimeSpec
from benchmark.images import decode_image, encode_png
from benchmark.records import CANDIDATE, ImageBatch, ModelRef
from pipelines.compute import ComputeSettings
from pipelines.compute_features import ComputeFeatures
from pipelines.generator_handler import GeneratorHandler
from pipelines.model_handlers import RunOnChunks
from pipelines.sample_generators import SampleGenerators, plan_chunks
from pipelines.train_generators import TrainGenerators

CPU = ComputeSettings("cpu", 1)
FEATURES = FeaturesSpec(inception=InceptionSpec(weights="random", input_size=75),
                        lpips=LpipsSpec(backbone_weights="random"))


def _rgb(seed: int, size: int = 16) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


def _folder_model(folder, count: int = 6, source: str = "blackbox") -> ModelRef:
    folder.mkdir(exist_ok=True)
    for i in range(count):
        (folder / f"{i:02d}.png").write_bytes(encode_png(_rgb(i)))
    sha = generators.load("folder", folder=folder, resolution=16).checkpoint_sha256
    return ModelRef(source, "faces", "folder", "", str(folder), sha, samples=count)


def _image_batch(i: int, size: int) -> ImageBatch:
    keys = tuple(f"k{i}-{j}" for j in range(size))
    return ImageBatch(f"c{i}", "sngan", "faces", CANDIDATE, keys,
                      tuple(encode_png(_rgb(100 * i + j, 64)) for j in range(size)),
                      tuple(range(size)), ("",) * size, "sngan", "0" * 64,
                      latent_seeds=tuple(range(size)))


class _MeanColour:
    weights_id = "fake"

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return images.mean(axis=(1, 2)).astype(np.float32)


def _touch(name: str, folder: str) -> None:
    (Path(folder) / name).touch()


@pytest.fixture
def count_calls(monkeypatch):
    """count_calls(module, name) wraps module.name, counting its calls; returns the list of calls."""
    def wrap(module, name):
        calls = []
        real = getattr(module, name)

        def counted(*args, **kwargs):
            calls.append(args)
            return real(*args, **kwargs)

        monkeypatch.setattr(module, name, counted)
        return calls
    return wrap


def test_each_model_loads_once_per_worker_process_though_every_bundle_makes_new_dofns(
        tmp_path, count_calls, monkeypatch):
    """The DaskRunner sets up the DoFn again for every partition; RunInference's shared handle
    still loads the generator and the extractor once in the process. (A DoFn that loads in
    setup, as the feature stage did, loads once per partition: 3 times here.)"""
    distributed = pytest.importorskip("distributed")
    model = _folder_model(tmp_path / "faces")
    chunks = plan_chunks(model, 2, seed=0)
    batches = [_image_batch(i, 2) for i in range(3)]
    opened = count_calls(generators, "load")
    # A fake extractor: what is counted is the loading, and a real one takes seconds to build.
    monkeypatch.setattr(feature_handler, "build_extractor", lambda *a: _MeanColour())
    built = count_calls(feature_handler, "build_extractor")
    out = tmp_path / "out"
    out.mkdir()
    # In-process workers, so the counters above see every load.
    with distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                                  dashboard_address=None) as cluster, distributed.Client(cluster):
        options = PipelineOptions(["--runner=apache_beam.runners.dask.dask_runner.DaskRunner",
                                   f"--dask_client_address={cluster.scheduler_address}",
                                   "--dask_npartitions=3"])
        p = beam.Pipeline(options=options)
        sampled = (p | "Chunks" >> beam.Create(chunks)
                   | "Sample" >> RunOnChunks(GeneratorHandler(16, CPU)))
        features = (p | "Batches" >> beam.Create(batches)
                    | "Features" >> ComputeFeatures("inception", FEATURES, CPU, ("sngan",)))
        keys = (sampled | "SampledKeys" >> beam.FlatMap(lambda b: b.keys),
                features | "FeatureKeys" >> beam.FlatMap(lambda kv: kv[1].keys))
        _ = keys | beam.Flatten() | beam.Map(_touch, str(out))  # Dask has no assert_that
        result = p.run()
        result.wait_until_finish()
        result.client.close()  # the runner's own client, else it outlives the cluster
    assert len(opened) == 1 and len(built) == 1
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"blackbox-faces-s{i:08d}" for i in range(6)] + [f"k{i}-{j}" for i in range(3) for j in (0, 1)])


def test_the_opener_keeps_one_generator_and_reopens_when_a_chunk_names_another(tmp_path, count_calls):
    a = _folder_model(tmp_path / "a", 4, source="a")
    b = _folder_model(tmp_path / "b", 4, source="b")
    handler = GeneratorHandler(16, CPU)
    opener = handler.load_model()
    opened = count_calls(generators, "load")
    chunks = [plan_chunks(a, 2, 0)[0], plan_chunks(a, 2, 0)[1], plan_chunks(b, 2, 0)[0],
              plan_chunks(a, 2, 0)[0]]
    out = handler.run_inference(chunks, opener)
    assert [call[0] for call in opened] == ["folder"] * 3  # a, b, then a again
    assert [batch.chunk_id for batch in out] == [chunk.chunk_id for chunk in chunks]
    assert all(decode_image(png).tolist() == _rgb(rank).tolist()
               for batch in out for png, rank in zip(batch.pngs, batch.ranks))


def test_a_generator_that_changed_during_the_build_is_refused(tmp_path):
    model = _folder_model(tmp_path / "faces", 4)
    (tmp_path / "faces" / "99.png").write_bytes(encode_png(_rgb(99)))  # after the plan saw it
    handler = GeneratorHandler(16, CPU)
    with pytest.raises(RuntimeError, match="faces changed during the build"):
        handler.run_inference(plan_chunks(model, 2, 0)[:1], handler.load_model())


def test_model_stages_carry_the_accelerator_hint_only_when_one_is_set():
    def hints(compute):
        p = beam.Pipeline()
        models = p | beam.Create([])
        _ = models | SampleGenerators(4, 16, compute, 0)
        _ = (p | "Batches" >> beam.Create([])) | ComputeFeatures("lpips", FEATURES, compute, ("a",))
        _ = (p | "Photos" >> beam.Create([])) | TrainGenerators([], compute)
        proto = p.to_runner_api()
        found = {}
        for t in proto.components.transforms.values():
            env = proto.components.environments[t.environment_id] if t.environment_id else None
            if env is not None and env.resource_hints:
                found[t.unique_name.split("/")[0]] = dict(env.resource_hints)
        return found

    gpu = "type:nvidia-l4;count:1;install-nvidia-driver"
    assert hints(CPU) == {}
    hinted = hints(ComputeSettings("cuda", 1, accelerator=gpu))
    assert set(hinted) == {"SampleGenerators", "ComputeFeatures", "TrainGenerators"}
    assert all(h == {"beam:resources:accelerator:v1": gpu.encode()} for h in hinted.values())


def test_the_accelerator_setting_is_a_hint_only_on_cuda():
    runtime = RuntimeSpec(device="auto", torch_threads=2, accelerator="type:nvidia-l4;count:1")
    assert ComputeSettings.for_device("cpu", runtime) == ComputeSettings("cpu", 2)
    assert ComputeSettings.for_device("cuda", runtime).resource_hints() == {
        "accelerator": "type:nvidia-l4;count:1"}
