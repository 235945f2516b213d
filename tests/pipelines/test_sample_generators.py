"""Chunk planning and sampling hand each sample index its cell's latent seed."""

from __future__ import annotations

import numpy as np

import generators
from benchmark.keys import latent_seed
from benchmark.records import ModelRef
from pipelines.compute import ComputeSettings
from pipelines.generator_handler import GeneratorHandler
from pipelines.sample_generators import plan_chunks


def _model(source="sngan", semantic="faces", arch="sngan", samples=10):
    return ModelRef(source, semantic, arch, "w.safetensors", "", "ab" * 32, samples)


def test_chunks_carry_each_index_with_its_derived_seed():
    chunks = plan_chunks(_model(), 4, seed=3)
    assert [(c.start, c.stop) for c in chunks] == [(0, 4), (4, 8), (8, 10)]
    assert [s for c in chunks for s in c.seeds] == [latent_seed(3, "sngan", "faces", "sngan", i)
                                                    for i in range(10)]
    other_cell = plan_chunks(_model(semantic="rooms"), 4, seed=3)
    assert set(chunks[0].seeds).isdisjoint(other_cell[0].seeds)
    assert plan_chunks(_model(), 4, seed=4)[0].seeds != chunks[0].seeds


class _FakeGenerator:
    checkpoint_sha256 = "ab" * 32

    def __init__(self):
        self.asked: list[int] = []

    def sample(self, seeds):
        self.asked += seeds
        return np.stack([np.full((8, 8, 3), s % 251, np.uint8) for s in seeds])


def test_sampling_draws_the_derived_seeds_and_keys_keep_the_index(monkeypatch):
    fake = _FakeGenerator()
    monkeypatch.setattr(generators, "load", lambda *a, **k: fake)
    handler = GeneratorHandler(8, ComputeSettings("cpu", 1))
    chunk = plan_chunks(_model(), 4, seed=3)[1]
    (batch,) = handler.run_inference([chunk], handler.load_model())
    assert fake.asked == list(chunk.seeds)
    assert batch.keys == tuple(f"sngan-faces-s{i:08d}" for i in range(4, 8))
    assert batch.ranks == (4, 5, 6, 7) and batch.latent_seeds == chunk.seeds
