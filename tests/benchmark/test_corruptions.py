import cv2
import numpy as np
import pytest
import torch
from scipy.stats import poisson

from benchmark.config import CorruptionSpec
from benchmark.corruption_policy import CLEAN, choose_corruption
from benchmark.corruptions import corrupt, engine, kernels, names, ops, resize_route
from benchmark.corruptions.fidelity import synthetic_photos
from benchmark.keys import derive_seed

ALL = names("all") + names("attacks")


def _images(n=2, size=32):
    return synthetic_photos(n, size, seed=size + n)


def test_named_sets():
    assert len(names("all")) == 19
    assert set(names("unseen", "repmix")) == {"glass_blur", "motion_blur", "zoom_blur", "snow"}
    assert set(names("unseen", "imagenet_c")) == {"speckle_noise", "gaussian_blur", "spatter",
                                                  "saturate"}
    assert len(names("seen")) == 15 and not set(names("seen")) & set(names("unseen"))
    assert names("attacks") == ("attack_noise", "attack_blur", "attack_crop", "attack_jpeg",
                                "attack_combination")


@pytest.mark.parametrize("name", ALL)
def test_result_depends_on_the_image_seed_only(name):
    x = _images(3)
    seeds = [11, 12, 2**40 + 13]  # 63-bit seeds from derive_seed are accepted
    whole = corrupt(x, name, 2, seeds)
    split = np.concatenate([corrupt(x[:1], name, 2, seeds[:1]), corrupt(x[1:], name, 2, seeds[1:])])
    assert whole.dtype == np.uint8 and whole.shape == x.shape
    assert (whole == split).all()  # the batch split does not matter
    assert (corrupt(x[2:], name, 2, seeds[2:]) == whole[2:]).all()
    if name != "attack_combination":  # which may draw "no attack" for an image
        assert not (whole == x).all()


@pytest.mark.parametrize("name", ["gaussian_noise", "glass_blur", "frost", "impulse_noise"])
def test_reference_backend_depends_on_the_image_seed_only(name):
    x = _images(2)
    both = corrupt(x, name, 2, [11, 12], backend="reference")
    assert (both[1] == corrupt(x[1:], name, 2, [12], backend="reference")[0]).all()


@pytest.mark.parametrize("name", ["gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise",
                                  "glass_blur", "motion_blur", "snow", "frost", "fog",
                                  "elastic_transform", "spatter", *names("attacks")])
def test_random_corruptions_differ_with_the_seed(name):
    x = _images(1)
    outs = [corrupt(x, name, 3, [s]) for s in range(6)]
    assert any(not (outs[0] == o).all() for o in outs[1:])


def test_glass_blur_loop_is_the_reference_loop():
    from imagecorruptions.corruptions import _shuffle_pixels_njit_glass_blur as reference_loop

    x = _images(1, 40)[0]
    for delta, iterations in ((1, 2), (3, 1), (4, 1)):  # delta 3 rejects draws, 1 and 4 not
        want = reference_loop(40, 40, x.copy(), (0.7, delta, iterations), 77)
        assert (kernels.glass_shuffle_seeded(x.copy(), delta, iterations, 77) == want).all()


def test_plasma_fractal_draws_as_the_reference():
    from imagecorruptions.corruptions import plasma_fractal

    state = np.random.get_state()
    try:
        np.random.seed(5)
        want = plasma_fractal(mapsize=64, wibbledecay=1.7)
    finally:
        np.random.set_state(state)
    assert (ops.plasma_fractal(5, 64, 1.7) == want).all()
    assert not (ops.plasma_fractal(6, 64, 1.7) == want).all()


