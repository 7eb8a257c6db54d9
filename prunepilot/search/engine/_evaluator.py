"""What evaluating a candidate means, run in-process.

A `Workload` bundles everything a worker needs once per job (model, graph, scores, data,
settings); an `Evaluator` built from it prunes a copy of the model for each config and
scores it cheaply (adaptive BatchNorm, optional short fine-tune, metric on a held-out
split: EagleEye), gives it a rung of successive halving (a short fine-tune with the
finalists' recipe), measures its latency, or fine-tunes it with the full budget. The Ray
workers in `prunepilot.worker` wrap exactly this class.
"""

from __future__ import annotations

import copy
import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from prunepilot.core import ChannelGraph, PrunepilotError, prune_channels
from prunepilot.schemas import FinetuneSettings, LatencyTarget, SearchSettings, SearchSpace

from ..importance._calibration import calibrate
from ..importance._criteria import get_criterion
from ..importance._scoring import Scores, score_channels
from ..latency._measure import LatencyStats, local_device, measure_latency, measure_relative
from ..latency._model import LatencyModel
from ..recovery._bn import recalibrate_bn
from ..recovery._finetune import LossFn, Trainer, evaluate
from ._space import Space

__all__ = [
    "Evaluation",
    "Evaluator",
    "Finetuned",
    "Limited",
    "Metric",
    "SearchData",
    "Workload",
    "top1",
]

log = logging.getLogger("prunepilot.search")

_MAX_FIXED_BATCHES = 256
_MAX_FIXED_BYTES = 1 << 30


def _nbytes(batch: Any) -> int:
    """Bytes of the tensors in a batch (nested tuples, lists and dicts)."""
    if isinstance(batch, torch.Tensor):
        return batch.element_size() * batch.nelement()
    if isinstance(batch, Mapping):
        return sum(_nbytes(v) for v in batch.values())
    if isinstance(batch, (tuple, list)):
        return sum(_nbytes(v) for v in batch)
    return 0


Metric = Callable[[nn.Module, Iterable[Any]], float]
"""``metric(model, loader) -> float``, higher is better; the model is in eval mode."""


def top1(model: nn.Module, loader: Iterable[Any]) -> float:
    """Top-1 accuracy (fraction) of ``model`` on ``loader``."""
    return evaluate(model, loader).top1


class Limited:
    """A re-iterable view of the first ``n`` batches of a loader (all when ``n`` is None)."""

    def __init__(self, loader: Iterable[Any], n: int | None) -> None:
        self.loader, self.n = loader, n

    def __iter__(self) -> Iterator[Any]:
        return iter(itertools.islice(self.loader, self.n))


@dataclass
class SearchData:
    """The job's data, as re-iterable loaders of ``(inputs, targets)`` batches.

    Attributes:
        train: fine-tuning, importance calibration and BatchNorm recalibration.
        val: the validation split the finalists are chosen on.
        score: the held-out split candidates are scored on during the search (default:
            the first ``score_batches`` of ``val``).
    """

    train: Iterable[Any]
    val: Iterable[Any]
    score: Iterable[Any] | None = None


@dataclass
class Workload:
    """Everything a worker needs, shipped once per job.

    ``scores`` is ``None`` while a data-driven criterion's channel scores are still to be
    computed: an evaluator computes them (`Evaluator.channel_scores`, on its own device)
    and the driver ships the workload again with them.
    """

    model: nn.Module
    example_inputs: Any
    graph: ChannelGraph
    scores: Scores | None
    space: SearchSpace
    settings: SearchSettings
    finetune: FinetuneSettings
    data: SearchData
    metric: Metric | None = None
    loss_fn: LossFn | None = None


@dataclass(frozen=True)
class Evaluation:
    """A scored candidate (``steps``: optimizer steps it trained before scoring)."""

    score: float
    seconds: float
    steps: int = 0


