"""eval.embeddings and `eval.predict --embeddings`: the embedding of every predicted image from the
same forward pass, the penultimate layer of each model, a stratified seeded t-SNE subsample, a
reproducible .npz and PNG; bad settings exit 2 and write nothing."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from eval import embeddings, predict
from eval.embeddings import EmbeddingError, EmbeddingRecorder

from tests.eval.test_predict import CLASSES, CPU, Out


class Counting(nn.Module):
    """Logits from the flattened image's first values; the embedding is the image; counts calls."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, images):
        self.calls += 1
        flat = images.flatten(1)
        return Out(logits=flat[:, :3], embedding=flat * 2)


def batches(n: int, size: int = 4, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    for start in range(0, n, size):
        idx = range(start, min(n, start + size))
        yield {"image": torch.randn(len(idx), 3, 2, 2, generator=gen),
               "label": torch.tensor([i % 3 for i in idx]),
               "semantic": torch.tensor([i % 2 for i in idx]),
               "key": [f"{CLASSES[i % 3]}-s{i:04d}" for i in idx]}


def test_recorder_pairs_each_batch_with_its_single_forward():
    model = Counting()
    with EmbeddingRecorder(model) as recorder:
        rows = list(predict.predict_rows(model, recorder.tap(batches(10)), CLASSES, CPU))
    table = recorder.table()
    assert model.calls == 3  # 10 images in batches of 4: one forward per batch, no second pass
    assert list(table.keys) == [r["key"] for r in rows]
    images = torch.cat([b["image"] for b in batches(10)]).flatten(1)
    assert table.embedding.dtype == np.float32
    np.testing.assert_array_equal(table.embedding, (images * 2).numpy())
    assert table.labels.tolist() == [i % 3 for i in range(10)]
    assert table.semantics.tolist() == [i % 2 for i in range(10)]
    # the hook is gone afterwards
    model(torch.zeros(1, 3, 2, 2))
    assert len(recorder.table().keys) == 10


def test_recorder_refuses_a_second_forward_per_batch_and_missing_semantics():
    model = Counting()

    def twice(batches_):
        for batch in batches_:
            model(batch["image"])
            yield batch

    with EmbeddingRecorder(model) as recorder, pytest.raises(EmbeddingError, match="ran 2 times for 1 batches"):
        for batch in twice(recorder.tap(batches(4))):
            model(batch["image"])
    no_semantic = [{k: v for k, v in b.items() if k != "semantic"} for b in batches(4)]
    with EmbeddingRecorder(model) as recorder, pytest.raises(EmbeddingError, match="semantic"):
        list(recorder.tap(no_semantic))


def test_subsample_is_stratified_by_class_and_semantic_and_seeded():
    # cells (label, semantic): (0, 0) 600, (1, 0) 300, (1, 1) 90, (2, 1) 10
    labels = np.array([0] * 600 + [1] * 390 + [2] * 10)
    semantics = np.array([0] * 900 + [1] * 100)
    rng = np.random.default_rng(5)
    perm = rng.permutation(1000)
    labels, semantics = labels[perm], semantics[perm]
    picked = embeddings.stratified_subsample(labels, semantics, 100, seed=3)
    assert len(picked) == 100 and len(set(picked.tolist())) == 100
    assert picked.tolist() == sorted(picked.tolist())
    cells = {}
    for i in picked:
        cells[(labels[i], semantics[i])] = cells.get((labels[i], semantics[i]), 0) + 1
    assert cells == {(0, 0): 60, (1, 0): 30, (1, 1): 9, (2, 1): 1}
    # largest remainders: 3 cells of 1/3 each, 2 points -> the first two cells get one each
    assert embeddings.stratified_subsample(np.array([0, 1, 2] * 3), np.zeros(9, int), 2, 0).size == 2
    same = embeddings.stratified_subsample(labels, semantics, 100, seed=3)
    other = embeddings.stratified_subsample(labels, semantics, 100, seed=4)
    assert np.array_equal(picked, same) and not np.array_equal(picked, other)
    assert np.array_equal(embeddings.stratified_subsample(labels, semantics, 1000, 0), np.arange(1000))


def test_largest_remainder_goes_to_the_cell_listed_first():
    labels = np.array([0, 0, 1, 1, 2, 2])
    picked = embeddings.stratified_subsample(labels, np.zeros(6, int), 2, seed=0)
    assert sorted(labels[picked].tolist()) == [0, 1]


def test_npz_repeats_its_bytes_and_loads_without_pickle(tmp_path):
    arrays = {"keys": np.array(["a-s1", "b-s2"]), "embedding": np.ones((2, 3), np.float32),
              "model": np.array("yu")}
    data = embeddings.npz_bytes(arrays)
    assert data == embeddings.npz_bytes(arrays)
    (tmp_path / "e.npz").write_bytes(data)
    with np.load(tmp_path / "e.npz", allow_pickle=False) as loaded:
        assert loaded["keys"].tolist() == ["a-s1", "b-s2"]
        assert loaded["embedding"].dtype == np.float32
        assert str(loaded["model"]) == "yu"


def test_tsne_figure_is_a_png_with_the_same_bytes_each_time():
    rng = np.random.default_rng(0)
    table = embeddings.EmbeddingTable(
        keys=np.array([f"k{i}" for i in range(60)]), labels=np.arange(60) % 3,
        semantics=np.arange(60) % 2,
        embedding=(rng.normal(size=(60, 80)) + np.repeat(np.eye(3, 80) * 8, 20, 0)).astype(np.float32))
    meta = embeddings.Meta("yu", "runs/yu", "best", 3, "test", "0" * 64, CLASSES, ("celeba", "cat"),
                           (True, False))
    outputs = embeddings.Outputs(Path("e.npz"), Path("e.tsne.png"), 40, 7)
    first = embeddings.render(table, meta, outputs)
    assert first == embeddings.render(table, meta, outputs)
    image = Image.open(io.BytesIO(first[outputs.png]))
    assert image.format == "PNG" and image.width > 1000
    loaded = np.load(io.BytesIO(first[outputs.npz]))
    assert int(loaded["tsne_seed"]) == 7 and int(loaded["tsne_pca_dims"]) == 40  # 80-d > 50: PCA
    assert loaded["tsne_xy"].shape == (40, 2) and len(loaded["tsne_index"]) == 40
    assert float(loaded["tsne_perplexity"]) == pytest.approx(13)


def test_class_colours_real_grey_and_no_repeat_for_twelve_sources():
    styles = embeddings.class_colours(["real", *(f"g{i}" for i in range(12))])
    assert styles[0][0] == embeddings.REAL_COLOUR
    assert len(set(styles)) == 13 and len({c for c, _ in styles}) == 13


# --- the command on a tiny built benchmark with tiny trained runs ---

MODEL_SETS = {
    "repmix": ["model.options.arch=resnet18", "model.options.embed_dim=16", "data.resize=36",
               "data.crop=32", "data.eval_size=32"],
    "yu": ["model.options.fmap_base=32", "model.options.fmap_max=16"],
    "dct": [],
}


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    from tests.eval.test_train import build_tiny_benchmark

    return build_tiny_benchmark(tmp_path_factory.mktemp("embed") / "bench", {"train": 2, "val": 1, "test": 3})


@pytest.fixture(scope="module")
def runs(bench, tmp_path_factory):
    from eval import train
    from tests.eval.test_train import FAST_SETS

    root = tmp_path_factory.mktemp("runs")
    out = {}
    for model, sets in MODEL_SETS.items():
        if model == "repmix":
            import torchvision
            from safetensors.torch import save_file
            backbone = root / "resnet18.safetensors"
            save_file(torchvision.models.resnet18().state_dict(), str(backbone))
            sets = [*sets, f"model.backbone_weights={backbone}"]
        extra = [a for s in [*sets, "optim.epochs=1"] for a in ("--set", s)]
        assert train.main(["--benchmark", str(bench), "--model", model, "--out", str(root / model),
                           *FAST_SETS, *extra]) == 0
        out[model] = root / model
    return out


def class_layer(model: nn.Module, name: str, embedding: torch.Tensor) -> torch.Tensor:
    """The model's final logits computed from the recorded embedding alone."""
    if name == "repmix":
        from eval.models.repmix import gate
        return gate(model.attribution(embedding), model.detection(embedding))
    return model.classify(embedding)


@pytest.mark.parametrize("name", list(MODEL_SETS))
def test_cli_writes_the_penultimate_embedding_of_every_predicted_image(bench, runs, tmp_path, name, capsys):
    from eval.benchmark_folder import open_benchmark

    out = tmp_path / "preds.csv"
    assert predict.main(["--run", str(runs[name]), "--benchmark", str(bench), "--out", str(out),
                         "--embeddings"]) == 0
    npz, png = tmp_path / "preds.embeddings.npz", tmp_path / "preds.embeddings.tsne.png"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([out.name, npz.name, png.name])
    with open(out) as f:
        rows = list(csv.DictReader(f))
    data = dict(np.load(npz, allow_pickle=False))
    assert data["keys"].tolist() == [r["key"] for r in rows] and len(rows) == 18
    manifest = {r["key"]: r for r in open_benchmark(bench).manifest(split="test").to_pylist()}
    assert data["labels"].tolist() == [manifest[k]["label"] for k in data["keys"]]
    assert data["semantics"].tolist() == [manifest[k]["semantic_label"] for k in data["keys"]]
    assert data["classes"].tolist() == list(CLASSES)
    assert data["semantic_names"].tolist() == ["celeba", "cat"]
    assert data["semantic_seen"].tolist() == [True, False]
    assert (str(data["model"]), str(data["split"]), str(data["checkpoint"])) == (name, "test", "best")
    assert str(data["manifest_sha256"]) == open_benchmark(bench).manifest_sha256
    # the embedding is the class layer's input: the width, and the scores recomputed from it
    loaded = predict.load_run(runs[name], bench, device="cpu")
    layer = loaded.model.attribution if name == "repmix" else loaded.model.classify
    width = layer.weight.shape[1]  # the class layer's input width
    assert data["embedding"].shape == (18, width) and data["embedding"].dtype == np.float32
    assert width == {"repmix": 16, "yu": 16, "dct": 32 * (32 // 4) ** 2}[name]
    with torch.no_grad():
        logits = class_layer(loaded.model, name, torch.from_numpy(data["embedding"]))
    scores = np.array([[float(r[f"score_{c}"]) for c in CLASSES] for r in rows])
    np.testing.assert_allclose(torch.softmax(logits, 1).numpy(), scores, atol=1e-5)
    # the figure: every image (18 < the default points), a PNG
    assert data["tsne_index"].tolist() == list(range(18)) and data["tsne_xy"].shape == (18, 2)
    assert Image.open(png).format == "PNG"


def test_cli_path_given_and_the_same_bytes_twice(bench, runs, tmp_path):
    common = ["--run", str(runs["yu"]), "--benchmark", str(bench), "--tsne-points", "12", "--tsne-seed", "3"]
    for folder in ("a", "b"):
        assert predict.main([*common, "--out", str(tmp_path / folder / "p.csv"),
                             "--embeddings", str(tmp_path / folder / "emb" / "yu.npz")]) == 0
    for name in ("emb/yu.npz", "emb/yu.tsne.png", "p.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    data = np.load(tmp_path / "a" / "emb" / "yu.npz")
    # 12 of 18, two of each of the 6 (class, semantic) cells
    cells = [(int(data["labels"][i]), int(data["semantics"][i])) for i in data["tsne_index"]]
    assert len(cells) == 12 and all(cells.count(c) == 2 for c in set(cells)) and len(set(cells)) == 6
    assert int(data["tsne_seed"]) == 3


def test_cli_without_embeddings_writes_only_the_submission(bench, runs, tmp_path):
    assert predict.main(["--run", str(runs["dct"]), "--benchmark", str(bench),
                         "--out", str(tmp_path / "p.csv")]) == 0
    assert [p.name for p in tmp_path.iterdir()] == ["p.csv"]


def exit_code(argv: list[str]) -> int:
    """main's return value, or the code argparse exits with."""
    try:
        return predict.main(argv)
    except SystemExit as exc:
        return exc.code


@pytest.mark.parametrize("args, named", [
    (["--embeddings", "--tsne-points", "3"], "--tsne-points"),
    (["--embeddings", "--tsne-points", "-1"], "--tsne-points"),
    (["--embeddings", "--tsne-seed", "-2"], "--tsne-seed"),
    (["--tsne-points", "100"], "need --embeddings"),
    (["--embeddings", "EMB/e.txt"], ".npz"),
    (["--embeddings", "--tsne-points", "x"], "invalid int"),
])
def test_cli_bad_settings_exit_2_and_write_nothing(bench, runs, tmp_path, capsys, args, named):
    args = [a.replace("EMB", str(tmp_path)) for a in args]
    assert exit_code(["--run", str(runs["yu"]), "--benchmark", str(bench),
                      "--out", str(tmp_path / "p.csv"), *args]) == 2
    assert named in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []


def test_cli_too_few_images_for_a_tsne_exits_2_and_writes_nothing(runs, tmp_path, capsys):
    from tests.eval.test_train import build_tiny_benchmark

    small = build_tiny_benchmark(tmp_path / "small", {"train": 1, "val": 1, "test": 1})
    out = tmp_path / "out"
    assert predict.main(["--run", str(runs["yu"]), "--benchmark", str(small), "--force",
                         "--out", str(out / "p.csv"), "--embeddings"]) == 2
    assert "6 images; a t-SNE needs at least 10" in capsys.readouterr().err
    assert not out.exists()
    # without a figure the 6 embeddings are written
    assert predict.main(["--run", str(runs["yu"]), "--benchmark", str(small), "--force",
                         "--out", str(out / "p.csv"), "--embeddings", "--tsne-points", "0"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["p.csv", "p.embeddings.npz"]
    assert "tsne_xy" not in np.load(out / "p.embeddings.npz").files
