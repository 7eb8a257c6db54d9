"""Iterative schedules produce the sparsities they state."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import prunepilot as pp
from prunepilot import search as ps

from ._models import TinyResNet


def test_linear_schedule() -> None:
    assert ps.sparsity_schedule("linear", 0.6, 3) == pytest.approx([0.2, 0.4, 0.6])


def test_agp_cubic_schedule() -> None:
    s = ps.sparsity_schedule("agp", 0.8, 4)
    expected = [0.8 * (1 - (1 - k / 4) ** 3) for k in range(1, 5)]
    assert s == pytest.approx(expected)
    steps = [b - a for a, b in zip([0.0, *s], s, strict=False)]
    assert steps == sorted(steps, reverse=True)  # fast first, gentle last


def test_geometric_schedule_removes_a_constant_fraction_of_what_remains() -> None:
    target, n = 0.9, 3
    s = ps.sparsity_schedule("geometric", target, n)
    per_step = 1 - (1 - target) ** (1 / n)
    remaining = [1 - v for v in s]
    assert remaining == pytest.approx([(1 - per_step) ** k for k in range(1, n + 1)])
    assert s[-1] == target


@pytest.mark.parametrize("kind", ["linear", "agp", "geometric"])
def test_uniform_channel_schedule_hits_every_step_exactly(kind: str) -> None:
    torch.manual_seed(0)
    model = TinyResNet(width=16).eval()
    x = torch.randn(1, 3, 8, 8)
    widths0 = {g.id: g.channels for g in pp.trace(model, x).prunable}
    seen: list[dict[str, int]] = []
    tuned: list[int] = []

    def finetune(m: torch.nn.Module, step: int) -> None:
        tuned.append(step)
        seen.append({g.id: g.channels for g in pp.trace(m, x).prunable})

    recs = ps.iterative_prune(
        model, x, target=0.75, steps=3, schedule=kind, measure="channels", finetune=finetune
    )
    sched = ps.sparsity_schedule(kind, 0.75, 3)
    assert tuned == [1, 2, 3]
    for rec, s, widths in zip(recs, sched, seen, strict=True):
        assert rec.sparsity == pytest.approx(s)
        for gid, n0 in widths0.items():
            assert widths[gid] == n0 - math.floor(n0 * s + 1e-9)
        assert rec.channels_kept == pytest.approx(sum(widths.values()) / sum(widths0.values()))


@pytest.mark.parametrize("allocation", ["uniform", "global"])
def test_macs_schedule_meets_each_step(allocation: str) -> None:
    torch.manual_seed(0)
    model = TinyResNet(width=16).eval()
    x = torch.randn(1, 3, 8, 8)
    macs0 = pp.profile(model, x).macs
    st = ps.Strategy(allocation=allocation)
    recs = ps.iterative_prune(model, x, target=0.6, steps=3, schedule="agp", strategy=st)
    for rec, s in zip(recs, ps.sparsity_schedule("agp", 0.6, 3), strict=True):
        assert rec.macs_kept <= 1 - s + 1e-9
        assert rec.macs_kept >= 1 - s - 0.12
    assert pp.profile(model, x).macs == recs[-1].macs
    assert recs[-1].macs / macs0 == pytest.approx(recs[-1].macs_kept)


def test_global_channel_schedule_counts_all_channels() -> None:
    torch.manual_seed(0)
    model = TinyResNet(width=16).eval()
    x = torch.randn(1, 3, 8, 8)
    st = ps.Strategy(allocation="global")
    recs = ps.iterative_prune(
        model, x, target=0.5, steps=2, schedule="linear", measure="channels", strategy=st
    )
    assert [r.channels_kept for r in recs] == pytest.approx([0.75, 0.5], abs=0.02)


def test_schedule_with_data_driven_criterion_and_optimizer(images) -> None:
    torch.manual_seed(0)
    model = TinyResNet(width=8)
    x = torch.randn(1, 3, 8, 8)
    tr = ps.Trainer(model, lr=0.05)

    def finetune(m: torch.nn.Module, step: int) -> None:
        tr.fit(images, epochs=1)

    recs = ps.iterative_prune(
        model,
        x,
        target=0.5,
        steps=2,
        schedule="geometric",
        criterion="taylor",
        optimizer=tr.optimizer,
        finetune=finetune,
        calibration_data=images,
        loss_fn=F.cross_entropy,
        calibration_steps=2,
    )
    assert len(recs) == 2 and recs[-1].macs_kept <= 0.5
    assert tr.steps_done == 8
    for p in model.parameters():  # optimizer state was sliced along with every prune
        buf = tr.optimizer.state[p].get("momentum_buffer")
        assert buf is None or buf.shape == p.shape


def test_data_driven_schedule_without_data_is_an_error() -> None:
    model = TinyResNet()
    with pytest.raises(ps.CalibrationError, match="calibration_data"):
        ps.iterative_prune(model, torch.randn(1, 3, 8, 8), target=0.5, steps=2, criterion="fisher")
