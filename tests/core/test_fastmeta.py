"""Fast meta execution, the attribute-wise meta copy and the shape-only verification prune."""

from __future__ import annotations

import copy
from typing import Any

import pytest
import torch
import torchvision
from torch import nn

import prunepilot as pp
from prunepilot.core._fastmeta import SHORTCUTS, MetaMode, MetaRunner, meta_empty
from prunepilot.core._metacopy import meta_copy
from prunepilot.core._prune import _tensors
from prunepilot.core._verify import shrink

aten = torch.ops.aten
M = "meta"


class _Mixed(nn.Module):
    """Every op family the shortcuts answer: conv, BN, LN, pointwise, cat, mean, addmm, softmax."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1, bias=True)
        self.dw = nn.Conv2d(8, 8, 3, stride=2, groups=8)
        self.bn = nn.BatchNorm2d(8)
        self.ln = nn.LayerNorm(16)
        self.fc = nn.Linear(16, 16)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.nn.functional.silu(self.bn(self.conv(x)))
        z = self.dw(y)
        se = torch.sigmoid(z.mean((2, 3), keepdim=True))
        z = torch.cat([z * se, z.relu_()], 1)
        t = z.flatten(2)[..., :16]
        t = self.fc(self.ln(t)).softmax(-1) + 1.0
        return torch.nn.functional.gelu(t - t.max())


def _run_checked(model: nn.Module, x: torch.Tensor) -> Any:
    with torch.no_grad(), MetaMode(MetaRunner(check=True)):
        return model(x)


@pytest.mark.parametrize("train", [False, True])
def test_shortcuts_match_the_meta_kernels(train: bool) -> None:
    """Outputs answered by shape rules or the memo have the kernels' shape, strides and dtype."""
    model = meta_copy(_Mixed().train(train))
    out = _run_checked(model, torch.empty(2, 3, 20, 20, device=M))
    assert out.shape == (2, 16, 16) and out.is_meta


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "squeezenet1_1", "shufflenet_v2_x0_5"])
def test_shortcuts_match_on_torchvision(name: str) -> None:
    model = meta_copy(torchvision.models.get_model(name, weights=None).eval())
    x = torch.empty(1, 3, 64, 64, device=M)
    _run_checked(model, x)
    _run_checked(model, x)  # the second run answers repeats from the memo


