"""DCT-CNN: the input transform against scipy, the fitted statistics, Frank et al.'s small CNN."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.fft
import torch
import torch.nn.functional as F

from eval.models import ModelError, build_model, fit_input_statistics, loss
from eval.models.dct import dct_matrix

R = 16


def batch(n: int, seed: int) -> torch.Tensor:
    return torch.rand(n, 3, R, R, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def scipy_log_spectrum(images: torch.Tensor) -> np.ndarray:
    pixels = (images.double().numpy() + 1.0) * 127.5  # their DCT sees [0, 255] pixels
    return np.log(np.abs(scipy.fft.dctn(pixels, type=2, norm="ortho", axes=(-2, -1))) + 1e-12)


def test_dct_matrix_is_scipys_orthonormal_dct():
    x = np.random.default_rng(0).normal(size=(R, 5))
    np.testing.assert_allclose(dct_matrix(R).double().numpy() @ x,
                               scipy.fft.dct(x, type=2, norm="ortho", axis=0), atol=1e-5)


def test_input_transform_matches_scipy_and_the_fitted_statistics():
    model = build_model("dct", 3, options={"resolution": R})
    train = [batch(4, 1), batch(3, 2)]
    assert fit_input_statistics(model, train) == 7
    logs = scipy_log_spectrum(torch.cat(train))
    mean, std = logs.mean(axis=0), logs.std(axis=0)  # population std, as their welford
    np.testing.assert_allclose(model.spectrum.mean.numpy(), mean, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(model.spectrum.std.numpy(), std, rtol=1e-4, atol=1e-4)
    x = batch(2, 3)
    expected = (scipy_log_spectrum(x) - mean) / std
    np.testing.assert_allclose(model.spectrum(x).numpy(), expected, rtol=1e-3, atol=1e-3)


def test_statistics_are_buffers_saved_with_the_weights():
    model = build_model("dct", 3, options={"resolution": R})
    fit_input_statistics(model, [batch(5, 1)])
    state = model.state_dict()
    assert {"spectrum.mean", "spectrum.std", "spectrum.fitted"} <= set(state)
    assert "spectrum.basis" not in state  # derived from the resolution, not saved
    fresh = build_model("dct", 3, options={"resolution": R})
    fresh.load_state_dict(state)
    x = batch(2, 4)
    torch.testing.assert_close(fresh(x).logits, model(x).logits)


def test_forward_refuses_unfitted_statistics():
    model = build_model("dct", 3, options={"resolution": R})
    with pytest.raises(ModelError, match="fit_input_statistics"):
        model(batch(1, 1))


def test_transform_is_differentiable_to_the_pixels():
    model = build_model("dct", 3, options={"resolution": R})
    fit_input_statistics(model, [batch(4, 1)])
    x = batch(2, 5).requires_grad_(True)
    model(x).logits[:, 1].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_small_cnn_layout_is_theirs():
    model = build_model("dct", 5)  # 128 px
    assert [c.out_channels for c in (model.conv1, model.conv2, model.conv3, model.conv4)] == [3, 8, 16, 32]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1)
               for c in (model.conv1, model.conv2, model.conv3, model.conv4))
    assert model.classify.in_features == 32 * 32 * 32  # two 2x2 poolings: 128 -> 32
    assert model.conv1.bias.abs().sum() == 0  # Keras zero bias
    small = build_model("dct", 3, options={"resolution": R})
    fit_input_statistics(small, [batch(4, 1)])
    x = batch(2, 2)
    h = torch.relu(small.conv1(small.spectrum(x)))
    h = F.avg_pool2d(torch.relu(small.conv2(h)), 2)
    h = F.avg_pool2d(torch.relu(small.conv3(h)), 2)
    h = torch.relu(small.conv4(h)).flatten(1)
    out = small(x)
    torch.testing.assert_close(out.embedding, h)
    torch.testing.assert_close(out.logits, small.classify(h))
    with pytest.raises(ModelError, match="divisible by 4"):
        build_model("dct", 5, options={"resolution": 30})


def test_training_on_one_batch_lowers_the_loss():
    torch.manual_seed(0)
    model = build_model("dct", 3, options={"resolution": R})
    x = batch(6, 1)
    fit_input_statistics(model, [x])
    labels = torch.tensor([[0], [1], [2], [0], [1], [2]])
    mix = torch.ones(6, 1)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(15):
        value = loss("dct", model(x), labels, mix, 3)
        optimiser.zero_grad()
        value.backward()
        optimiser.step()
        losses.append(value.item())
    assert losses[-1] < 0.8 * losses[0], losses


def test_transform_stays_float32_under_autocast():
    model = build_model("dct", 3, options={"resolution": R})
    fit_input_statistics(model, [batch(4, 1)])
    x = batch(2, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        under_amp = model.spectrum(x)
    assert under_amp.dtype == torch.float32
    torch.testing.assert_close(under_amp, model.spectrum(x))
