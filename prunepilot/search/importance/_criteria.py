"""Channel importance criteria and their registry.

A criterion scores every channel of a channel group (higher = more important). Data-free
criteria read the weights; data-driven ones read statistics that a `Calibration` collected
while the user ran forward/backward passes. Users add their own by subclassing one of the
base classes below and calling `register_criterion`.
"""

from __future__ import annotations

import logging
import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal, TypeVar

import numpy as np
import torch
from torch import nn

from prunepilot.core import ChannelGraph, ChannelGroup

from ..errors import CalibrationError, UnknownCriterionError
from ._channels import Reduce, owner, position_channels, to_channels

if TYPE_CHECKING:
    from ._calibration import Calibration

__all__ = [
    "CRITERIA",
    "ActivationCriterion",
    "Criterion",
    "GradientWeightCriterion",
    "ScoreContext",
    "WeightCriterion",
    "available_criteria",
    "get_criterion",
    "register_criterion",
]

log = logging.getLogger("prunepilot.search")

Role = Literal["out", "in"]
NORM_TYPES: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._BatchNorm,
    nn.GroupNorm,
    nn.LayerNorm,
    nn.modules.instancenorm._InstanceNorm,
)


@dataclass(frozen=True)
class ScoreContext:
    """What a criterion may read: the model, its graph, calibration records and a seed."""

    model: nn.Module
    graph: ChannelGraph
    calibration: Calibration | None = None
    seed: int = 0

    def params(self) -> dict[str, nn.Parameter]:
        """The model's parameters by qualified name."""
        return dict(self.model.named_parameters())


class Criterion(ABC):
    """Base class: score the channels of one group, member by member.

    Subclasses set ``name`` (the registry key) and ``data_driven`` (needs calibration).
    """

    name: ClassVar[str] = ""
    data_driven: ClassVar[bool] = False

    @abstractmethod
    def member_scores(self, ctx: ScoreContext, group: ChannelGroup) -> list[np.ndarray]:
        """One array of ``group.channels`` scores per contributing member.

        ``nan`` marks channels a member does not hold; an empty list means "no opinion"
        (the caller falls back to a magnitude criterion).
        """

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


# ---------------------------------------------------------------------------- data-free


class WeightCriterion(Criterion):
    """Scores a channel from the weight slices it owns in each parameter member."""

    roles: ClassVar[tuple[Role, ...]] = ("out", "in")
    reduce_positions: ClassVar[Reduce] = "sum"

    def accepts(self, module: nn.Module | None, attr: str, weight: torch.Tensor) -> bool:
        """Whether this parameter member contributes (default: every parameter)."""
        return True

    @abstractmethod
    def position_scores(self, weight: torch.Tensor) -> torch.Tensor:
        """Scores of the rows of ``weight``: shape (positions, rest) -> (positions,)."""

    def member_scores(self, ctx: ScoreContext, group: ChannelGroup) -> list[np.ndarray]:
        params = ctx.params()
        out: list[np.ndarray] = []
        for m in group.members:
            p = params.get(m.name)
            if p is None or m.role not in self.roles:
                continue
            mod, attr = owner(ctx.model, m.name)
            if not self.accepts(mod, attr, p):
                continue
            with torch.no_grad():
                w = p.detach().float().movedim(m.dim, 0).reshape(p.shape[m.dim], -1)
                s = self.position_scores(w)
            out.append(
                to_channels(
                    s, position_channels(m, group.channels), group.channels, self.reduce_positions
                )
            )
        return out