def _e(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.empty(*shape, device=M, dtype=dtype)


@pytest.mark.parametrize(
    "func,args",
    [
        (
            aten.native_batch_norm.default,
            (_e(1, 4, 5, 5), _e(3), _e(3), _e(4), _e(4), False, 0.1, 1e-5),
        ),
        (aten.native_layer_norm.default, (_e(2, 5, 8), [7], _e(7), _e(7), 1e-5)),
        (aten.native_layer_norm.default, (_e(2, 5, 8), [8], _e(7), None, 1e-5)),
        (
            aten.convolution.default,
            (_e(1, 4, 8, 8), _e(6, 3, 1, 1), None, [1], [0], [1], False, [0], 1),
        ),
        (
            aten.convolution.default,
            (_e(1, 4, 8, 8), _e(6, 2, 1, 1), None, [1], [0], [1], False, [0], 4),
        ),
        (
            aten.convolution.default,
            (_e(1, 4, 8, 8), _e(6, 4, 1, 1), _e(5), [1], [0], [1], False, [0], 1),
        ),
        (
            aten.convolution.default,
            (_e(1, 4, 2, 2), _e(6, 4, 3, 3), None, [1], [0], [1], False, [0], 1),
        ),
        (aten.addmm.default, (_e(6), _e(4, 5), _e(6, 7))),
        (aten.addmm.default, (_e(3), _e(4, 5), _e(5, 7))),
        (aten.add.Tensor, (_e(2, 3), _e(4, 3))),
        (aten.mul_.Tensor, (_e(2, 1), _e(2, 3))),
        (aten.cat.default, ([_e(2, 3, 4), _e(2, 3, 5)], 1)),
    ],
)
def test_shape_rules_reject_what_the_kernels_reject(func: Any, args: tuple[Any, ...]) -> None:
    """A shortcut raises where the meta or the CPU kernel raises: verification relies on it."""
    assert func in SHORTCUTS

    def cpu(a: Any) -> Any:
        if isinstance(a, torch.Tensor):
            return torch.zeros(a.shape)
        return [cpu(t) for t in a] if isinstance(a, list) else a

    rejected = 0
    for call_args in (args, [cpu(a) for a in args]):
        try:
            func(*call_args)
        except RuntimeError:
            rejected += 1
    assert rejected
    with pytest.raises(RuntimeError):
        MetaRunner()(func, args, {})


@pytest.mark.parametrize(
    "shape", [(), (0,), (1,), (3, 0, 2), (2, 1, 5), (1, 1, 1), (4, 3, 2, 1), (2, 0, 1, 3)]
)
def test_meta_empty_matches_torch_empty(shape: tuple[int, ...]) -> None:
    """The cached strides are the ones ``torch.empty`` gives, size 0 and 1 dims included."""
    got = meta_empty(shape, torch.float16)
    want = torch.empty(shape, dtype=torch.float16, device=M)
    assert (got.shape, got.stride(), got.dtype, got.device) == (
        want.shape,
        want.stride(),
        want.dtype,
        want.device,
    )
    assert meta_empty(list(shape), torch.float16).stride() == want.stride()


def test_shortcuts_leave_unusual_calls_to_the_kernel() -> None:
    """Non-contiguous, mixed-dtype or real (CPU) tensors take the kernel's path."""
    r = MetaRunner(check=True)
    x = _e(2, 3, 4).transpose(1, 2)
    out = r(aten.add.Tensor, (x, x), {})
    assert out.stride() == aten.add.Tensor(x, x).stride()
    out = r(aten.add.Tensor, (_e(2, 3), _e(2, 3, dtype=torch.float16)), {})
    assert out.dtype == torch.float32
    cpu = torch.ones(2, 3)
    assert torch.equal(r(aten.add.Tensor, (cpu, cpu), {}), cpu + cpu)
    assert len(r.memo) == 2  # the kernel's meta answers, never real tensors'


def test_memo_answers_repeats_with_fresh_tensors() -> None:
    r = MetaRunner()
    a, b = _e(4, 5), _e(5, 6)
    first = r(aten.mm.default, (a, b), {})
    second = r(aten.mm.default, (a, b), {})
    assert len(r.memo) == 1 and first is not second
    assert (second.shape, second.stride(), second.dtype) == (
        first.shape,
        first.stride(),
        first.dtype,
    )
    with pytest.raises(RuntimeError):  # errors are never memoised
        r(aten.mm.default, (a, _e(4, 6)), {})


class _Hooked(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(4, 4)
        self.b = self.a  # shared module
        self.extra = {"k": [1, 2]}
        self.register_buffer("scale", torch.ones(4))
        self.calls: list[int] = []
        self.a.register_forward_hook(lambda m, i, o: o * 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.a(x)) * self.scale


class _CustomCopy(nn.Linear):
    def __deepcopy__(self, memo: dict[int, Any]) -> _CustomCopy:
        new = _CustomCopy(self.in_features, self.out_features)
        new.copied = True  # type: ignore[attr-defined]
        return new


def test_meta_copy_matches_deepcopy() -> None:
    """The attribute-wise copy keeps types, sharing, hooks and plain attributes like deepcopy."""
    model = _Hooked()
    c = meta_copy(model)
    assert type(c) is _Hooked and c.b is c.a and c.a is not model.a
    assert c.extra == model.extra and c.extra is not model.extra
    assert c.calls is not model.calls
    assert all(t.is_meta for t in c.state_dict().values())
    assert all(not t.is_meta for t in model.state_dict().values())
    assert isinstance(c.a.weight, nn.Parameter) and c.a.weight.shape == (4, 4)
    assert len(c.a._forward_hooks) == 1 and c.a._forward_hooks is not model.a._forward_hooks
    out = c(torch.empty(2, 4, device=M))
    assert out.is_meta and out.shape == (2, 4)
    ref = copy.deepcopy(model)
    for x, y in zip(c.modules(), ref.modules(), strict=True):
        assert type(x) is type(y) and x.__dict__.keys() == y.__dict__.keys()


def test_meta_copy_respects_custom_deepcopy() -> None:
    model = nn.Sequential(_CustomCopy(3, 3))
    c = meta_copy(model)
    assert getattr(c[0], "copied", False)


def test_shape_only_prune_matches_real_prune() -> None:
    """Verification prunes its meta copy by shape alone: the same shapes as real slicing."""
    torch.manual_seed(0)
    model = torchvision.models.densenet121(weights=None).features[:6].eval()
    x = torch.randn(1, 3, 64, 64)
    g = pp.trace(model, x)
    plan = {
        grp.id: [c for cell, k in zip(grp.cells, grp.per_cell(2), strict=True) for c in cell[:k]]
        for grp in g.prunable
    }
    real = copy.deepcopy(model)
    pp.prune_channels(real, g, plan)
    meta = meta_copy(model)
    shrink(meta, g, plan)
    got = {n: tuple(t[2].shape) for n, t in _tensors(meta).items()}
    want = {n: tuple(t[2].shape) for n, t in _tensors(real).items()}
    assert got == want
    assert all(t[2].is_meta for t in _tensors(meta).values())
    sizes = ("in_channels", "out_channels", "groups", "num_features", "in_features")
    for a, b in zip(meta.modules(), real.modules(), strict=True):
        assert {k: getattr(a, k, None) for k in sizes} == {k: getattr(b, k, None) for k in sizes}


def test_group_check_still_refuses_emptying_a_layer() -> None:
    """Dims holding only the group's channels are checked; a plan may not empty them."""
    model = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Conv2d(4, 2, 1))
    g = pp.trace(model, torch.randn(1, 3, 8, 8))
    grp = g.groups[0]
    assert grp.prunable and grp.channels == 4
    grp.check([0, 1, 2])
    with pytest.raises(pp.PlanError, match="empty"):
        grp.check([0, 1, 2, 3])


class _HookInForward(nn.Module):
    """Registers (and removes) a hook on a submodule inside its own forward."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.head = nn.Conv2d(8, 4, 1)
        self.seen: list[tuple[int, ...]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        handle = self.conv.register_forward_hook(lambda m, i, o: self.seen.append(o.shape))
        try:
            return self.head(torch.relu(self.conv(x)))
        finally:
            handle.remove()


def test_a_forward_registering_hooks_is_traced_and_left_as_it_was() -> None:
    """Meta copies share read-only empty hook registries: a forward that registers a hook
    cannot run on one, so tracing runs the model itself and finds the same groups."""
    model = _HookInForward().eval()
    x = torch.randn(1, 3, 8, 8)
    with pytest.raises(TypeError):
        meta_copy(model).conv.register_forward_hook(lambda m, i, o: None)
    graph = pp.trace(model, x)
    assert [g.channels for g in graph.prunable] == [8]
    assert not model.conv._forward_hooks and model.seen  # it ran; nothing left behind
    pp.prune(model, x, remove=0.5)  # in place
    assert model.conv.out_channels == 4 and model(x).shape == (1, 4, 8, 8)
