"""Leaf-module shortcut forwards of meta copies record exactly what dispatch records."""

from __future__ import annotations

from typing import Any

import pytest
import torch
import torchvision
from torch import nn

from prunepilot.core._capture import Capture, capture
from prunepilot.core._fastleaf import FORWARDS
from prunepilot.core._fastmeta import MetaMode, MetaRunner
from prunepilot.core._metacopy import meta_copy
from prunepilot.core._modules import all_modules

M = "meta"


def _plain_forwards(model: nn.Module) -> nn.Module:
    for m in all_modules(model):
        m.__dict__.pop("forward", None)
    return model


def _record(cap: Capture) -> tuple[Any, ...]:
    ops = [(r.func, r.args, r.kwargs, r.outputs, r.module, r.inputs) for r in cap.ops]
    return ops, cap.shapes, cap.names, cap.bases, cap.inputs, cap.outputs, cap.params


class _Leaves(nn.Module):
    """Every leaf with a shortcut, in its variants, plus cases that must fall back."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv1d(4, 6, 3, padding=1)
        self.c2 = nn.Conv2d(4, 8, 3, stride=2, padding=1, bias=False)
        self.c2r = nn.Conv2d(8, 8, 3, padding=1, padding_mode="reflect", groups=2)
        self.c2s = nn.Conv2d(8, 8, 3, padding="same")
        self.c3 = nn.Conv3d(4, 4, 1, dilation=2)
        self.bn1 = nn.BatchNorm1d(6)
        self.bn2 = nn.BatchNorm2d(8)
        self.bnm = nn.BatchNorm2d(8, momentum=None)  # cumulative average: eval only on meta
        self.bn2a = nn.BatchNorm2d(8, affine=False)
        self.bn2n = nn.BatchNorm2d(8, track_running_stats=False)
        self.bn3 = nn.BatchNorm3d(4)
        self.acts = nn.ModuleList(
            [
                nn.ReLU(),
                nn.ReLU(inplace=True),
                nn.SiLU(),
                nn.SiLU(inplace=True),
                nn.Hardswish(inplace=True),
                nn.Hardsigmoid(),
                nn.Sigmoid(),
                nn.Tanh(),
                nn.GELU(),
                nn.GELU("tanh"),
            ]
        )
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.pool2 = nn.AdaptiveAvgPool2d((2, 2))

    def forward(self, x: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> list[torch.Tensor]:
        y = self.c2(x)
        y = self.bn2a(self.bn2n(self.bn2(y)))
        if not self.training:
            y = self.bnm(y)
        for act in self.acts:
            y = act(y)
        y = self.c2s(self.c2r(y))
        y = y + self.c2(x.permute(0, 1, 3, 2))  # a non-contiguous input
        z = self.bn1(self.c1(s))
        w = self.bn3(self.c3(v))
        return [self.pool(y), self.pool(y.permute(0, 2, 3, 1)), self.pool2(y), z, w, self.pool(y)]


def _cases() -> list[tuple[str, nn.Module, tuple[torch.Tensor, ...]]]:
    x = torch.randn(2, 4, 8, 8)
    leaves = (_Leaves(), (x, torch.randn(2, 4, 5), torch.randn(1, 4, 3, 3, 3)))
    img = torch.randn(1, 3, 64, 64)
    out = [("leaves", *leaves)]
    for name in ("efficientnet_b0", "mobilenet_v3_small", "convnext_tiny"):
        out.append((name, torchvision.models.get_model(name, weights=None), (img,)))
    return out


@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("modules", [False, True])
def test_shortcuts_record_what_dispatch_records(train: bool, modules: bool) -> None:
    """Same ops, arguments, outputs, shapes and names with and without leaf shortcuts."""
    for name, model, inputs in _cases():
        model.train(train)
        meta = tuple(t.to(M) for t in inputs)
        fast = capture(meta_copy(model), meta, runner=MetaRunner(), modules=modules)
        slow = capture(
            _plain_forwards(meta_copy(model)), meta, runner=MetaRunner(), modules=modules
        )
        assert _record(fast) == _record(slow), name


def test_meta_copies_get_shortcuts_and_user_models_do_not() -> None:
    model = _Leaves()
    copy = meta_copy(model)
    fast = [m for m in all_modules(copy) if type(m) in FORWARDS]
    assert fast and all("forward" in m.__dict__ for m in fast)
    assert not any("forward" in m.__dict__ for m in all_modules(model))


def test_shortcut_failures_keep_the_kernel_message() -> None:
    """A size mismatch raises from the module's own forward, as without shortcuts."""
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)).eval()
    copy = meta_copy(model)
    copy[1].running_mean = torch.empty(3, device=M)
    runner = MetaRunner()
    x = torch.empty(1, 3, 4, 4, device=M)
    with pytest.raises(RuntimeError) as fast, torch.no_grad(), MetaMode(runner):
        copy(x)
    with pytest.raises(RuntimeError) as slow, torch.no_grad(), MetaMode(runner):
        _plain_forwards(copy)(x)
    assert str(fast.value) == str(slow.value)