class L1(WeightCriterion):
    """Sum of absolute weights of every slice the channel owns (producers and consumers)."""

    name = "l1"

    def position_scores(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.abs().sum(1)


class L2(WeightCriterion):
    """Sum of squared weights of every slice the channel owns (producers and consumers)."""

    name = "l2"

    def position_scores(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.pow(2).sum(1)


class FPGM(WeightCriterion):
    """Filter pruning via geometric median (He et al. 2019).

    A filter close to the geometric median of its layer's filters is redundant: its
    score is its summed Euclidean distance to all other filters of the same layer.
    Only producer weights with at least two dimensions (conv/linear filters) count.
    """

    name = "fpgm"
    roles = ("out",)

    def accepts(self, module: nn.Module | None, attr: str, weight: torch.Tensor) -> bool:
        return weight.ndim >= 2

    def position_scores(self, weight: torch.Tensor) -> torch.Tensor:
        return torch.cdist(weight.double(), weight.double()).sum(1)


class BNScale(WeightCriterion):
    """Absolute scale (gamma) of the normalisation layers producing the channel.

    The network-slimming criterion (Liu et al. 2017): a small gamma silences a channel.
    """

    name = "bn_scale"
    roles = ("out",)

    def accepts(self, module: nn.Module | None, attr: str, weight: torch.Tensor) -> bool:
        return isinstance(module, NORM_TYPES) and attr == "weight"

    def position_scores(self, weight: torch.Tensor) -> torch.Tensor:
        return weight.abs().sum(1)


class Random(Criterion):
    """Seeded uniform noise: the baseline every criterion should beat."""

    name = "random"

    def member_scores(self, ctx: ScoreContext, group: ChannelGroup) -> list[np.ndarray]:
        rng = np.random.default_rng([ctx.seed, zlib.crc32(group.id.encode())])
        return [rng.random(group.channels)]


# ---------------------------------------------------------------------------- data-driven


class _Recorded(Criterion):
    """Scores read from calibration records keyed by (member tensor name, dim)."""

    data_driven = True
    reduce_positions: ClassVar[Reduce] = "mean"

    def member_scores(self, ctx: ScoreContext, group: ChannelGroup) -> list[np.ndarray]:
        cal = _require(ctx, self)
        records = cal.records(self.name)
        out: list[np.ndarray] = []
        for m in group.members:
            rec = records.get((m.name, m.dim))
            if rec is None:
                continue
            out.append(
                to_channels(
                    rec, position_channels(m, group.channels), group.channels, self.reduce_positions
                )
            )
        return out


class ActivationCriterion(_Recorded):
    """Scores from the outputs of the layers that produce a group's channels.

    During calibration every producing layer (conv, linear, normalisation) is hooked. Its
    output, seen as (samples, channels, rest), goes to `forward_stat`; when gradients flow,
    the per-sample gradient of a unit gate on each channel (the sum over ``rest`` of
    activation * gradient) goes to `backward_stat`. Both return per-batch sums that
    `finalize` turns into scores. A group's scores come from its normalisation layers'
    outputs when it has any (what downstream layers see), else from every producer.
    """

    needs_grad: ClassVar[bool] = False

    def member_scores(self, ctx: ScoreContext, group: ChannelGroup) -> list[np.ndarray]:
        """Per-channel scores from the normalisation producers (or all producers)."""
        cal = _require(ctx, self)
        records = cal.records(self.name)
        found = [(m, records[(m.name, m.dim)]) for m in group.members if (m.name, m.dim) in records]
        normed = [(m, r) for m, r in found if isinstance(owner(ctx.model, m.name)[0], NORM_TYPES)]
        return [
            to_channels(
                r, position_channels(m, group.channels), group.channels, self.reduce_positions
            )
            for m, r in (normed or found)
        ]

    def forward_stat(self, act: torch.Tensor) -> torch.Tensor | None:
        """Per-channel sum over the batch for activations (N, C, R); None: not used."""
        return None

    def backward_stat(self, gate_grad: torch.Tensor, rest: int) -> torch.Tensor | None:
        """Per-channel sum over the batch for gate gradients (N, C); None: not used."""
        return None

    def finalize(self, total: torch.Tensor, samples: int) -> torch.Tensor:
        """Turn the accumulated sums into scores (default: mean per sample)."""
        return total / max(samples, 1)


class MeanActivation(ActivationCriterion):
    """Mean absolute activation of the channel (Polyak & Wolf 2015)."""

    name = "mean_activation"

    def forward_stat(self, act: torch.Tensor) -> torch.Tensor:
        return act.abs().mean(2).sum(0)


class APoZ(ActivationCriterion):
    """One minus the Average Percentage of Zeros after a ReLU (Hu et al. 2016).

    The fraction of positive outputs of each producing layer, i.e. of non-zeros after the
    ReLU that follows; higher = more often active = more important.
    """

    name = "apoz"

    def forward_stat(self, act: torch.Tensor) -> torch.Tensor:
        return (act > 0).float().mean(2).sum(0)


class Taylor(ActivationCriterion):
    """First-order Taylor, activation * gradient form (Molchanov et al. 2017).

    |mean over positions of a·dL/da| per sample, averaged over samples: the first-order
    estimate of the loss change when the channel's output is zeroed.
    """

    name = "taylor"
    needs_grad = True

    def backward_stat(self, gate_grad: torch.Tensor, rest: int) -> torch.Tensor:
        return (gate_grad / max(rest, 1)).abs().sum(0)


class Fisher(ActivationCriterion):
    """Fisher / Hessian-diagonal estimate of the loss increase (Theis et al. 2018).

    With a unit gate on each channel, the empirical Fisher approximates the gate's Hessian
    diagonal; the loss increase from removing the channel is about 1/2 E[(dL/dgate)^2].
    """

    name = "fisher"
    needs_grad = True

    def backward_stat(self, gate_grad: torch.Tensor, rest: int) -> torch.Tensor:
        return gate_grad.pow(2).sum(0)

    def finalize(self, total: torch.Tensor, samples: int) -> torch.Tensor:
        return total / (2 * max(samples, 1))


class GradientWeightCriterion(_Recorded):
    """Scores from parameters and their gradients, per calibration batch."""

    reduce_positions = "sum"

    @abstractmethod
    def param_stat(self, weight: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        """Rows of (positions, rest) weight and gradient -> per-position batch score."""

    def finalize(self, total: torch.Tensor, batches: int) -> torch.Tensor:
        """Turn the accumulated sums into scores (default: mean per batch)."""
        return total / max(batches, 1)


class TaylorWeight(GradientWeightCriterion):
    """First-order Taylor, weight form (Molchanov et al. 2019): (sum of w·dL/dw)^2.

    Summed over every parameter slice the channel owns, squared per batch and averaged.
    """

    name = "taylor_weight"

    def param_stat(self, weight: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
        return (weight * grad).sum(1).pow(2)


class Sensitivity(Criterion):
    """Loss increase when the channel is masked, measured on a few batches.

    Needs `Calibration.measure_sensitivity` (done by `calibrate` when given batches).
    """

    name = "sensitivity"
    data_driven = True

    def member_scores(self, ctx: ScoreContext, group: ChannelGroup) -> list[np.ndarray]:
        cal = _require(ctx, self)
        s = cal.sensitivity_scores()
        if not s:
            raise CalibrationError(
                "criterion 'sensitivity' needs masked-loss measurements: call "
                "Calibration.measure_sensitivity(batches, loss_fn) inside the calibration, "
                "or calibrate(..., sensitivity_batches=N) with N >= 1"
            )
        return [s[group.id]] if group.id in s else []


def _require(ctx: ScoreContext, crit: Criterion) -> Calibration:
    if ctx.calibration is None:
        raise CalibrationError(
            f"criterion {crit.name!r} is data-driven: pass calibration= (from "
            "calibrate(model, loader, loss_fn) or a `with Calibration(model, graph)` block "
            "in which you ran forward and backward passes); data-free criteria: "
            f"{available_criteria(data_driven=False)}"
        )
    return ctx.calibration


# ---------------------------------------------------------------------------- registry

CRITERIA: dict[str, Criterion] = {}

T = TypeVar("T", bound="Criterion | type[Criterion]")


def register_criterion(criterion: T, *, replace: bool = False) -> T:
    """Add a criterion (an instance, or a class with a no-argument constructor).

    Usable as a class decorator. Raises `UnknownCriterionError` when the object is not a
    named `Criterion`, or when the name is taken and ``replace`` is false.
    """
    inst = criterion() if isinstance(criterion, type) else criterion
    if not isinstance(inst, Criterion) or not inst.name:
        raise UnknownCriterionError("a criterion must subclass Criterion and set a name")
    if inst.name in CRITERIA and not replace:
        raise UnknownCriterionError(
            f"criterion {inst.name!r} is already registered; pass replace=True to override"
        )
    CRITERIA[inst.name] = inst
    return criterion


def available_criteria(data_driven: bool | None = None) -> list[str]:
    """Registered criterion names (all, only data-driven, or only data-free)."""
    return sorted(
        n for n, c in CRITERIA.items() if data_driven is None or c.data_driven == data_driven
    )


def get_criterion(criterion: str | Criterion) -> Criterion:
    """Look a criterion up by name; `UnknownCriterionError` lists the registered ones."""
    if isinstance(criterion, Criterion):
        return criterion
    found = CRITERIA.get(criterion) if isinstance(criterion, str) else None
    if found is None:
        raise UnknownCriterionError(
            f"unknown importance criterion {criterion!r}; registered: data-free "
            f"{available_criteria(False)}, data-driven {available_criteria(True)} "
            "(add your own with register_criterion)"
        )
    return found


for _cls in (
    L1,
    L2,
    FPGM,
    BNScale,
    Random,
    Taylor,
    TaylorWeight,
    APoZ,
    MeanActivation,
    Fisher,
    Sensitivity,
):
    register_criterion(_cls)
