"""The online corruption policy: a function of (seed, key, epoch), the released code's odds."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from benchmark.corruption_policy import CLEAN, CorruptionChoice
from benchmark.corruptions import corrupt, names
from benchmark.corruptions.fidelity import synthetic_photos
from benchmark.online_corruption import choose_online, corrupt_image

SEEN = names("seen", "repmix")
KEYS = [f"sngan-faces-s{i:08d}" for i in range(4000)]
IMAGE = synthetic_photos(1, 40, seed=3)[0]


def _draws(epoch=0, seed=7, **kw):
    kw.setdefault("corruptions", SEEN)
    return [choose_online(k, epoch, seed, **kw) for k in KEYS]


def test_same_key_epoch_and_seed_give_the_same_choice():
    first = choose_online("sngan-faces-s00000001", 3, 7, corruptions=SEEN)
    assert first == choose_online("sngan-faces-s00000001", 3, 7, corruptions=list(SEEN))
    assert isinstance(first, CorruptionChoice)


@pytest.mark.parametrize("change", ["epoch", "seed", "key"])
def test_another_epoch_seed_or_key_draws_again(change):
    base = [(k, 0, 7) for k in KEYS[:200]]
    other = {"epoch": [(k, 1, 7) for k in KEYS[:200]], "seed": [(k, 0, 8) for k in KEYS[:200]],
             "key": [(k, 0, 7) for k in KEYS[200:400]]}[change]
    a = [choose_online(*args, corruptions=SEEN) for args in base]
    b = [choose_online(*args, corruptions=SEEN) for args in other]
    same = sum((x.name, x.severity) == (y.name, y.severity) for x, y in zip(a, b))
    assert same < 30  # independent draws agree ~ 0.05^2 + 0.95^2 / 75 of the time
    noisy = [(x.seed, y.seed) for x, y in zip(a, b) if CLEAN not in (x.name, y.name)]
    assert all(s != t for s, t in noisy)


def test_the_epoch_is_not_the_offline_draw():
    """A val key's stored corruption and its online draw come from different purposes."""
    from benchmark.config import CorruptionSpec
    from benchmark.corruption_policy import choose_corruption

    spec = CorruptionSpec(val_probability=0.95)
    offline = [choose_corruption(k, "val", 7, spec) for k in KEYS[:200]]
    online = [choose_online(k, 0, 7, corruptions=SEEN) for k in KEYS[:200]]
    assert sum(a == b for a, b in zip(offline, online)) < 30


def test_probability_is_respected():
    clean = sum(c.name == CLEAN for c in _draws()) / len(KEYS)
    assert clean == pytest.approx(0.05, abs=0.015)
    half = sum(c.name == CLEAN for c in _draws(probability=0.5)) / len(KEYS)
    assert half == pytest.approx(0.5, abs=0.03)
    assert all(c == CorruptionChoice(CLEAN, 0, 0) for c in _draws(probability=0.0)[:500])
    assert all(c.name != CLEAN for c in _draws(probability=1.0)[:500])


def test_only_the_given_names_are_drawn_each_about_equally():
    counts = Counter(c.name for c in _draws(probability=1.0, corruptions=["fog", "snow", "frost"]))
    assert set(counts) == {"fog", "snow", "frost"}
    assert all(n / len(KEYS) == pytest.approx(1 / 3, abs=0.03) for n in counts.values())
    seen = {c.name for c in _draws()} - {CLEAN}
    assert seen == set(SEEN)  # the released set: none of the 4 held-out ones


def test_severity_is_uniform_over_the_given_set():
    counts = Counter(c.severity for c in _draws(probability=1.0, severities=(2, 4, 5)))
    assert set(counts) == {2, 4, 5}
    assert all(n / len(KEYS) == pytest.approx(1 / 3, abs=0.03) for n in counts.values())
    default = Counter(c.severity for c in _draws(probability=1.0))
    assert set(default) == {1, 2, 3, 4, 5}
    assert all(n / len(KEYS) == pytest.approx(0.2, abs=0.025) for n in default.values())


@pytest.mark.parametrize("kw, message", [
    (dict(corruptions=[]), "corruptions: empty"),
    (dict(corruptions=["fog", "rain"]), r"corruptions: unknown \['rain'\]"),
    (dict(severities=(0, 1)), "severities must be values in 1..5"),
    (dict(severities=()), "severities must be values in 1..5"),
    (dict(probability=1.5), r"probability must be in \[0, 1\]"),
    (dict(epoch=-1), "epoch must be an integer >= 0"),
])
def test_bad_arguments_are_named(kw, message):
    args = {"corruptions": SEEN, "epoch": 0, **kw}
    epoch = args.pop("epoch")
    with pytest.raises(ValueError, match=message):
        choose_online("sngan-faces-s00000001", epoch, 7, **args)


@pytest.mark.parametrize("apply_at, work_size", [("stored", None), ("resized_224", 224)])
def test_corrupt_image_takes_the_builds_route(apply_at, work_size):
    choice = CorruptionChoice("gaussian_noise", 4, 123)
    got = corrupt_image(IMAGE, choice, apply_at=apply_at)
    want = corrupt(IMAGE[None], "gaussian_noise", 4, [123], work_size=work_size)[0]
    assert got.shape == IMAGE.shape and got.dtype == np.uint8
    assert (got == want).all() and (got != IMAGE).any()


def test_routes_and_backends_differ():
    choice = CorruptionChoice("fog", 5, 1)
    stored = corrupt_image(IMAGE, choice, apply_at="stored")
    assert (stored != corrupt_image(IMAGE, choice, apply_at="resized_224")).any()
    # noise: the engine matches the reference in distribution only, so the pixels tell apart
    noise = CorruptionChoice("gaussian_noise", 3, 1)
    reference = corrupt_image(IMAGE, noise, apply_at="stored", backend="reference")
    want = corrupt(IMAGE[None], "gaussian_noise", 3, [1], backend="reference")[0]
    assert (reference == want).all()
    assert (reference != corrupt_image(IMAGE, noise, apply_at="stored")).any()


def test_a_clean_choice_leaves_the_image():
    assert corrupt_image(IMAGE, CorruptionChoice(CLEAN, 0, 0), apply_at="resized_224") is IMAGE


@pytest.mark.parametrize("image, apply_at, message", [
    (IMAGE, "gpu", "apply_at must be one of"),
    (IMAGE[..., 0], "stored", r"image: expected uint8 \(H, W, 3\)"),
    (IMAGE.astype(np.float32), "stored", r"image: expected uint8 \(H, W, 3\)"),
])
def test_bad_image_or_route(image, apply_at, message):
    with pytest.raises(ValueError, match=message):
        corrupt_image(image, CorruptionChoice("fog", 1, 1), apply_at=apply_at)
