"""Khoo et al.'s decentralised model: options, the branch point, the frozen primary in stage 2,
one-vs-all targets, the losses and the prediction rule."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from eval import attack, train
from eval.models import (MODELS, ModelError, ModelOutput, build_model, input_kind, khoo, loss, mixes,
                         read_submission, resolved_options, train_defaults, two_stage)

SIZE = 16  # px; resnet18 at 16 px keeps these tests fast on a CPU
CPU = train.Runtime(torch.device("cpu"), None, False)


def small(num_classes: int = 4, **options) -> khoo.Khoo:
    torch.manual_seed(0)
    return build_model("khoo", num_classes, options={"arch": "resnet18", **options})


def images(n: int, seed: int = 1) -> torch.Tensor:
    return torch.rand(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_registry_options_and_their_errors():
    assert "khoo" in MODELS and two_stage("khoo") and not two_stage("repmix")
    assert (input_kind("khoo"), mixes("khoo")) == ("resized", 1)
    assert resolved_options("khoo") == {"arch": "resnet50", "branch_after": "layer3",
                                        "branch_init": "fresh", "secondary_lr": 1e-4}
    assert resolved_options("khoo", {"secondary_lr": 1})["secondary_lr"] == 1.0
    defaults = train_defaults("khoo")
    assert (defaults["lr"], defaults["eps"], defaults["early_stop"], defaults["patience"]) == (1e-3, 1e-7, "val_loss", 5)
    with pytest.raises(ModelError, match=r"unknown khoo options \['branch'\]"):
        build_model("khoo", 3, options={"branch": "layer2"})
    with pytest.raises(ModelError, match=r"branch_after='layer5' must be one of \['layer1', 'layer2', 'layer3', 'layer4'\]"):
        build_model("khoo", 3, options={"branch_after": "layer5"})
    with pytest.raises(ModelError, match=r"branch_init='copy' must be one of"):
        build_model("khoo", 3, options={"branch_init": "copy"})
    for bad in (0, -1e-3, "1e-4", True, 11.0):
        with pytest.raises(ModelError, match=r"secondary_lr=.* must be a number in \(0.0, 10.0\]"):
            build_model("khoo", 3, options={"secondary_lr": bad})
    with pytest.raises(ModelError, match="at least 2 classes"):
        build_model("khoo", 1, options={"arch": "resnet18"})
    with pytest.raises(ModelError, match="does not mix"):
        small()(images(2)[:, None])


def _ids(module: torch.nn.Module) -> set[int]:
    return {id(p) for p in module.parameters()}


@pytest.mark.parametrize("branch_after, copied", [("layer1", ("layer2", "layer3", "layer4")),
                                                  ("layer3", ("layer4",)), ("layer4", ())])
def test_branches_share_the_trunk_up_to_the_layer_and_copy_the_rest(branch_after, copied):
    model = small(4, branch_after=branch_after)
    import torchvision
    reference = torchvision.models.resnet18()
    # the trunk is stem .. branch_after, the primary's rest the later stages, each stage whole
    trunk_params = sum(p.numel() for p in model.primary.trunk.parameters())
    rest_params = sum(p.numel() for p in model.primary.head.body.parameters())
    assert rest_params == sum(p.numel() for s in copied for p in getattr(reference, s).parameters())
    assert trunk_params + rest_params == sum(p.numel() for n, p in reference.named_parameters()
                                             if not n.startswith("fc."))
    assert len(model.branches) == 3
    primary = _ids(model.primary)
    seen: set[int] = set()
    for branch in model.branches:
        # same layers as the primary's rest (names and shapes), its own parameters
        assert [(n, p.shape) for n, p in branch.body.named_parameters()] \
            == [(n, p.shape) for n, p in model.primary.head.body.named_parameters()]
        assert not _ids(branch) & primary and not _ids(branch) & seen
        seen |= _ids(branch)
    # every parameter is the shared trunk's, the primary's own or one branch's: nothing else
    head = 512 + 1
    assert sum(p.numel() for p in model.parameters()) == trunk_params + 4 * (rest_params + head)
    # each branch reads the trunk's output: the model runs the trunk once for all of them
    model.eval()
    x = images(3)
    calls = []
    hook = model.primary.trunk.register_forward_hook(lambda *_: calls.append(1))
    out = model(x)
    hook.remove()
    assert len(calls) == 1
    with torch.no_grad():
        shared = model.primary.trunk(x)
        expected = torch.cat([b(shared) for b in model.branches], dim=1)
        torch.testing.assert_close(out.logits, torch.cat([torch.zeros(3, 1), expected], dim=1))
        torch.testing.assert_close(out.detection[:, 1:], model.primary.head(shared))
        assert torch.equal(out.detection[:, 0], torch.zeros(3))
        torch.testing.assert_close(out.embedding, model.primary.head.pooled(shared))


def test_branch_init_fresh_differs_from_the_primary_and_primary_copies_its_weights():
    fresh = small(3)
    for branch in fresh.branches:
        assert not torch.equal(branch.body[0][0].conv1.weight, fresh.primary.head.body[0][0].conv1.weight)
    copied = small(3, branch_init="primary")
    with torch.no_grad():
        copied.primary.head.body[0][0].conv1.weight.add_(1.0)  # "trained" primary
    copied.branches_from_primary()
    for branch in copied.branches:
        assert torch.equal(branch.body[0][0].conv1.weight, copied.primary.head.body[0][0].conv1.weight)
        assert branch.body[0][0].conv1.weight is not copied.primary.head.body[0][0].conv1.weight


def test_stage_2_leaves_the_primary_and_its_batchnorm_statistics_alone():
    model = small(3)
    model.freeze_primary()
    before = {k: v.clone() for k, v in model.primary.state_dict().items()}
    branches = {k: v.clone() for k, v in model.branches.state_dict().items()}
    gen = torch.Generator().manual_seed(3)
    labels = torch.tensor([0, 1, 2, 1, 0, 2])

    parts = train.TrainParts(
        model=model, loss=lambda out, y, m: loss("khoo", out, y, m, 3),
        train_batches=lambda epoch: ({"image": torch.rand(6, 1, 3, SIZE, SIZE, generator=gen) * 2 - 1,
                                      "label": labels[:, None], "mix": torch.ones(6, 1)} for _ in range(1)),
        val_batches=lambda: iter(()), train_count=6, mixing=False)
    cfg = train.load_train_config("khoo", None, ["optim.weight_decay=0.01", "runtime.progress=false"])
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, weight_decay=0.01)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    train.train_one_epoch(model, parts, optimizer, scaler, CPU, cfg, 1)
    assert model.training and not model.primary.training
    assert not any(m.training for m in model.primary.modules())
    for k, v in model.primary.state_dict().items():  # weights, running means/vars, batch counts
        assert torch.equal(v, before[k]), k
    assert all(p.grad is None for p in model.primary.parameters())
    changed = [k for k, v in model.branches.state_dict().items() if not torch.equal(v, branches[k])]
    assert any(k.endswith("fc.weight") for k in changed)
    assert any("running_mean" in k for k in changed)  # the branches' own BatchNorm does learn
    # without freezing, the same step moves the primary (the test can fail)
    unfrozen = small(3)
    start = {k: v.clone() for k, v in unfrozen.primary.state_dict().items()}
    parts.model = unfrozen
    train.train_one_epoch(unfrozen, parts, torch.optim.Adam(unfrozen.parameters(), lr=1e-2), scaler, CPU, cfg, 1)
    assert any(not torch.equal(v, start[k]) for k, v in unfrozen.primary.state_dict().items())


def test_one_vs_all_targets_and_the_stage_2_loss():
    assert torch.equal(khoo.one_vs_all(torch.tensor([0, 1, 3, 2]), 4),
                       torch.tensor([[0, 0, 0], [1, 0, 0], [0, 0, 1], [0, 1, 0]], dtype=torch.float))
    sources = torch.tensor([[0.5, -1.0, 2.0], [1.5, 0.2, -0.3]])
    output = ModelOutput(logits=torch.cat([torch.zeros(2, 1), sources], 1), embedding=torch.zeros(2, 8),
                         detection=torch.tensor([[0.0, 0.7], [0.0, -0.2]]))
    labels = torch.tensor([[3], [0]])
    # sum over the three branches of the mean over the batch of -log p(target)
    expected = 0.0
    for j in range(3):
        for b, y in enumerate((3, 0)):
            p = torch.sigmoid(sources[b, j]).item()
            expected -= (torch.log(torch.tensor(p)) if y == j + 1 else torch.log(torch.tensor(1 - p))).item() / 2
    assert loss("khoo", output, labels, torch.ones(2, 1), 4).item() == pytest.approx(expected, rel=1e-6)
    # stage 1: BCE of the primary's logit against is-fake
    primary = khoo.primary_loss(ModelOutput(logits=output.detection, embedding=output.embedding,
                                            detection=output.detection), torch.tensor([[1], [0]]), torch.ones(2, 1))
    assert primary.item() == pytest.approx(F.binary_cross_entropy(
        torch.sigmoid(torch.tensor([0.7, -0.2])), torch.tensor([1.0, 0.0])).item(), rel=1e-6)
    with pytest.raises(ModelError, match="does not mix"):
        loss("khoo", output, torch.tensor([[1, 2], [0, 0]]), torch.full((2, 2), 0.5), 4)


def test_prediction_rule_on_hand_made_sigmoids():
    probs = torch.tensor([[0.2, 0.9, 0.7],   # the highest above 0.5
                          [0.4, 0.1, 0.49],  # none reaches 0.5: real
                          [0.8, 0.3, 0.8],   # a tie: the first
                          [0.5, 0.2, 0.1],   # exactly 0.5 claims (released: >= THRESHOLD)
                          [0.6, 0.95, 0.95]])
    assert khoo.decide(probs).tolist() == [2, 0, 1, 1, 2]


def test_submission_scores_are_sigmoids_and_the_rule():
    sources = torch.tensor([[-2.0, 1.0, 3.0], [-1.0, -0.5, -3.0]])
    output = ModelOutput(logits=torch.cat([torch.zeros(2, 1), sources], 1), embedding=torch.zeros(2, 4),
                         detection=torch.tensor([[0.0, 2.0], [0.0, -1.0]]))
    model = small(4)
    scores, fake, pred = read_submission(model, output)
    torch.testing.assert_close(fake, torch.sigmoid(torch.tensor([2.0, -1.0])))
    torch.testing.assert_close(scores[:, 1:], torch.sigmoid(sources))
    torch.testing.assert_close(scores[:, 0], 1 - fake)
    assert pred.tolist() == [3, 0]
    # argmax of the logits (what training accuracy and eval.attack read) is the same decision
    assert output.logits.argmax(1).tolist() == [3, 0]


def test_attack_runs_on_khoo_with_cross_entropy_on_its_logits():
    model = small(3).eval()
    x01 = (images(2) + 1) / 2
    labels = torch.tensor([0, 2])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    adv = attack.ifgsm(model, x01, labels, eps=8 / 255, step=2 / 255, iterations=2)
    assert (adv - x01).abs().max() <= 8 / 255 + 1e-6 and (adv - x01).abs().max() > 0
    with torch.no_grad():
        ce = lambda x: F.cross_entropy(model(x * 2 - 1).logits, labels).item()  # noqa: E731
        assert ce(adv) > ce(x01)
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k


def test_local_imagenet_weights_go_into_the_primary_only(tmp_path):
    import torchvision
    from safetensors.torch import save_file
    torch.manual_seed(5)
    state = torchvision.models.resnet18().state_dict()
    path = tmp_path / "resnet18.safetensors"
    save_file(state, str(path))
    model = build_model("khoo", 3, options={"arch": "resnet18"}, weights=path)
    assert torch.equal(model.primary.trunk[0].weight, state["conv1.weight"])
    assert torch.equal(model.primary.head.body[0][0].conv1.weight, state["layer4.0.conv1.weight"])
    # fresh branches, as released: only the primary's layers are loaded
    assert not torch.equal(model.branches[0].body[0][0].conv1.weight, state["layer4.0.conv1.weight"])
    with pytest.raises(ModelError, match=f"weights file {path}"):
        build_model("khoo", 3, options={"arch": "resnet50"}, weights=path)
