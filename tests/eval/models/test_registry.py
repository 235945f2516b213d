"""The models registry: names, options, weights, losses and training defaults."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from eval.models import (MODELS, ModelError, ModelOutput, build_model, input_kind, loss, mixes,
                         resolved_options, train_defaults)

REQUIRED = {"lr", "betas", "weight_decay", "step_gamma", "max_epochs", "early_stop", "patience",
            "validate_every", "batch_size", "eps", "optimizer"}


def test_unknown_names_and_options_are_refused_clearly():
    with pytest.raises(ModelError, match=r"unknown model 'vit'.*repmix.*yu.*dct.*khoo"):
        build_model("vit", 3)
    with pytest.raises(ModelError, match=r"unknown repmix options \['depth'\]"):
        build_model("repmix", 3, options={"depth": 3})
    with pytest.raises(ModelError, match=r"arch='vgg16' must be one of \['resnet50', 'resnet18'\]"):
        build_model("repmix", 3, options={"arch": "vgg16"})
    with pytest.raises(ModelError, match=r"mixup_level=7 must be an integer in \[0, 6\]"):
        build_model("repmix", 3, options={"arch": "resnet18", "mixup_level": 7})
    with pytest.raises(ModelError, match=r"fmap_max=2.5"):
        build_model("yu", 3, options={"fmap_max": 2.5})
    with pytest.raises(ModelError, match="only for repmix"):
        build_model("dct", 3, weights="resnet50.pth")
    with pytest.raises(ModelError, match="at least 2 classes"):
        build_model("yu", 1)


def test_kinds_mixes_and_resolved_options():
    assert MODELS == ("repmix", "yu", "dct", "khoo")
    assert [input_kind(m) for m in MODELS] == ["resized", "stored", "stored", "resized"]
    assert [mixes(m) for m in MODELS] == [2, 1, 1, 1]
    assert resolved_options("repmix") == {"arch": "resnet50", "embed_dim": 256, "mixup_level": 5}
    assert resolved_options("yu", {"resolution": 64}) == {"resolution": 64, "fmap_base": 1024, "fmap_max": 512}
    assert resolved_options("dct") == {"resolution": 128}


def test_train_defaults_are_the_papers():
    for name in MODELS:
        assert REQUIRED <= set(train_defaults(name)), name
    repmix = train_defaults("repmix")
    assert (repmix["lr"], repmix["betas"], repmix["weight_decay"], repmix["step_gamma"], repmix["max_epochs"]) \
        == (1e-4, (0.9, 0.999), 5e-4, 0.85, 30)
    assert (repmix["early_stop"], repmix["early_stop_released"], repmix["patience"], repmix["validate_every"]) \
        == ("val_acc", "val_loss", 3, 2)
    yu = train_defaults("yu")
    assert (yu["lr"], yu["betas"], yu["step_gamma"]) == (1e-3, (0.0, 0.99), None)
    dct = train_defaults("dct")
    assert (dct["lr"], dct["early_stop"], dct["patience"], dct["max_epochs"]) == (1e-3, "val_loss", 5, 50)
    train_defaults("dct")["lr"] = 1.0  # a copy: the module's defaults stay
    assert train_defaults("dct")["lr"] == 1e-3


@pytest.mark.parametrize("name", ["yu", "dct"])
def test_non_mixing_models_use_cross_entropy_and_refuse_mixes(name):
    logits = torch.tensor([[0.2, 1.0, -0.5], [1.5, 0.0, 0.3]])
    output = ModelOutput(logits=logits, embedding=torch.zeros(2, 4))
    labels = torch.tensor([[1], [0]])
    torch.testing.assert_close(loss(name, output, labels, torch.ones(2, 1), 3),
                               F.cross_entropy(logits, labels[:, 0]))
    with pytest.raises(ModelError, match="does not mix"):
        loss(name, output, torch.tensor([[1, 2], [0, 0]]), torch.full((2, 2), 0.5), 3)
    with pytest.raises(ModelError, match="does not mix"):
        loss(name, output, labels, torch.full((2, 1), 0.5), 3)