@dataclass
class Finetuned:
    """A fine-tuned finalist: its validation metric and weights (on CPU)."""

    score: float
    seconds: float
    steps: int
    state: dict[str, torch.Tensor] = field(repr=False)


class Evaluator:
    """Evaluates candidates of one workload on one device.

    Args:
        work: the job's workload.
        device: where candidates run (``cpu``, ``cuda``: this process's own GPU, ``cuda:N``).
        threads: CPU threads for this evaluator's work (``None``: leave torch's setting).
    """

    def __init__(self, work: Workload, device: str = "cpu", threads: int | None = None) -> None:
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise PrunepilotError(f"evaluator device {device!r} requested but CUDA is unavailable")
        if threads is not None:
            torch.set_num_threads(threads)
        self.work = work
        self.device = local_device(device)
        self.model = work.model.to("cpu").eval()
        self._space = (
            None if work.scores is None else Space(self.model, work.graph, work.scores, work.space)
        )
        self.metric: Metric = work.metric or top1
        score_loader = work.data.score if work.data.score is not None else work.data.val
        self.score_loader = Limited(score_loader, work.settings.score_batches)
        self._batches: dict[str, list[Any]] = {}
        self._teacher: nn.Module | None = None

    def _fixed(self, name: str, n: int) -> Iterable[Any]:
        """The first ``n`` training batches, drawn once and reused for every candidate.

        Every candidate then sees the same data in the same order, so score differences
        come from the configs, not from the loader's shuffling or augmentation. Beyond
        ``_MAX_FIXED_BATCHES`` batches or ``_MAX_FIXED_BYTES`` of tensors, the loader
        itself is used (memory over repeatability).
        """
        key = f"{name}:{n}"
        if n > _MAX_FIXED_BATCHES:
            return self.work.data.train
        if key not in self._batches:
            out: list[Any] = []
            size = 0
            for batch in itertools.islice(iter(self.work.data.train), n):
                size += _nbytes(batch)
                if size > _MAX_FIXED_BYTES:
                    log.info("%d %s batches exceed %d bytes; using the loader", n, name, size)
                    return self.work.data.train
                out.append(batch)
            self._batches[key] = out
        return self._batches[key]

    @property
    def space(self) -> Space:
        """The search space (configs to plans); needs the workload's channel scores."""
        if self._space is None:
            raise PrunepilotError("this workload has no channel scores yet: run channel_scores")
        return self._space

    def channel_scores(self) -> Scores:
        """Channel scores of the workload's criterion, calibrated on this evaluator's device.

        Data-driven criteria need forward/backward passes over ``calib_batches`` training
        batches: heavy work that belongs on a worker (its GPU when it has one), not on the
        job's driver.
        """
        s = self.work.settings
        crit = get_criterion(s.criterion)
        model = copy.deepcopy(self.model).to(self.device)
        calibration = None
        if crit.data_driven:
            calibration = calibrate(
                model,
                Limited(self.work.data.train, s.calib_batches),
                self.work.loss_fn or F.cross_entropy,
                steps=s.calib_batches,
                graph=self.work.graph,
                criteria=[crit.name],
            )
        model.to("cpu")  # the statistics are on the CPU already; score there
        return score_channels(model, self.work.graph, crit, calibration=calibration)

    def candidate(self, config: Mapping[str, float] | None) -> nn.Module:
        """A pruned copy of the model for ``config`` (the original for ``None``), on device."""
        model = copy.deepcopy(self.model)
        if config is not None:
            plan = self.space.plan(self.space.check(config))
            if plan:
                prune_channels(model, self.work.graph, plan)
        return model.to(self.device)

    def _score(self, model: nn.Module) -> float:
        model.eval()
        with torch.no_grad():
            return float(self.metric(model, self.score_loader))

    def evaluate(self, config: Mapping[str, float]) -> Evaluation:
        """Cheap score: prune, recalibrate BatchNorm, optionally a few steps, metric."""
        return self._trained(config, "score", self.work.settings.score_steps, distill=False)

    def probe(self, config: Mapping[str, float], steps: int) -> Evaluation:
        """A rung of successive halving: a short fine-tune with the finalists' recipe
        (distillation included), then the metric on the held-out split.

        Every candidate trains on the same batches in the same order from the same seed,
        so differences between their scores come from the configs.
        """
        return self._trained(config, "probe", steps, distill=self.work.finetune.distill)

    def _trained(
        self, config: Mapping[str, float], batches: str, steps: int, *, distill: bool
    ) -> Evaluation:
        """Prune, recalibrate BatchNorm, train ``steps`` on fixed batches, score."""
        t0 = time.perf_counter()
        s, ft = self.work.settings, self.work.finetune
        model = self.candidate(config)
        if s.bn_batches:
            recalibrate_bn(model, self._fixed("bn", s.bn_batches), steps=s.bn_batches)
        done = 0
        if steps:
            torch.manual_seed(s.seed)
            trainer = Trainer(
                model,
                lr=ft.lr,
                momentum=ft.momentum,
                weight_decay=ft.weight_decay,
                loss_fn=self.work.loss_fn,
                device=self.device,
                teacher=self.teacher() if distill else None,
            )
            done = trainer.fit(self._fixed(batches, steps), epochs=None, max_steps=steps).steps
        return Evaluation(self._score(model), time.perf_counter() - t0, done)

    def teacher(self) -> nn.Module:
        """The unpruned model on this evaluator's device (distillation's teacher)."""
        if self._teacher is None:
            self._teacher = copy.deepcopy(self.model).to(self.device).eval()
        return self._teacher

    def measure(
        self,
        config: Mapping[str, float] | None,
        target: LatencyTarget,
        repeats: int | None = None,
    ) -> LatencyStats:
        """Latency of the candidate on ``target`` (the caller ensures nothing else runs)."""
        model = self.candidate(config).to("cpu")
        return measure_latency(
            model, self.work.example_inputs, target, repeats=repeats or target.repeats
        )

    def measure_anchored(
        self,
        config: Mapping[str, float] | None,
        target: LatencyTarget,
        repeats: int | None = None,
    ) -> tuple[LatencyStats, LatencyStats]:
        """The candidate's and the original model's latency, timed in alternating rounds."""
        model = self.candidate(config).to("cpu")
        return measure_relative(
            model, self.model, self.work.example_inputs, target, repeats=repeats or target.repeats
        )

    def latency_model(self, target: LatencyTarget, keep_ratios: Sequence[float]) -> LatencyModel:
        """Measure the per-layer latency table of this model on ``target``."""
        return LatencyModel.build(
            self.model, self.work.graph, self.work.example_inputs, target, keep_ratios=keep_ratios
        )

    def finetune(
        self, config: Mapping[str, float] | None, settings: FinetuneSettings | None = None
    ) -> Finetuned:
        """Fine-tune the candidate with the full budget; return its validation metric."""
        t0 = time.perf_counter()
        ft = settings or self.work.finetune
        device = torch.device(ft.device) if ft.device else self.device
        model = self.candidate(config).to(device)
        if self.work.settings.bn_batches:
            recalibrate_bn(model, self.work.data.train, steps=self.work.settings.bn_batches)
        steps = 0
        if ft.steps:
            teacher = copy.deepcopy(self.model) if ft.distill else None
            trainer = Trainer(
                model,
                lr=ft.lr,
                momentum=ft.momentum,
                weight_decay=ft.weight_decay,
                loss_fn=self.work.loss_fn,
                device=device,
                teacher=teacher,
            )
            steps = trainer.fit(self.work.data.train, epochs=None, max_steps=ft.steps).steps
        model.eval()
        with torch.no_grad():
            score = float(self.metric(model, self.work.data.val))
        state = {k: v.detach().to("cpu").clone() for k, v in model.state_dict().items()}
        return Finetuned(score, time.perf_counter() - t0, steps, state)
