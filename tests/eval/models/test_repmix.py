"""RepMix: the compound loss, the gating, the mixing layer's place and identity, weights files."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from eval.models import ModelError, ModelOutput, build_model, loss, repmix
from eval.models.repmix import MixingLayer, compound_loss

SIZE = 32  # px; resnet18 keeps these tests fast on a CPU


def small(num_classes: int = 4, **options) -> repmix.RepMix:
    torch.manual_seed(0)
    return build_model("repmix", num_classes, options={"arch": "resnet18", **options})


def images(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def nll(logits: list[float], target: int) -> float:
    return -(logits[target] - math.log(sum(math.exp(v) for v in logits)))


def test_compound_loss_matches_hand_computation():
    # 3 examples, each a mix of 2 images, C = 4 classes (real + 3); detection weights [1, 1/3]
    gated = [[0.5, -1.0, 2.0, 0.0], [1.5, 0.2, -0.3, 0.7], [-0.4, 0.9, 0.1, 1.2]]
    detection = [[1.0, -1.0], [0.3, 0.8], [-2.0, 0.5]]
    labels = [[0, 2], [3, 3], [1, 0]]
    mix = [[0.25, 0.75], [0.6, 0.4], [0.9, 0.1]]
    det_weight = [1.0, 1.0 / 3.0]
    det = [sum(m * det_weight[int(y > 0)] * nll(d, int(y > 0)) for m, y in zip(mr, yr))
           for d, mr, yr in zip(detection, mix, labels)]
    attr = [sum(m * nll(g, y) for m, y in zip(mr, yr)) for g, mr, yr in zip(gated, mix, labels)]
    expected_det, expected_attr = sum(det) / 3, sum(attr) / 3

    output = ModelOutput(logits=torch.tensor(gated), embedding=torch.zeros(3, 256),
                         detection=torch.tensor(detection))
    parts = compound_loss(output, torch.tensor(labels), torch.tensor(mix), 4)
    assert parts.detection.item() == pytest.approx(expected_det, rel=1e-6)
    assert parts.attribution.item() == pytest.approx(expected_attr, rel=1e-6)
    total = loss("repmix", output, torch.tensor(labels), torch.tensor(mix), 4)
    assert total.item() == pytest.approx(expected_det + expected_attr, rel=1e-6)


def test_gated_logits_equal_the_formula_and_are_not_detached():
    model = small().eval()
    out = model(images(3, 3, SIZE, SIZE))
    raw = model.attribution(out.embedding)
    p = torch.softmax(out.detection, dim=1)
    expected = torch.cat([raw[:, :1] * p[:, :1], raw[:, 1:] * p[:, 1:]], dim=1)
    torch.testing.assert_close(out.logits, expected)
    # gradients of the gated logits reach the detection head through p
    out.logits.sum().backward()
    assert model.detection.weight.grad is not None and model.detection.weight.grad.abs().sum() > 0


def test_mixing_layer_mixes_with_the_given_weights_and_is_identity_without():
    x = images(6, 5, 2, 2)  # B*K = 3*2 feature maps
    mix = torch.tensor([[0.2, 0.8], [0.5, 0.5], [1.0, 0.0]])
    mixed = MixingLayer()(x, mix)
    expected = torch.stack([mix[b, 0] * x[2 * b] + mix[b, 1] * x[2 * b + 1] for b in range(3)])
    torch.testing.assert_close(mixed, expected)
    assert MixingLayer()(x, None) is x


def test_test_time_forward_has_no_mixing():
    model = small().eval()
    x = images(2, 3, SIZE, SIZE)
    out = model(x)
    # the plain torchvision pass (its fc is the embedding layer) with no mixing anywhere
    torch.testing.assert_close(out.embedding, model.backbone(x))
    # one image per example with weight 1 is the same thing
    torch.testing.assert_close(model(x[:, None], torch.ones(2, 1)).logits, out.logits)


def test_mixing_sits_on_layer4_output_before_pooling():
    model = small().eval()  # eval: batch norm uses running stats, so batch makeup does not matter
    seen = {}
    model.backbone.layer4.register_forward_hook(lambda m, i, o: seen.__setitem__("layer4", o))
    model.backbone.avgpool.register_forward_hook(lambda m, i, o: seen.__setitem__("pool_in", i[0]))
    x = images(2, 2, 3, SIZE, SIZE)
    mix = torch.tensor([[0.3, 0.7], [0.9, 0.1]])
    out = model(x, mix)
    layer4 = seen["layer4"].reshape(2, 2, *seen["layer4"].shape[1:])
    expected = mix[:, 0, None, None, None] * layer4[:, 0] + mix[:, 1, None, None, None] * layer4[:, 1]
    torch.testing.assert_close(seen["pool_in"], expected)
    # pooling and fc are affine, so this equals mixing the embeddings of the two images
    single = [model.backbone(x[:, k]) for k in range(2)]
    torch.testing.assert_close(out.embedding, mix[:, :1] * single[0] + mix[:, 1:] * single[1],
                               rtol=1e-4, atol=1e-5)


def test_mixup_level_zero_mixes_the_input_images():
    model = small(mixup_level=0).eval()
    x = images(2, 2, 3, SIZE, SIZE)
    mix = torch.tensor([[0.3, 0.7], [0.9, 0.1]])
    blended = mix[:, 0, None, None, None] * x[:, 0] + mix[:, 1, None, None, None] * x[:, 1]
    torch.testing.assert_close(model(x, mix).embedding, model.backbone(blended), rtol=1e-4, atol=1e-5)


def test_mix_weights_are_checked():
    model = small().eval()
    x = images(2, 2, 3, SIZE, SIZE)
    with pytest.raises(ModelError, match="sum to 1"):
        model(x, torch.tensor([[0.3, 0.3], [0.5, 0.5]]))
    with pytest.raises(ModelError, match="mix weights of shape"):
        model(x, None)


def test_training_on_one_batch_lowers_the_compound_loss():
    model = small(num_classes=3).train()
    x = images(3, 2, 3, SIZE, SIZE)
    labels = torch.tensor([[0, 1], [2, 2], [1, 0]])
    mix = torch.tensor([[0.6, 0.4], [0.5, 0.5], [0.8, 0.2]])
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3)
    losses = []
    for _ in range(4):
        value = loss("repmix", model(x, mix), labels, mix, 3)
        optimiser.zero_grad()
        value.backward()
        optimiser.step()
        losses.append(value.item())
    assert losses[-1] < 0.8 * losses[0], losses


def _torchvision_resnet18_state(path: Path) -> dict[str, torch.Tensor]:
    torch.manual_seed(7)
    state = torchvision.models.resnet18(weights=None).state_dict()
    if path.suffix == ".safetensors":
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        torch.save(state, path)
    return state


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_weights_load_a_local_backbone_state_dict_ignoring_fc(tmp_path, suffix):
    path = tmp_path / f"resnet18{suffix}"
    state = _torchvision_resnet18_state(path)
    model = build_model("repmix", 4, options={"arch": "resnet18"}, weights=path)
    loaded = model.backbone.state_dict()
    for key in ("conv1.weight", "bn1.running_mean", "layer4.1.conv2.weight"):
        torch.testing.assert_close(loaded[key], state[key])
    assert loaded["fc.weight"].shape == (256, 512)  # the embedding layer, not ImageNet's fc


def test_weights_with_wrong_keys_are_refused_naming_the_file(tmp_path):
    path = tmp_path / "not_a_resnet.pth"
    torch.save({"encoder.weight": torch.zeros(3)}, path)
    with pytest.raises(ModelError, match="not_a_resnet.pth"):
        build_model("repmix", 4, options={"arch": "resnet18"}, weights=path)
    other = tmp_path / "resnet18.pth"
    _torchvision_resnet18_state(other)
    with pytest.raises(ModelError, match="resnet18.pth"):  # a resnet18 file for a resnet50
        build_model("repmix", 4, weights=other)
    with pytest.raises(ModelError, match="missing.pth"):
        build_model("repmix", 4, options={"arch": "resnet18"}, weights=tmp_path / "missing.pth")


RAN = []


def _record():
    RAN.append(True)
    return torch.zeros(1)


class Payload:
    def __reduce__(self):
        return (_record, ())


def test_a_pickle_that_would_run_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"conv1.weight": Payload()}, path)
    with pytest.raises(ModelError, match="evil.pth"):
        build_model("repmix", 4, options={"arch": "resnet18"}, weights=path)
    assert not RAN


def test_no_unsafe_loading_in_the_models_package():
    root = Path(repmix.__file__).parent
    for source in root.glob("*.py"):
        text = source.read_text()
        assert "weights_only=False" not in text, source
        assert text.count("torch.load(") == text.count("weights_only=True)"), source


def test_default_backbone_is_resnet50_with_a_256d_embedding():
    model = build_model("repmix", 8)
    assert type(model.backbone).__name__ == "ResNet" and len(model.backbone.layer3) == 6  # resnet50
    assert model.backbone.fc.weight.shape == (256, 2048)
    assert model.detection.weight.shape == (2, 256) and model.attribution.weight.shape == (8, 256)
    assert model.mixup_level == 5 and not any(p.numel() for p in model.mixing.parameters())