@pytest.mark.parametrize("severity", [1, 5])
def test_shot_noise_sampler_is_poisson(severity):
    c = [60, 25, 12, 5, 3][severity - 1]
    level = 200
    x = np.full((4, 64, 64, 3), level, np.uint8)
    counts = np.rint(engine.shot_noise(x, severity, [1, 2, 3, 4]) / 255 * c).astype(int).ravel()
    lam = level / 255 * c
    freq = np.bincount(counts, minlength=c + 1)[:c + 1] / counts.size
    want = poisson.pmf(np.arange(c + 1), lam)
    want[c] = poisson.sf(c - 1, lam)  # counts above c are clipped to c
    assert np.abs(freq - want).max() < 0.01
    assert abs(counts.mean() - (np.arange(c + 1) * want).sum()) < 0.02 * lam


def _reference_formula(name, level, severity, n):
    """n outputs of the reference's formula for a flat image of `level`, NumPy's draws."""
    rng = np.random.default_rng(level + 1000 * severity)
    u = np.full(n, level / 255.0)
    if name == "gaussian_noise":
        v = u + rng.normal(size=n, scale=[.08, .12, 0.18, 0.26, 0.38][severity - 1])
    elif name == "speckle_noise":
        v = u + u * rng.normal(size=n, scale=[.15, .2, 0.35, 0.45, 0.6][severity - 1])
    else:
        c = [60, 25, 12, 5, 3][severity - 1]
        v = rng.poisson(u * c) / float(c)
    return np.uint8(np.clip(v, 0, 1) * 255)


@pytest.mark.parametrize("name", ["gaussian_noise", "shot_noise", "speckle_noise"])
def test_noise_level_sampler_has_the_reference_distribution(name):
    """The engine draws the output grey level from tabulated distributions (engine._noise_cdf);
    their histogram must be the reference formula's, level by level, ends (clipping) included."""
    for severity in (1, 5):
        for level in (0, 3, 100, 254):
            x = np.full((2, 96, 96, 3), level, np.uint8)
            got = getattr(engine, name)(x, severity, [5, 6]).ravel()
            want = _reference_formula(name, level, severity, got.size)
            gap = np.abs(np.bincount(got, minlength=256) - np.bincount(want, minlength=256))
            # total variation distance: two samples of 55k over ~80 levels differ by ~0.02 by
            # chance; a one-level shift moves the mean by 1 (0.5 is 3 standard errors at
            # severity 1), a neighbouring severity the std by 20% or more
            assert gap.sum() / 2 / got.size < 0.04, (severity, level)
            chance = 3 * np.sqrt(2 / got.size) * want.std() + 0.05  # 3 standard errors
            assert abs(got.mean() - want.mean()) < chance, (severity, level)
            assert abs(got.std() - want.std()) <= 0.03 * want.std() + 0.05, (severity, level)


def test_torch_input_gives_the_numpy_result_as_a_tensor():
    x = _images(2)
    got = corrupt(torch.from_numpy(x), "fog", 3, [1, 2])
    assert isinstance(got, torch.Tensor) and got.dtype == torch.uint8
    assert (got.numpy() == corrupt(x, "fog", 3, [1, 2])).all()


def test_work_size_corrupts_a_224_px_round_trip():
    x = _images(2, 48)
    got = corrupt(x, "gaussian_blur", 2, [1, 2], work_size=224)
    want = resize_route(corrupt(resize_route(x, (224, 224)), "gaussian_blur", 2, [1, 2]), (48, 48))
    assert got.shape == x.shape and (got == want).all()
    assert not (got == corrupt(x, "gaussian_blur", 2, [1, 2])).all()
    # enlarging is bilinear, shrinking area-averaged
    up = cv2.resize(x[0], (224, 224), interpolation=cv2.INTER_LINEAR)
    down = cv2.resize(got[0], (40, 40), interpolation=cv2.INTER_AREA)
    assert (resize_route(x, (224, 224))[0] == up).all()
    assert (resize_route(got, (40, 40))[0] == down).all()


