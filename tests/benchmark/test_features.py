import math

import numpy as np
import pytest
import torch

from benchmark.features import InceptionFeatures, LPIPSEmbedding, WeightsError, load_state_dict

# Small inputs keep the CPU cost of a full InceptionV3 pass low.
SIZE = 80


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, size=(5, 64, 64, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def inception(images):
    return InceptionFeatures("random", input_size=SIZE, precision="fp32", batch_size=2)


def seeded_torchvision_state(builder, seed, **kwargs):
    """A torchvision-style state dict with seeded random weights, built without touching the global RNG."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return builder(weights=None, **kwargs).state_dict()


def cosine(a, b):
    return (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)


# ---------------------------------------------------------------- inception


def test_inception_shape_dtype_and_batching(inception, images):
    feats = inception(images)
    assert feats.shape == (5, 2048) and feats.dtype == np.float32
    assert np.isfinite(feats).all() and feats.std() > 0
    # Batch size must not change the answer beyond float noise.
    whole = InceptionFeatures("random", input_size=SIZE, precision="fp32", batch_size=64)(images)
    np.testing.assert_allclose(whole, feats, rtol=1e-4, atol=1e-5)
    assert inception(images[:0]).shape == (0, 2048)


def test_inception_random_init_is_deterministic_and_leaves_global_rng(inception, images):
    state = torch.get_rng_state()
    other = InceptionFeatures("random", input_size=SIZE, precision="fp32", batch_size=2)
    assert torch.equal(state, torch.get_rng_state())
    np.testing.assert_array_equal(other(images), inception(images))
    assert other.weights_id == "random"


def test_inception_bf16_close_to_fp32(inception, images):
    bf16 = InceptionFeatures("random", input_size=SIZE, precision="bf16")(images)
    fp32 = inception(images)
    assert bf16.dtype == np.float32
    assert cosine(bf16, fp32).min() > 0.99
    # Random nets map all images close together, so also check the part that
    # tells images apart survives bf16.
    centred = cosine(bf16 - fp32.mean(0), fp32 - fp32.mean(0))
    assert centred.min() > 0.9


def test_inception_loads_weights_file(tmp_path, inception, images):
    from safetensors.torch import save_file
    from torchvision.models import inception_v3

    # aux_logits=True: torchvision checkpoints carry AuxLogits.*, which must be ignored.
    state = seeded_torchvision_state(inception_v3, 1, aux_logits=True, init_weights=False)
    assert any(k.startswith("AuxLogits.") for k in state)
    pth = tmp_path / "inception.pth"
    torch.save(state, pth)
    loaded = InceptionFeatures(pth, input_size=SIZE, precision="fp32")
    assert loaded.weights_id.startswith("sha256:") and len(loaded.weights_id) == 7 + 64
    feats = loaded(images)
    assert not np.allclose(feats, inception(images))

    st = tmp_path / "inception.safetensors"
    save_file({k: v.contiguous() for k, v in state.items()}, str(st))
    np.testing.assert_array_equal(InceptionFeatures(st, input_size=SIZE, precision="fp32")(images), feats)


@pytest.fixture(scope="module")
def inception_file(tmp_path_factory):
    """Seeded torchvision weights, conv kernels rescaled to He init so pool3 is far from zero
    (torchvision's default init makes a deep random net's features vanish into float noise)."""
    from torchvision.models import inception_v3

    state = seeded_torchvision_state(inception_v3, 5, aux_logits=True, init_weights=False)
    gen = torch.Generator().manual_seed(6)
    for name, value in state.items():
        if name.endswith("conv.weight"):
            value.mul_(math.sqrt(2.0 / value[0].numel()) / value.std())
        elif name.endswith(("bn.running_mean", "bn.bias")):
            # Non-trivial batch-norm statistics, so eval-mode BN is not the identity.
            value.copy_(0.1 * torch.randn(value.shape, generator=gen))
    path = tmp_path_factory.mktemp("weights") / "inception.pth"
    torch.save(state, path)
    return path


@pytest.fixture(scope="module")
def torchvision_pool3(inception_file):
    """What the features must equal: torchvision's own InceptionV3 with transform_input=True,
    fed [0, 1] pixels bilinearly resized to SIZE then ImageNet-normalised, read at pool3 by a
    forward hook (not through our fc replacement)."""
    from torchvision.models import inception_v3

    net = inception_v3(weights=None, aux_logits=True, init_weights=False, transform_input=True)
    net.load_state_dict(torch.load(inception_file, weights_only=True))
    net.eval()
    pooled = []
    net.avgpool.register_forward_hook(lambda module, args, out: pooled.append(out.flatten(1)))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def pool3(images):
        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255
        if x.shape[-2:] != (SIZE, SIZE):
            x = torch.nn.functional.interpolate(x, size=(SIZE, SIZE), mode="bilinear",
                                                align_corners=False, antialias=False)
        pooled.clear()
        with torch.no_grad():
            net((x - mean) / std)
        return pooled[0].numpy()

    return pool3


@pytest.mark.parametrize("height, width", [(96, 96), (64, 72), (SIZE, SIZE)],
                         ids=["shrunk", "enlarged-non-square", "input-size"])
def test_inception_equals_torchvision_pool3(inception_file, torchvision_pool3, height, width):
    images = np.random.default_rng(height + width).integers(0, 256, (2, height, width, 3), dtype=np.uint8)
    got = InceptionFeatures(inception_file, input_size=SIZE, precision="fp32", batch_size=2)(images)
    want = torchvision_pool3(images)
    # Float noise is ~1e-6 of the features' scale; the two images differ by a few percent.
    scale = np.abs(want).max()
    assert np.abs(want[0] - want[1]).max() > 0.01 * scale
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * scale)


def test_inception_missing_file_names_key(tmp_path):
    missing = tmp_path / "nope.pth"
    with pytest.raises(WeightsError, match="features.inception.weights") as err:
        InceptionFeatures(missing)
    assert str(missing) in str(err.value) and "'random'" in str(err.value)
    with pytest.raises(WeightsError, match="my.key"):
        InceptionFeatures(missing, config_key="my.key")


def test_inception_wrong_shape_and_wrong_keys(tmp_path):
    from torchvision.models import inception_v3

    state = seeded_torchvision_state(inception_v3, 2, aux_logits=False, init_weights=False)
    state["fc.weight"] = torch.zeros(10, 2048)
    bad = tmp_path / "bad_shape.pth"
    torch.save(state, bad)
    with pytest.raises(WeightsError, match="features.inception.weights"):
        InceptionFeatures(bad)

    del state["fc.weight"]
    state["fc.weight_extra"] = torch.zeros(1)
    torch.save(state, tmp_path / "bad_keys.pth")
    with pytest.raises(WeightsError, match="does not match"):
        InceptionFeatures(tmp_path / "bad_keys.pth")


def test_load_state_dict_rejects_non_state_dicts(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="cannot be read"):
        load_state_dict(garbage, "k")
    listy = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], listy)
    with pytest.raises(WeightsError, match="state dict"):
        load_state_dict(listy, "k")
    nested = tmp_path / "nested.pt"
    torch.save({"model": {"w": torch.zeros(1)}}, nested)
    with pytest.raises(WeightsError, match="flat"):
        load_state_dict(nested, "k")


def test_load_state_dict_refuses_pickled_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("should never run",))

    evil = tmp_path / "evil.pth"
    torch.save({"w": Evil()}, evil)
    with pytest.raises(WeightsError, match="cannot be read"):
        load_state_dict(evil, "k")


def test_images_must_be_uint8_nhwc(inception):
    with pytest.raises(ValueError, match="uint8"):
        inception(np.zeros((1, 64, 64, 3), dtype=np.float32))
    with pytest.raises(ValueError, match="uint8"):
        inception(np.zeros((64, 64, 3), dtype=np.uint8))


# ---------------------------------------------------------------- lpips


@pytest.fixture(scope="module")
def lpips_random():
    return LPIPSEmbedding("random", batch_size=3)


def assert_embedding_is_lpips(embedder, images):
    emb = embedder(images).astype(np.float64)
    x, y = images[:-1], images[1:]
    with torch.no_grad():
        expected = embedder.model(embedder.to_input(x), embedder.to_input(y)).flatten().double().numpy()
    got = ((emb[:-1] - emb[1:]) ** 2).sum(axis=1)
    np.testing.assert_allclose(got, expected, rtol=1e-4)
    assert (expected > 0).all()


def test_lpips_embedding_equals_lpips(lpips_random, images):
    emb = lpips_random(images)
    assert emb.dtype == np.float32 and emb.shape[0] == len(images)
    assert_embedding_is_lpips(lpips_random, images)
    # Identical images embed identically (LPIPS(x, x) == 0).
    np.testing.assert_array_equal(lpips_random(images[:1]), lpips_random(images[:1].copy()))


def test_lpips_random_init_is_deterministic(lpips_random, images):
    state = torch.get_rng_state()
    other = LPIPSEmbedding("random")
    assert torch.equal(state, torch.get_rng_state())
    np.testing.assert_array_equal(other(images), lpips_random(images))
    assert other.weights_id == "random"


def test_lpips_loads_torchvision_alexnet(tmp_path, lpips_random, images):
    from torchvision.models import alexnet

    state = seeded_torchvision_state(alexnet, 3)
    path = tmp_path / "alexnet.pth"
    torch.save(state, path)
    loaded = LPIPSEmbedding(path)
    assert loaded.weights_id.startswith("sha256:")
    torch.testing.assert_close(getattr(loaded.model.net.slice5, "10").weight, state["features.10.weight"])
    torch.testing.assert_close(getattr(loaded.model.net.slice1, "0").bias, state["features.0.bias"])
    assert not np.allclose(loaded(images), lpips_random(images))
    assert_embedding_is_lpips(loaded, images)


def test_lpips_bad_backbone_weights(tmp_path):
    from torchvision.models import alexnet

    with pytest.raises(WeightsError, match="features.lpips.backbone_weights"):
        LPIPSEmbedding(tmp_path / "missing.pth")
    state = seeded_torchvision_state(alexnet, 4)
    state["features.3.weight"] = torch.zeros(192, 64, 3, 3)
    torch.save(state, tmp_path / "shape.pth")
    with pytest.raises(WeightsError, match="does not match"):
        LPIPSEmbedding(tmp_path / "shape.pth")
    del state["features.3.weight"]
    torch.save(state, tmp_path / "missing_key.pth")
    with pytest.raises(WeightsError, match="does not match"):
        LPIPSEmbedding(tmp_path / "missing_key.pth")
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "alien.pth")
    with pytest.raises(WeightsError, match="unexpected key"):
        LPIPSEmbedding(tmp_path / "alien.pth")


# ---------------------------------------------------------------- batch determinism


@pytest.mark.parametrize("extractor", ["inception", "lpips_random"])
def test_a_feature_row_is_the_same_bytes_whatever_batch_it_ran_in(extractor, images, request):
    """Each call pads its last batch to batch_size, so how a caller splits never changes a row.

    Without the padding this fails on the CPU: oneDNN runs a 1-image batch through other
    kernels than a 2- or 3-image one and the last bits differ.
    """
    extract = request.getfixturevalue(extractor)
    three = images[:3]
    whole = extract(three)
    for split in ([1, 2], [2, 1], [1, 1, 1]):
        parts = np.concatenate([extract(part) for part in np.split(three, np.cumsum(split)[:-1])])
        assert parts.tobytes() == whole.tobytes(), split
