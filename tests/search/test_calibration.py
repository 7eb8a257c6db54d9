"""Calibration leaves the model exactly as it found it; adaptive BatchNorm."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from prunepilot import search as ps


def _hook_count(model: nn.Module) -> int:
    n = 0
    for m in model.modules():
        n += len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
    for p in model.parameters():
        n += len(p._backward_hooks or {})
    return n


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_context_manager_leaves_no_hooks_and_the_same_model(resnet, images) -> None:
    model, x, graph = resnet
    before_out = model(x).detach()
    before_state = _state(model)
    assert _hook_count(model) == 0
    cal = ps.Calibration(model, graph, ps.available_criteria(data_driven=True))
    with cal:
        assert _hook_count(model) > 0
        inside = model(x)  # gates are active (gradients enabled) and multiply by one
        F.cross_entropy(inside, torch.zeros(2, dtype=torch.long)).backward()
        model.train()  # the user may switch modes; BN statistics then move
        for xb, yb in images:
            F.cross_entropy(model(xb), yb).backward()
        cal.measure_sensitivity(images, F.cross_entropy, max_batches=1)
    assert _hook_count(model) == 0
    assert not model.training
    after_state = _state(model)
    for k, v in before_state.items():
        assert torch.equal(v, after_state[k]), k
    assert all(p.grad is None for p in model.parameters())
    assert torch.equal(model(x), before_out)
    assert torch.equal(inside.detach(), before_out)
    assert cal.forward_passes == len(images) + 1


def test_hooks_are_removed_when_the_block_raises(resnet) -> None:
    model, x, graph = resnet
    with pytest.raises(RuntimeError, match="boom"), ps.Calibration(model, graph):
        model(x)
        raise RuntimeError("boom")
    assert _hook_count(model) == 0


def test_existing_gradients_are_restored(resnet, images) -> None:
    model, _, graph = resnet
    xb, yb = images[0]
    F.cross_entropy(model(xb), yb).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    ps.calibrate(model, images, F.cross_entropy, steps=2, graph=graph)
    for n, p in model.named_parameters():
        assert torch.equal(p.grad, grads[n]), n


def test_one_call_calibrate_traces_when_no_graph_is_given(resnet, images) -> None:
    model, x, _ = resnet
    ref = model(x)
    cal = ps.calibrate(model, images, F.cross_entropy, steps=2)
    assert _hook_count(model) == 0
    assert torch.equal(model(x), ref)
    s = ps.score_channels(model, cal.graph, "taylor", calibration=cal)
    assert {g.id for g in cal.graph.prunable} == set(s)


def test_calibration_with_inplace_relu_and_train_mode(resnet, images) -> None:
    """TinyResNet uses ReLU(inplace=True) after BN: the gates must not break autograd."""
    model, _x, graph = resnet
    cal = ps.calibrate(model, images, F.cross_entropy, steps=2, graph=graph, train_mode=True)
    for crit in ("taylor", "fisher", "taylor_weight"):
        s = ps.score_channels(model, graph, crit, calibration=cal)
        assert all((v > 0).any() for v in s.values()), crit


def test_gradient_criteria_need_a_backward_pass(resnet, images) -> None:
    model, _, graph = resnet
    with ps.Calibration(model, graph) as cal, torch.no_grad():
        for xb, _ in images:
            model(xb)
    ps.score_channels(model, graph, "apoz", calibration=cal)  # forward-only is enough here
    with pytest.raises(ps.CalibrationError, match="backward"):
        ps.score_channels(model, graph, "taylor", calibration=cal)


def test_sensitivity_needs_measurement(resnet, images) -> None:
    model, _, graph = resnet
    cal = ps.calibrate(model, images, F.cross_entropy, steps=1, graph=graph)
    with pytest.raises(ps.CalibrationError, match="sensitivity"):
        ps.score_channels(model, graph, "sensitivity", calibration=cal)


def test_sensitivity_outside_the_block_is_an_error(resnet, images) -> None:
    model, _, graph = resnet
    cal = ps.Calibration(model, graph)
    with pytest.raises(ps.CalibrationError, match="inside"):
        cal.measure_sensitivity(images, F.cross_entropy)


def test_sensitivity_matches_a_real_masked_loss(mlp, vectors) -> None:
    model, _, graph = mlp
    cal = ps.calibrate(
        model,
        vectors,
        F.cross_entropy,
        steps=1,
        graph=graph,
        criteria=["sensitivity"],
        sensitivity_batches=1,
    )
    s = ps.score_channels(model, graph, "sensitivity", calibration=cal)["fc1.weight:0"]
    x, y = vectors[0]
    trial = copy.deepcopy(model)
    with torch.no_grad():
        base = F.cross_entropy(model(x), y)
        trial.fc1.weight[4] = 0
        trial.fc1.bias[4] = 0
        expected = float(F.cross_entropy(trial(x), y) - base)
    assert s[4] == pytest.approx(expected, rel=1e-4, abs=1e-7)


def test_calibrate_rejects_an_empty_loader(resnet) -> None:
    model, _, graph = resnet
    with pytest.raises(ps.CalibrationError, match="no batches"):
        ps.calibrate(model, [], F.cross_entropy, graph=graph)


def test_recalibrate_bn_reestimates_statistics(resnet, images) -> None:
    model, _x, _ = resnet
    model.train()
    stale = {n: b.clone() for n, b in model.named_buffers()}
    used = ps.recalibrate_bn(model, images, steps=3)
    assert used == 3 and model.training
    assert model.bn.momentum == 0.1
    assert not torch.equal(model.bn.running_mean, stale["bn.running_mean"])
    # the cumulative average over the three batches equals the mean of the batch means
    feats = [model.stem(xb).mean((0, 2, 3)) for xb, _ in images[:3]]
    torch.testing.assert_close(model.bn.running_mean, torch.stack(feats).mean(0).detach())


def test_recalibrate_bn_with_no_batches_keeps_statistics(resnet) -> None:
    model, _, _ = resnet
    model.bn.running_mean.fill_(0.5)
    assert ps.recalibrate_bn(model, [], steps=3) == 0
    assert torch.all(model.bn.running_mean == 0.5)