def test_shortcuts_stand_aside_outside_prunepilot_modes() -> None:
    """Without a prunepilot mode (or under check mode) the module's own forward runs."""
    copy = meta_copy(nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU()))
    x = torch.empty(1, 3, 4, 4, device=M)
    assert copy(x).shape == (1, 4, 4, 4)
    with torch.no_grad(), MetaMode(MetaRunner(check=True)):
        assert copy(x).shape == (1, 4, 4, 4)


def test_patched_classes_keep_their_forward(monkeypatch: pytest.MonkeyPatch) -> None:
    """A class whose forward was replaced (e.g. by another library) gets no shortcut."""
    calls: list[int] = []
    own = nn.ReLU.forward

    def patched(self: nn.ReLU, x: torch.Tensor) -> torch.Tensor:
        calls.append(1)
        return own(self, x)

    monkeypatch.setattr(nn.ReLU, "forward", patched)
    copy = meta_copy(nn.Sequential(nn.Conv2d(3, 4, 1), nn.ReLU()))
    assert "forward" in copy[0].__dict__ and "forward" not in copy[1].__dict__
    with torch.no_grad(), MetaMode(MetaRunner()):
        copy(torch.empty(1, 3, 4, 4, device=M))
    assert calls == [1]


def _metas(out: Any) -> list[tuple[tuple[int, ...], tuple[int, ...], torch.dtype]]:
    flat = out if isinstance(out, list) else [out]
    return [(tuple(t.shape), t.stride(), t.dtype) for t in flat]


@pytest.mark.parametrize("train", [False, True])
def test_running_mode_outputs_match_dispatch(train: bool) -> None:
    """A forward that only runs ops (verification; batch norms skip their statistics) gives
    the outputs the module's own forwards give."""
    for name, model, inputs in _cases():
        model.train(train)
        meta = tuple(t.to(M) for t in inputs)
        with torch.no_grad(), MetaMode(MetaRunner()):
            fast = meta_copy(model)(*meta)
            slow = _plain_forwards(meta_copy(model))(*meta)
        assert _metas(fast) == _metas(slow), name


def test_a_weight_kept_as_a_plain_attribute_is_the_one_used() -> None:
    """A module may hold its weight as a plain attribute instead of a parameter (what an
    old-style weight norm does before each forward): the shortcut reads that one, as the
    module's own forward does."""

    def copy() -> nn.Module:
        model: Any = meta_copy(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()).eval())
        del model[0]._parameters["weight"]
        model[0].weight = torch.empty(4, 3, 3, 3, device=M)
        return model

    meta = (torch.empty(1, 3, 8, 8, device=M),)
    fast = capture(copy(), meta, runner=MetaRunner(), modules=False)
    slow = capture(_plain_forwards(copy()), meta, runner=MetaRunner(), modules=False)
    assert _record(fast) == _record(slow)
    [conv] = [r for r in fast.ops if r.func == torch.ops.aten.convolution.default]
    assert conv.args[1].node not in fast.names  # the plain tensor: no parameter name
    assert conv.args[2].node in fast.names  # the bias is still the registered parameter