def test_attack_strengths_are_in_the_published_ranges():
    grey = np.full((1, 64, 64, 3), 128, np.uint8)
    variances = [float((corrupt(grey, "attack_noise", 1, [s]).astype(float) - 128).var())
                 for s in range(20)]
    assert 4.5 < min(variances) and max(variances) < 21 and max(variances) - min(variances) > 5
    x = _images(1, 64)
    blurred = {corrupt(x, "attack_blur", 1, [s]).tobytes() for s in range(30)}
    sizes = {cv2.GaussianBlur(x[0], (k, k), 0).tobytes() if k > 1 else x[0].tobytes()
             for k in (1, 3, 5, 7, 9)}
    assert blurred == sizes  # every kernel size of {1, 3, 5, 7, 9} occurs, nothing else
    def jpeg(q):
        buf = cv2.imencode(".jpg", x[0][..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])[1]
        return cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]

    qualities = set()
    for s in range(10):
        out = corrupt(x, "attack_jpeg", 1, [s])[0]
        qualities |= {q for q in range(10, 76) if (out == jpeg(q)).all()}
    assert len(qualities) >= 5 and min(qualities) >= 10 and max(qualities) <= 75
    cropped = corrupt(x, "attack_crop", 1, [3])
    assert cropped.shape == x.shape and not (cropped == x).all()


def test_attack_combination_applies_each_attack_half_the_time():
    x = _images(1, 32)
    outs = [corrupt(x, "attack_combination", 1, [s]) for s in range(64)]
    unchanged = sum((o == x).all() for o in outs)
    assert 0 < unchanged < 12  # none of the four with probability 1/16


@pytest.mark.parametrize("kwargs, message", [
    (dict(name="fisheye"), "unknown corruption"),
    (dict(severity=0), "severity must be 1..5"),
    (dict(severity=6), "severity must be 1..5"),
    (dict(severity=True), "severity must be 1..5"),
    (dict(backend="gpu"), "unknown backend"),
    (dict(seeds=[1, 2, 3]), "3 seeds for 1 images"),
    (dict(images=_images(1).astype(np.float32)), "expected dtype uint8"),
    (dict(images=_images(1)[..., :1]), r"expected shape \(N, H, W, 3\)"),
    (dict(images=np.zeros((1, 32, 32, 4), np.uint8)), r"expected shape \(N, H, W, 3\)"),
    (dict(images=_images(1)[0]), r"expected shape \(N, H, W, 3\)"),
    (dict(images=np.zeros((1, 31, 40, 3), np.uint8)), "at least 32 px, got 40x31"),
    (dict(work_size=16), "work_size must be at least 32"),
])
def test_bad_arguments(kwargs, message):
    args = dict(images=_images(1), name="fog", severity=1, seeds=[0])
    args.update(kwargs)
    work_size = args.pop("work_size", None)
    with pytest.raises(ValueError, match=message):
        corrupt(**args, **({"work_size": work_size} if work_size else {}))


def test_bad_subset():
    with pytest.raises(ValueError, match="unknown subset"):
        names("blurs")
    with pytest.raises(ValueError, match="unknown unseen set"):
        names("seen", "mine")


def test_policy_train_clean_val_seen_only_test_all():
    spec = CorruptionSpec()
    keys = [f"sngan-x-s{i:08d}" for i in range(400)]
    assert all(choose_corruption(k, "train", 0, spec).name == CLEAN for k in keys)
    val = {choose_corruption(k, "val", 0, spec).name for k in keys}
    test = {choose_corruption(k, "test", 0, spec).name for k in keys}
    assert val == set(names("seen")) and test == set(names("all"))
    severities = {choose_corruption(k, "test", 0, spec).severity for k in keys}
    assert severities == {1, 2, 3, 4, 5}


def test_policy_probability_and_determinism():
    keys = [f"k{i}" for i in range(1000)]
    half = CorruptionSpec(test_probability=0.5)
    clean = sum(choose_corruption(k, "test", 0, half).name == CLEAN for k in keys)
    assert 420 < clean < 580
    never = CorruptionSpec(test_probability=0.0)
    assert all(choose_corruption(k, "test", 0, never).name == CLEAN for k in keys)
    first = [choose_corruption(k, "test", 5, half) for k in keys]
    assert first == [choose_corruption(k, "test", 5, half) for k in keys]


