"""Hand-built models combining several rules, inputs/outputs of any structure, model safety."""

from __future__ import annotations

import copy
import warnings
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules import module as module_globals

import prunepilot as pp
from prunepilot.core import _verify

from ._helpers import (
    find_group,
    hooks_of,
    member_names,
    rel_err,
    run,
    snapshot,
    state_equal,
    zero_check,
    zero_members,
)


def conv_bn(cin: int, cout: int, k: int = 3, groups: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, k, padding=k // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def _randomize_bn(model: nn.Module) -> nn.Module:
    """Non-trivial BatchNorm statistics, so that eval-mode BN is not an identity."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)
    return model


class Inception(nn.Module):
    """Three branches concatenated on channels, then a global-pool classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(3, 12)
        self.b1 = conv_bn(12, 8, 1)
        self.b3 = nn.Sequential(conv_bn(12, 6, 1), conv_bn(6, 10))
        self.bp = conv_bn(12, 6, 1)
        self.mix = conv_bn(24, 16, 1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        y = torch.cat([self.b1(x), self.b3(x), self.bp(F.max_pool2d(x, 3, 1, 1))], 1)
        return self.fc(self.mix(y).mean((2, 3)))


class ShuffleUnit(nn.Module):
    """ShuffleNetV2 unit: chunk, one branch through a depthwise conv, cat, channel shuffle."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(3, 16)
        self.branch = nn.Sequential(conv_bn(8, 8, 1), conv_bn(8, 8, 3, groups=8), conv_bn(8, 8, 1))
        self.head = nn.Conv2d(16, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        left, right = x.chunk(2, dim=1)
        y = torch.cat([left, self.branch(right)], 1)
        n, c, h, w = y.shape
        y = y.view(n, 2, c // 2, h, w).transpose(1, 2).reshape(n, c, h, w)
        return self.head(y)


class Block(nn.Module):
    def __init__(self, c: int, mid: int) -> None:
        super().__init__()
        self.conv1 = conv_bn(c, mid)
        self.conv2 = nn.Conv2d(mid, c, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x + self.bn2(self.conv2(self.conv1(x))))


class ResChain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(3, 8)
        self.blocks = nn.Sequential(Block(8, 6), Block(8, 6), Block(8, 6))
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x)))


class InvertedResidual(nn.Module):
    """MobileNetV2 block: expand 1x1, depthwise 3x3, project 1x1, residual add."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = conv_bn(3, 8)
        self.expand = conv_bn(8, 24, 1)
        self.dw = conv_bn(24, 24, 3, groups=24)
        self.project = nn.Sequential(nn.Conv2d(24, 8, 1, bias=False), nn.BatchNorm2d(8))
        self.head = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        return self.head(x + self.project(self.dw(self.expand(x))))


class SqueezeExcite(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = conv_bn(3, 16)
        self.fc1 = nn.Conv2d(16, 4, 1)
        self.fc2 = nn.Conv2d(4, 16, 1)
        self.b = nn.Conv2d(16, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.a(x)
        s = F.hardsigmoid(self.fc2(F.relu(self.fc1(F.adaptive_avg_pool2d(y, 1)))))
        return self.b(y * s)


class TinyViT(nn.Module):
    """Patch embedding, one pre-norm transformer block, mean-pooled head."""

    def __init__(self, dim: int = 16, heads: int = 2) -> None:
        super().__init__()
        self.heads = heads
        self.patch = nn.Conv2d(3, dim, 4, stride=4)
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.fc1 = nn.Linear(dim, 2 * dim)
        self.fc2 = nn.Linear(2 * dim, dim)
        self.head = nn.Linear(dim, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch(x).flatten(2).transpose(1, 2)
        b, n, _ = x.shape
        q, k, v = (
            t.reshape(b, n, self.heads, -1).transpose(1, 2)
            for t in self.qkv(self.norm1(x)).chunk(3, dim=-1)
        )
        y = F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, -1)
        x = x + self.proj(y)
        x = x + self.fc2(F.gelu(self.fc1(self.norm2(x))))
        return self.head(x.mean(1))


class FlattenNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            conv_bn(3, 8), nn.MaxPool2d(2), conv_bn(8, 12), nn.MaxPool2d(2)
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(12 * 4 * 4, 20), nn.ReLU(), nn.Linear(20, 5)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


class SharedConv(nn.Module):
    """The same conv applied twice in one forward."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.shared = nn.Conv2d(8, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.a(x))
        y = F.relu(self.shared(y))
        return self.b(self.shared(y))


class BareParams(nn.Module):
    """Weights as bare parameters used through F.conv2d / F.linear."""

    def __init__(self) -> None:
        super().__init__()
        self.w1 = nn.Parameter(torch.randn(8, 3, 3, 3) * 0.3)
        self.b1 = nn.Parameter(torch.randn(8))
        self.w2 = nn.Parameter(torch.randn(6, 8, 1, 1) * 0.3)
        self.w3 = nn.Parameter(torch.randn(5, 6) * 0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(F.conv2d(x, self.w1, self.b1, padding=1))
        y = F.relu(F.conv2d(y, self.w2))
        return F.linear(y.mean((2, 3)), self.w3)


class StructuredIO(nn.Module):
    """Tuple, dict and list inputs; dict output."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.c = nn.Conv2d(3, 8, 3, padding=1)
        self.lin = nn.Linear(5, 8)
        self.b = nn.Conv2d(8, 4, 1)
        self.fc = nn.Linear(8, 2)

    def forward(
        self,
        pair: tuple[torch.Tensor, torch.Tensor],
        named: dict[str, torch.Tensor],
        lst: list[Any],
    ) -> dict[str, torch.Tensor]:
        x, y = pair
        h = F.relu(self.a(x) + self.c(named["img"]) * y.mean())
        v = self.lin(lst[0]) * lst[1]
        return {"map": self.b(h), "vec": self.fc(F.relu(v))}


def structured_inputs() -> tuple[Any, ...]:
    return (
        (torch.randn(2, 3, 8, 8), torch.randn(2, 3, 8, 8)),
        {"img": torch.randn(2, 3, 8, 8)},
        [torch.randn(2, 5), torch.randn(2, 1)],
    )


class ControlFlow(nn.Module):
    """Data-dependent Python branching on the input."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.pos = nn.Conv2d(8, 8, 1)
        self.neg = nn.Conv2d(8, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.a(x))
        y = self.pos(y) if x.sum() > 0 else self.neg(y)
        for _ in range(int(x.shape[-1] > 4) + 1):  # loops unrolled by tracing
            y = F.relu(y)
        return self.b(y)


IMG16 = torch.Size([2, 3, 16, 16])

MODELS: dict[str, tuple[type[nn.Module], Any]] = {
    "concat": (Inception, IMG16),
    "split-shuffle": (ShuffleUnit, IMG16),
    "residual-chain": (ResChain, IMG16),
    "depthwise-residual": (InvertedResidual, IMG16),
    "squeeze-excite": (SqueezeExcite, IMG16),
    "flatten-linear": (FlattenNet, IMG16),
    "shared-module": (SharedConv, IMG16),
    "bare-parameters": (BareParams, IMG16),
}


def _inputs(spec: Any) -> Any:
    return torch.randn(spec) if isinstance(spec, torch.Size) else spec()


@pytest.mark.parametrize("name", list(MODELS))
def test_zero_check(name: str) -> None:
    """Zeroing then pruning the selected channels gives the same outputs, fewer MACs."""
    cls, spec = MODELS[name]
    model = _randomize_bn(cls())
    graph, plan, _ = zero_check(model, _inputs(spec))
    assert set(plan) <= {g.id for g in graph.prunable}


def test_concat_branches() -> None:
    """Each concatenated branch is its own group; the consumer is a member of all three."""
    model = _randomize_bn(Inception())
    graph, _, pruned = zero_check(model, torch.randn(IMG16))
    for producer in ("b1.0.weight", "b3.1.0.weight", "bp.0.weight"):
        g = find_group(graph, producer)
        assert g.prunable and ("mix.0.weight", 1) in member_names(g, "in")
    assert pruned.mix[0].in_channels == 4 + 5 + 3


def test_split_and_shuffle() -> None:
    """chunk + cat + channel shuffle: the stem's halves stay equal, the branch prunes."""
    model = _randomize_bn(ShuffleUnit())
    graph, _, pruned = zero_check(model, torch.randn(IMG16))
    assert find_group(graph, "branch.0.0.weight").prunable
    out = run(pruned, torch.randn(IMG16))
    assert out.shape == (2, 4, 16, 16)


def test_residual_chain_is_one_group() -> None:
    """Three residual blocks add into one stream: one group holding every producer."""
    model = _randomize_bn(ResChain())
    graph, plan, pruned = zero_check(model, torch.randn(IMG16))
    g = find_group(graph, "stem.0.weight")
    outs = member_names(g, "out")
    for i in range(3):
        assert (f"blocks.{i}.conv2.weight", 0) in outs
        assert (f"blocks.{i}.bn2.weight", 0) in outs
        assert (f"blocks.{i}.conv1.0.weight", 1) in member_names(g, "in")
        assert find_group(graph, f"blocks.{i}.conv2.weight") is g
    assert ("head.weight", 1) in member_names(g, "in")
    assert len([x for x in graph.groups if x is g]) == 1
    assert len(plan[g.id]) == 4
    assert all(b.conv2.out_channels == 4 for b in pruned.blocks)


def test_depthwise_residual() -> None:
    """The depthwise conv follows the expansion's channels; the residual couples the rest."""
    model = _randomize_bn(InvertedResidual())
    graph, _, pruned = zero_check(model, torch.randn(IMG16))
    g = find_group(graph, "expand.0.weight")
    assert ("dw.0.weight", 0) in member_names(g, "out")
    assert pruned.dw[0].groups == pruned.dw[0].out_channels == 12
    assert ("project.0.weight", 0) in member_names(find_group(graph, "stem.0.weight"))


def test_squeeze_excitation() -> None:
    """SE: the gate's output channels are the gated features' channels."""
    model = _randomize_bn(SqueezeExcite())
    graph, _, pruned = zero_check(model, torch.randn(IMG16))
    g = find_group(graph, "a.0.weight")
    assert ("fc2.weight", 0) in member_names(g, "out")
    assert ("fc1.weight", 1) in member_names(g, "in")
    assert find_group(graph, "fc1.weight").prunable
    assert pruned.fc2.out_channels == 8 and pruned.fc1.out_channels == 2


def test_transformer_block() -> None:
    """Patch embedding + attention + MLP with LayerNorms: prunes and keeps shapes."""
    model = TinyViT()
    # LayerNorm statistics see zeroed channels: compare structure and shapes only
    graph, _, pruned = zero_check(model, torch.randn(2, 3, 16, 16), values=False)
    assert find_group(graph, "fc1.weight").prunable
    assert pruned.fc1.out_features == 16
    assert pruned.norm1.normalized_shape == pruned.norm2.normalized_shape


def test_flatten_into_classifier() -> None:
    """Flatten of a [12, 4, 4] map: pruning the conv shrinks the Linear by 16 per channel."""
    model = _randomize_bn(FlattenNet())
    _, plan, pruned = zero_check(model, torch.randn(IMG16))
    removed = len(plan["features.2.0.weight:0"])
    assert pruned.classifier[1].in_features == (12 - removed) * 16


def test_shared_module_called_twice() -> None:
    """A conv applied twice consumes and produces the same channels: one group."""
    model = SharedConv()
    graph, _, pruned = zero_check(model, torch.randn(IMG16))
    g = find_group(graph, "a.weight")
    assert {("shared.weight", 0), ("shared.weight", 1)} <= member_names(g)
    assert pruned.shared.in_channels == pruned.shared.out_channels == 4


class SharedOnParam(nn.Module):
    """A conv applied first to a broadcast parameter, then to a layer's output."""

    def __init__(self) -> None:
        super().__init__()
        self.pos = nn.Parameter(torch.randn(1, 8, 1, 1))
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.shared = nn.Conv2d(8, 8, 1)
        self.b = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.shared(self.pos.expand(x.shape[0], -1, x.shape[2], x.shape[3]))
        y = self.shared(F.relu(self.a(x)))
        return self.b(F.relu(y + p))


def test_shared_conv_keeps_roles_of_its_inputs() -> None:
    """The conv's input dim is a consumer of both inputs; the parameter it read first stays a
    per-channel tensor of the group ("out"), not a consumer."""
    graph, _, pruned = zero_check(SharedOnParam(), torch.randn(IMG16))
    g = find_group(graph, "a.weight")
    roles = {(m.name, m.dim): m.role for m in g.members}
    assert roles == {
        ("pos", 1): "out",
        ("a.weight", 0): "out",
        ("a.bias", 0): "out",
        ("shared.weight", 1): "in",
    }
    assert pruned.shared.in_channels == pruned.pos.shape[1] == pruned.a.out_channels < 8


class ConvOnParam(nn.Module):
    """A conv (dense or depthwise) whose only input is a broadcast parameter."""

    def __init__(self, depthwise: bool) -> None:
        super().__init__()
        self.pos = nn.Parameter(torch.randn(1, 8, 1, 1))
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.c = nn.Conv2d(8, 8, 3, padding=1, groups=8 if depthwise else 1, bias=False)
        self.b = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.c(self.pos.expand(x.shape[0], -1, x.shape[2], x.shape[3]))
        return self.b(F.relu(self.a(x) + p))


@pytest.mark.parametrize("depthwise", [False, True])
def test_parameter_read_only_by_a_conv_is_a_member(depthwise: bool) -> None:
    """A parameter whose channels only a convolution reads prunes with that conv's input."""
    graph, _, pruned = zero_check(ConvOnParam(depthwise), torch.randn(IMG16))
    g = find_group(graph, "pos", 1)
    assert g.prunable
    assert ("c.weight", 0 if depthwise else 1) in member_names(g)
    assert pruned.pos.shape[1] == pruned.c.in_channels < 8


def test_bare_parameters_functional() -> None:
    """Bare parameters used through F.conv2d / F.linear are pruned like layers."""
    model = BareParams()
    graph, _, pruned = zero_check(model, torch.randn(IMG16))
    assert member_names(graph.group("w1:0")) == {("w1", 0), ("b1", 0), ("w2", 1)}
    assert pruned.w1.shape == (4, 3, 3, 3) and pruned.b1.shape == (4,)
    assert pruned.w2.shape == (3, 4, 1, 1) and pruned.w3.shape == (5, 3)


def test_structured_inputs_and_dict_output() -> None:
    """Tuple/dict/list inputs and a dict output trace, prune and keep their structure."""
    model = StructuredIO()
    x = structured_inputs()
    graph, _, pruned = zero_check(model, x)
    assert {("a.weight", 0), ("c.weight", 0)} <= member_names(graph.group("a.weight:0"), "out")
    assert graph.group("lin.weight:0").prunable
    out = run(pruned, x)
    assert set(out) == {"map", "vec"}
    assert out["map"].shape == (2, 4, 8, 8) and out["vec"].shape == (2, 2)


@pytest.mark.parametrize("sign", [1.0, -1.0])
def test_python_control_flow(sign: float) -> None:
    """Only the branch taken on the example input is traced, and it prunes correctly."""
    model = ControlFlow()
    x = sign * torch.rand(2, 3, 8, 8)
    taken, other = ("pos", "neg") if sign > 0 else ("neg", "pos")
    graph, _, pruned = zero_check(model, x)
    assert find_group(graph, f"{taken}.weight").prunable
    assert not any(m.name.startswith(other) for g in graph.groups for m in g.members)
    assert getattr(pruned, taken).in_channels == 4
    assert run(pruned, x).shape == (2, 4, 8, 8)


# ---------------------------------------------------------------------------------------------
# train / eval mode, and trace leaving the model alone
class WithDropout(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.drop = nn.Dropout(0.5)
        self.b = nn.Conv2d(8, 4, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.b(self.drop(F.relu(self.a(x))))


def _summary(graph: pp.ChannelGraph) -> list[tuple[str, int, bool, int]]:
    return [(g.id, g.channels, g.prunable, len(g.members)) for g in graph.groups]


@pytest.mark.parametrize("cls", [ResChain, WithDropout, InvertedResidual])
def test_train_and_eval_mode_trace_alike(cls: type[nn.Module]) -> None:
    """Tracing works in train and eval mode, finds the same groups, keeps the mode."""
    model = _randomize_bn(cls())
    x = torch.randn(IMG16)
    train_graph = pp.trace(model.train(), x)
    assert model.training and all(m.training for m in model.modules())
    eval_graph = pp.trace(model.eval(), x)
    assert not any(m.training for m in model.modules())
    assert _summary(train_graph) == _summary(eval_graph)
    # a plan from the train-mode graph prunes the model for real
    trained = copy.deepcopy(model).train()
    plan = pp.select(trained, train_graph, remove=0.5)
    pp.prune_channels(trained, train_graph, plan)
    out = trained(x)
    out.sum().backward()
    assert out.shape == run(model, x).shape


def _tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    return dict(model.named_parameters()) | dict(model.named_buffers())


def _global_hooks() -> int:
    return sum(
        len(getattr(module_globals, name))
        for name in dir(module_globals)
        if name.startswith("_global_") and name.endswith("hooks")
    )


@pytest.mark.parametrize(
    ("name", "train"),
    [("residual-chain", False), ("squeeze-excite", False), ("shared-module", True)],
)
def test_trace_does_not_modify_model(name: str, train: bool) -> None:
    """Same tensors (identity, values, storage), training flags, grads and no hooks left."""
    cls, spec = MODELS[name]
    model = _randomize_bn(cls()).train(train)
    before = snapshot(model)
    ids = {k: id(v) for k, v in _tensors(model).items()}
    ptrs = {k: v.data_ptr() for k, v in _tensors(model).items()}
    flags = {n: m.training for n, m in model.named_modules()}
    grads = {k: p.requires_grad for k, p in model.named_parameters()}
    hooks, global_hooks = hooks_of(model.modules()), _global_hooks()

    pp.trace(model, _inputs(spec))
    pp.profile(model, _inputs(spec))

    assert state_equal(before, snapshot(model))
    assert {k: id(v) for k, v in _tensors(model).items()} == ids
    assert {k: v.data_ptr() for k, v in _tensors(model).items()} == ptrs
    assert {n: m.training for n, m in model.named_modules()} == flags
    assert {k: p.requires_grad for k, p in model.named_parameters()} == grads
    assert all(p.grad is None for p in model.parameters())
    assert hooks_of(model.modules()) == hooks == 0
    assert _global_hooks() == global_hooks


def test_train_mode_trace_keeps_batchnorm_statistics() -> None:
    """trace() on a train-mode model must not update BatchNorm running statistics."""
    model = ResChain().train()
    before = snapshot(model)
    pp.trace(model, torch.randn(IMG16))
    after = snapshot(model)
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == []


# ---------------------------------------------------------------------------------------------
# weight tying
class TiedLM(nn.Module):
    """Embedding tied to the output projection, with a residual MLP in between."""

    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(20, 8)
        self.fc1 = nn.Linear(8, 6)
        self.fc2 = nn.Linear(6, 8)
        self.lm_head = nn.Linear(8, 20, bias=False)
        self.lm_head.weight = self.emb.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.emb(tokens)
        return self.lm_head(x + self.fc2(F.relu(self.fc1(x))))


def test_tied_embedding_prunes_correctly() -> None:
    """Tied weights: pruning the hidden size keeps the tie and matches fully zeroed channels."""
    model = TiedLM().eval()
    tokens = torch.randint(0, 20, (2, 5))
    graph = pp.trace(model, tokens)
    g = next(x for x in graph.groups if ("fc2.weight", 0) in member_names(x))
    assert ("emb.weight", 1) in member_names(g)
    assert not any(("emb.weight", 0) in member_names(x) for x in graph.prunable)
    plan = pp.select(model, graph, remove=0.5)
    ref = copy.deepcopy(model)
    zero_members(ref, graph, plan)  # every slice of the removed channels
    pruned = copy.deepcopy(model)
    pp.prune_channels(pruned, graph, plan)
    assert pruned.lm_head.weight is pruned.emb.weight
    assert pruned.emb.weight.shape == (20, 4)
    assert rel_err(run(ref, tokens), run(pruned, tokens)) <= 1e-5


def test_tied_embedding_zero_channels_emulates_pruning() -> None:
    """zero_channels must emulate pruning on a model without normalisation."""
    zero_check(TiedLM(), torch.randint(0, 20, (2, 5)))


# ---------------------------------------------------------------------------------------------
# verification: sizes fixed by the model's own code
class HardCodedView(nn.Module):
    """Reshapes with literal sizes: removing a channel of `a` breaks the forward."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.c = nn.Conv2d(3, 6, 3, padding=1)
        self.fc = nn.Linear(8 * 4 * 4, 5)
        self.head = nn.Conv2d(6, 5, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = F.adaptive_avg_pool2d(F.relu(self.a(x)), 4).reshape(x.shape[0], 8 * 4 * 4)
        return self.fc(y), self.head(F.relu(self.c(x)))


def test_verify_pins_groups_that_break_the_forward() -> None:
    """Groups whose removal breaks the forward are fixed with the error as reason."""
    model = HardCodedView().eval()
    x = torch.randn(2, 3, 8, 8)
    graph = pp.trace(model, x)
    g = graph.group("a.weight:0")
    assert not g.prunable and g.reason and "breaks the model's forward" in g.reason
    assert graph.group("c.weight:0").prunable
    _, plan, pruned = zero_check(model, x, graph=graph)
    assert set(plan) == {"c.weight:0"} and pruned.a.out_channels == 8

    # without verification the group looks prunable, and pruning it breaks the model
    unverified = pp.trace(model, x, verify=False)
    assert unverified.group("a.weight:0").prunable
    broken = copy.deepcopy(model)
    pp.prune_channels(broken, unverified, {"a.weight:0": [0]})
    with pytest.raises(RuntimeError):
        run(broken, x)


class ManyFixedViews(nn.Module):
    """A chain of convolutions of which every other one's output is reshaped to a literal
    size (its group fails verification); the last one's channels reach the output."""

    def __init__(self, blocks: int = 31) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(4, 4, 3, padding=1) for _ in range(blocks))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, conv in enumerate(self.convs):
            x = F.relu(conv(x))
            if i % 2 == 0:
                x = x.reshape(x.shape[0], 4, 36).reshape(x.shape)
        return x


def test_verify_finds_many_failing_groups_with_fewer_forwards(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """When most groups tried so far failed, verification tries each group of a failing set
    alone instead of halving it: the same findings with fewer pruned forwards."""
    model = ManyFixedViews().eval()
    x = torch.randn(1, 4, 6, 6)
    assert len(pp.trace(model, x, verify=False).prunable) == 30

    tried: list[int] = []
    real = _verify.probe_plan

    def counted(groups: Any) -> dict[str, list[int]]:
        tried.append(len(groups))
        return real(groups)

    monkeypatch.setattr(_verify, "probe_plan", counted)
    graph = pp.trace(model, x)
    assert {g.id for g in graph.groups if not g.prunable} == {
        *(f"convs.{i}.weight:0" for i in range(0, 30, 2)),
        "convs.30.weight:0",  # reaches the output
    }
    for i in range(0, 30, 2):
        reason = graph.group(f"convs.{i}.weight:0").reason
        assert reason and "breaks the model's forward" in reason
    assert 1 in tried  # groups were tried alone
    assert len(tried) <= 40  # halving alone takes 51 forwards here


def test_instance_norms_follow_their_pruned_input() -> None:
    """Instance norms with and without weights: pruning matches zeroing the channels, and
    neither tracing (its verification prunes a copy) nor the pruned model warns about a
    num_features that no longer matches."""
    from ._factories import style_net

    model = style_net().eval()
    x = torch.randn(2, 3, 8, 8)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        graph = pp.trace(model, x)
        _, plan, pruned = zero_check(model, x, graph=graph)
        run(pruned, x)
    assert {"conv1.weight:0", "conv2.weight:0"} <= set(plan)
    assert pruned.in1.num_features == pruned.conv1.out_channels < 8
    assert pruned.in2.num_features == pruned.conv2.out_channels < 8


class CountingDetector(nn.Module):
    """Finds a data-dependent number of "boxes" (it runs on real tensors only) and returns
    a rank-3 tensor per box, as keypoint detectors do."""

    def __init__(self) -> None:
        super().__init__()
        self.backbone = nn.Conv2d(3, 8, 3, padding=1)
        self.score = nn.Conv2d(8, 1, 1)
        self.points = nn.Conv2d(8, 6, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = F.relu(self.backbone(x))
        s = self.score(f)[0, 0]
        keep = s > 0  # how many boxes depends on every weight
        return self.points(f)[0].permute(1, 2, 0)[keep].reshape(-1, 2, 3)


def test_verification_lets_a_detectors_box_count_change() -> None:
    """A model running on real tensors finds other boxes once pruned: their number is data,
    not structure, so it does not make the backbone's channels unprunable."""
    model = CountingDetector().eval()
    x = torch.randn(1, 3, 12, 12)
    graph = pp.trace(model, x)
    one = pp.prune_channels(copy.deepcopy(model), graph, {"backbone.weight:0": [0]})
    assert run(one, x).shape[1:] == (2, 3)
    assert run(one, x).shape[0] != run(model, x).shape[0]  # another count of boxes
    assert graph.group("backbone.weight:0").prunable
    plan = {"backbone.weight:0": [1, 4, 6]}  # the same boxes as zeroing those channels
    zeroed = pp.zero_channels(copy.deepcopy(model), graph, plan)
    pruned = pp.prune_channels(copy.deepcopy(model), graph, plan)
    assert rel_err(run(zeroed, x), run(pruned, x)) <= 1e-5
