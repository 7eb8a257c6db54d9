"""Fine-tuning: learning, optimizer state across pruning, distillation, early stopping."""

from __future__ import annotations

import copy

import pytest
import torch

import prunepilot as pp
from prunepilot import search as ps

from ._models import TinyMLP


def test_trainer_learns_and_reports_progress(mlp, vectors) -> None:
    model, _, _ = mlp
    events: list[ps.Progress] = []
    tr = ps.Trainer(model, lr=0.1, callback=events.append, log_every=4)
    before = tr.evaluate(vectors)
    res = tr.fit(vectors, epochs=15, val_loader=vectors)
    after = tr.evaluate(vectors)
    assert res.steps == 60 and tr.steps_done == 60
    assert after.loss < before.loss and after.top1 > max(before.top1, 0.6)
    assert [e.step for e in events if e.stage == "train"] == list(range(4, 61, 4))
    assert len([e for e in events if e.stage == "eval"]) == 15
    assert all(e.total == 60 for e in events if e.stage == "train")
    assert tr.optimizer.param_groups[0]["lr"] == 0.1  # the cosine schedule is undone


def test_max_steps_stops_within_an_epoch(mlp, vectors) -> None:
    model, _, _ = mlp
    res = ps.Trainer(model).fit(vectors, epochs=None, max_steps=10)
    assert res.steps == 10


def test_optimizer_state_survives_a_pruning_step(mlp, vectors) -> None:
    model, x, graph = mlp
    tr = ps.Trainer(model, lr=0.05)
    tr.fit(vectors, epochs=2)
    state = tr.optimizer.state[model.fc1.weight]["momentum_buffer"].clone()
    scores = ps.score_channels(model, graph, "l2")
    plan = ps.plan_for_ratio(model, graph, scores, 0.25)
    removed = plan["fc1.weight:0"]
    keep = [i for i in range(16) if i not in removed]
    tr.prune(graph, plan)
    assert model.fc1.weight.shape == (12, 12)
    buf = tr.optimizer.state[model.fc1.weight]["momentum_buffer"]
    assert torch.equal(buf, state[keep])  # the same momentum, sliced like the weights
    assert tr.optimizer.param_groups[0]["params"][0] is model.fc1.weight
    res = tr.fit(vectors, epochs=1)  # and training simply continues
    assert res.steps == 4 and torch.isfinite(torch.tensor(res.train_loss))
    pp.trace(model, x)


def test_distillation_from_the_unpruned_model(mlp, vectors) -> None:
    model, _, graph = mlp
    ps.Trainer(model, lr=0.1).fit(vectors, epochs=10)
    teacher = copy.deepcopy(model)
    scores = ps.score_channels(model, graph, "l1")
    pp.prune_channels(model, graph, ps.plan_for_ratio(model, graph, scores, 0.5))
    tr = ps.Trainer(model, lr=0.05, teacher=teacher, kd_alpha=0.7, kd_temperature=2.0)
    x, y = vectors[0]
    loss = tr.loss(x, y)
    with torch.no_grad():
        expected = ps.distillation_loss(model(x), teacher(x), y, alpha=0.7, temperature=2.0)
    assert float(loss.detach()) == pytest.approx(float(expected), rel=1e-5)
    tr.fit(vectors, epochs=3)
    assert not any(p.requires_grad for p in teacher.parameters())


def test_distillation_loss_is_zero_kl_for_identical_logits() -> None:
    logits = torch.randn(5, 4)
    y = torch.randint(0, 4, (5,))
    kd = ps.distillation_loss(logits, logits, y, alpha=1.0)
    assert float(kd) == pytest.approx(0.0, abs=1e-6)


def test_early_stopping_restores_the_best_weights(vectors) -> None:
    torch.manual_seed(0)
    model = TinyMLP()
    tr = ps.Trainer(model, lr=5.0, momentum=0.0, weight_decay=0.0)  # diverges
    res = tr.fit(vectors, epochs=30, val_loader=vectors, patience=2, schedule="constant")
    assert res.stopped_early and res.steps < 120
    assert res.best is not None
    assert tr.evaluate(vectors).top1 == pytest.approx(res.best.top1)


def test_cuda_request_without_cuda_is_clear(mlp) -> None:
    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(pp.PrunepilotError, match="CUDA"):
        ps.Trainer(mlp[0], device="cuda")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_trainer_on_cuda(mlp, vectors) -> None:
    model, _, graph = mlp
    tr = ps.Trainer(model, device="cuda")
    tr.fit(vectors, epochs=1)
    tr.prune(graph, ps.plan_for_ratio(model, graph, ps.score_channels(model, graph), 0.5))
    assert tr.evaluate(vectors).samples == 64