@pytest.mark.parametrize("split", ["val", "test"])
def test_policy_each_image_draws_its_own_noise_seed(split):
    keys = [f"sngan-x-s{i:08d}" for i in range(50)]
    seeds = [choose_corruption(k, split, 5, CorruptionSpec()).seed for k in keys]
    assert len(set(seeds)) == len(keys)
    assert seeds[0] == derive_seed(5, "corruption-noise", keys[0])
    assert seeds != [choose_corruption(k, split, 6, CorruptionSpec()).seed for k in keys]


def test_spec_backend_and_route():
    assert CorruptionSpec().backend == "engine" and CorruptionSpec().apply_at == "stored"
    assert CorruptionSpec().work_size is None
    assert CorruptionSpec(apply_at="resized_224").work_size == 224
    with pytest.raises(ValueError):
        CorruptionSpec(backend="fast")
    with pytest.raises(ValueError):
        CorruptionSpec(apply_at="resized_256")


def test_reused_legacy_generator_draws_as_a_fresh_one():
    """engine._legacy re-seeds one RandomState per thread; a half-used pair of normals (the
    cached second one) or a consumed stream must not leak into the next image's draws."""
    engine._legacy(3).normal(size=5)  # leaves a cached normal behind
    want = np.random.RandomState(4)
    assert (engine._legacy(4).normal(size=7) == want.normal(size=7)).all()


@pytest.mark.parametrize("seed", [0, 5, 2**32 - 1])
def test_compiled_legacy_normals_are_numpys(seed):
    from benchmark.corruptions import legacy_random

    for shape in ((33, 31), (40, 64)):  # an odd count leaves half a pair; blocks refill mid-pair
        want = np.random.RandomState(seed)
        got = np.empty(shape)
        generator = legacy_random.normals(seed, got, 0.55, 0.3, (0, shape[0], 0, shape[1]))
        assert (got == want.normal(0.55, 0.3, shape)).all()
        # and the stream goes on where NumPy's does (snow draws its angle next)
        assert legacy_random.next_double(*generator)[0] == want.random_sample()
        # a window (odd edges: pairs straddle it) computes the same values inside, loc outside
        window = (3, 20, 5, 26)
        part = np.empty(shape)
        generator = legacy_random.normals(seed, part, 0.55, 0.3, window)
        inside = np.zeros(shape, bool)
        inside[3:20, 5:26] = True
        assert (part[inside] == got[inside]).all() and (part[~inside] == 0.55).all()
        assert legacy_random.next_double(*generator)[0] == legacy_random.next_double(
            *legacy_random.normals(seed, got, 0.55, 0.3, (0, 0, 0, 0)))[0]


def test_compiled_legacy_uniforms_are_numpys():
    from benchmark.corruptions import legacy_random

    for seed in (0, 2**32 - 1):
        want = np.random.RandomState(seed)  # elastic: two fields of uniforms, one after the other
        got = legacy_random.uniforms(seed, np.empty((2, 37, 41)), -1.5, 1.5)
        assert (got == np.stack([want.uniform(-1.5, 1.5, (37, 41)) for _ in range(2)])).all()


def test_box_resample_is_pillows():
    """pixelate's BOX step reproduces Pillow's fixed-point resampling byte for byte."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for h, w in ((64, 64), (40, 57), (218, 178)):
        img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        for scale in (0.6, 0.4, 0.25):
            sh, sw = int(h * scale), int(w * scale)
            want = np.asarray(Image.fromarray(img).resize((sw, sh), Image.BOX))
            got = kernels.box_resample(img, ops.pillow_box_taps(h, sh), ops.pillow_box_taps(w, sw),
                                       np.empty((sh, sw, 3), np.uint8))
            assert (got == want).all(), (h, w, scale)
