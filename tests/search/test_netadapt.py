"""The NetAdapt loop reaches its MACs target and resumes after a crash."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import prunepilot as pp
from prunepilot import search as ps

from ._models import TinyResNet, image_batches


class Crash(RuntimeError):
    """Raised by the progress callback to simulate a crash."""


def _setup() -> tuple[torch.nn.Module, torch.Tensor]:
    torch.manual_seed(0)
    return TinyResNet(width=8).eval(), torch.randn(1, 3, 8, 8)


def _evaluate(model: torch.nn.Module) -> float:
    return -ps.evaluate(model, image_batches(n_batches=1, seed=5)).loss


def _finetune(model: torch.nn.Module) -> None:
    torch.manual_seed(0)
    ps.Trainer(model, lr=0.02).fit(image_batches(n_batches=2, seed=7), epochs=1)


def test_netadapt_reaches_the_target_and_keeps_the_best_proposal(tmp_path: Path) -> None:
    model, x = _setup()
    macs0 = pp.profile(model, x).macs
    events: list[ps.Progress] = []
    res = ps.netadapt(
        model,
        x,
        target=0.5,
        step=0.15,
        evaluate=_evaluate,
        finetune=_finetune,
        checkpoint=tmp_path / "na.pt",
        callback=events.append,
    )
    assert res.reached and res.macs_kept <= 0.5
    assert pp.profile(model, x).macs == res.macs and res.macs / macs0 == res.macs_kept
    assert [e.step for e in events] == [h.iteration for h in res.history]
    assert [h.iteration for h in res.history] == list(range(1, len(res.history) + 1))
    for h in res.history:
        assert h.score == max(h.proposals.values())  # the best proposal was kept
    kept = [h.macs_kept for h in res.history]
    assert kept == sorted(kept, reverse=True) and len(kept) >= 2


def test_netadapt_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    ck = tmp_path / "na.pt"
    reference, x = _setup()
    full = ps.netadapt(reference, x, target=0.5, step=0.15, evaluate=_evaluate, finetune=_finetune)
    assert len(full.history) >= 3

    def crash_after_first(p: ps.Progress) -> None:
        if p.step == 1:
            raise Crash("simulated crash after iteration 1")

    model, _ = _setup()
    with pytest.raises(Crash):
        ps.netadapt(
            model,
            x,
            target=0.5,
            step=0.15,
            evaluate=_evaluate,
            finetune=_finetune,
            checkpoint=ck,
            callback=crash_after_first,
        )
    assert ck.exists()

    fresh, _ = _setup()  # a new process would rebuild the original model
    events: list[ps.Progress] = []
    res = ps.netadapt(
        fresh,
        x,
        target=0.5,
        step=0.15,
        evaluate=_evaluate,
        finetune=_finetune,
        checkpoint=ck,
        callback=events.append,
    )
    assert res.resumed_from == 1
    assert events[0].step == 2  # continues with iteration 2, not from scratch
    assert [h.iteration for h in res.history] == list(range(1, len(res.history) + 1))
    assert res.history[0].unit == full.history[0].unit
    assert [h.unit for h in res.history] == [h.unit for h in full.history]
    assert res.macs == full.macs
    for a, b in zip(fresh.state_dict().values(), reference.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)


def test_resume_rejects_a_checkpoint_for_another_target(tmp_path: Path) -> None:
    ck = tmp_path / "na.pt"
    model, x = _setup()
    ps.netadapt(model, x, target=0.8, step=0.1, evaluate=_evaluate, checkpoint=ck, max_iterations=1)
    model, _ = _setup()
    with pytest.raises(pp.PlanError, match="target"):
        ps.netadapt(model, x, target=0.5, evaluate=_evaluate, checkpoint=ck)


def test_netadapt_blocks_shrink_groups_together(tmp_path: Path) -> None:
    model, x = _setup()
    res = ps.netadapt(
        model, x, target=0.7, step=0.3, evaluate=_evaluate, blocks=lambda g: "all", max_iterations=1
    )
    assert res.history[0].unit == "all"
    assert len(res.history[0].plan) == 3  # every group shrank in the one proposal
