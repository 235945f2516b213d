from benchmark.keys import derive_seed, latent_seed, synthetic_key


def test_latent_seeds_differ_between_cells_and_follow_the_config_seed():
    a = [latent_seed(0, "sngan", "celeba", "sngan", i) for i in range(100)]
    assert len(set(a)) == 100
    assert set(a).isdisjoint(latent_seed(0, "sngan", "bedroom", "sngan", i) for i in range(100))
    assert set(a).isdisjoint(latent_seed(0, "progan", "celeba", "progan", i) for i in range(100))
    assert set(a).isdisjoint(latent_seed(1, "sngan", "celeba", "sngan", i) for i in range(100))
    assert a != list(range(100))
    assert all(0 <= s < 2**63 for s in a)  # generators.base.check_seeds accepts them
    # Pinned: a change here changes every sampled image, so it must bump PROTOCOL_VERSION.
    assert latent_seed(0, "sngan", "celeba", "sngan", 4213) == derive_seed(0, "latent", "sngan-celeba-4213")


def test_a_folder_source_keeps_its_file_indices():
    assert [latent_seed(5, "blackbox", "celeba", "folder", i) for i in range(4)] == [0, 1, 2, 3]


def test_the_key_carries_the_sample_index_not_the_seed():
    assert synthetic_key("sngan", "celeba", 4213) == "sngan-celeba-s00004213"
