"""What MMD GAN and Cramér GAN share: the DCGAN generator trains, and the global RNG stays untouched."""

import numpy as np
import pytest
import torch

from generators import cramergan, mmdgan
from generators.base import isolated_rng
from generators.training import fit, resolve_config
from tests.generators.tiny import TINY_OPTIONS, random_photos


@pytest.mark.parametrize("family", [mmdgan, cramergan], ids=lambda f: f.NAME)
def test_training_changes_weights_and_leaves_global_rng_alone(family):
    options = family.parse_options(TINY_OPTIONS[family.NAME])
    with isolated_rng(1):
        before = family.build_generator(32, options).state_dict()
    rng_state = torch.get_rng_state()
    seen = []
    result = fit(family, random_photos(), resolve_config(family, steps=3, batch_size=8, seed=1, n_dis=2),
                 options, on_step=lambda stats, gen: seen.append(stats))
    assert torch.equal(torch.get_rng_state(), rng_state)
    assert [s.step for s in seen] == [1, 2, 3]
    assert all(np.isfinite([s.d_loss, s.g_loss]).all() for s in seen)
    after = result.generator.state_dict()
    changed = {k for k in before if before[k].is_floating_point() and not torch.equal(before[k], after[k])}
    assert {"linear.weight", "to_rgb.weight", "bn.running_mean"} <= changed
