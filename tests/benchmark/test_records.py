import pytest

from benchmark.records import CANDIDATE, ImageBatch


def _batch(source: str, latent_seeds: tuple[int, ...]) -> ImageBatch:
    return ImageBatch(chunk_id="c", source=source, semantic="faces", role=CANDIDATE,
                      keys=("k0", "k1"), pngs=(b"a", b"b"), ranks=(0, 1), origins=("", ""),
                      generator=source, checkpoint_sha256="", latent_seeds=latent_seeds)


def test_sampled_batch_carries_one_latent_seed_per_image():
    assert _batch("sngan", (11, 12)).latent_seeds == (11, 12)
    assert _batch("real", ()).latent_seeds == ()
    with pytest.raises(ValueError, match="2 sampled images but 1 latent seeds"):
        _batch("sngan", (11,))
