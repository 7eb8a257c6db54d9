"""Fine-tuning utilities: a supervised loop that survives pruning steps.

`Trainer` owns a model and its optimizer; `Trainer.prune` removes channels through
`prunepilot.core.prune_channels` and slices the optimizer state with them, so momentum
and Adam moments carry across pruning steps. It supports cross-entropy (or any loss),
top-1 evaluation, knowledge distillation from a teacher (e.g. the unpruned model), early
stopping on a validation loader, CPU and CUDA, and reports progress through a callback.
"""

from __future__ import annotations

import copy
import itertools
import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sized
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from prunepilot.core import ChannelGraph, PrunepilotError, prune_channels

from .._batches import call_model, model_device, split_batch, to_device

__all__ = [
    "EvalResult",
    "FitResult",
    "Progress",
    "ProgressCallback",
    "Trainer",
    "distillation_loss",
    "evaluate",
]

log = logging.getLogger("prunepilot.search")

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class Progress:
    """One progress report.

    Attributes:
        stage: ``train``, ``eval``, ``schedule`` or ``netadapt``.
        step: the step (train) or iteration (schedule, netadapt) just finished.
        total: the planned number of steps/iterations, when known.
        epoch: the epoch (train) or 0.
        loss: mean training loss since the last report, if any.
        metric: a top-1 accuracy or proposal score, if any.
        info: stage-specific details (MACs, chosen group, ...).
    """

    stage: str
    step: int
    total: int | None = None
    epoch: int = 0
    loss: float | None = None
    metric: float | None = None
    info: Mapping[str, Any] = field(default_factory=dict)


ProgressCallback = Callable[[Progress], None]


@dataclass(frozen=True)
class EvalResult:
    """Mean loss and top-1 accuracy (fraction) over ``samples`` samples."""

    loss: float
    top1: float
    samples: int


@dataclass
class FitResult:
    """What `Trainer.fit` did."""

    steps: int
    stopped_early: bool = False
    best: EvalResult | None = None
    history: list[EvalResult] = field(default_factory=list)
    train_loss: float = math.nan


def evaluate(
    model: nn.Module,
    loader: Iterable[Any],
    *,
    loss_fn: LossFn | None = None,
    device: torch.device | str | None = None,
    max_batches: int | None = None,
) -> EvalResult:
    """Mean loss and top-1 accuracy in eval mode without gradients (mode restored)."""
    loss_fn = loss_fn or F.cross_entropy
    dev = torch.device(device) if device is not None else model_device(model)
    was = model.training
    model.eval()
    total, correct, loss_sum = 0, 0, 0.0
    try:
        with torch.no_grad():
            for batch in itertools.islice(loader, max_batches):
                x, y = (to_device(t, dev) for t in split_batch(batch))
                out = call_model(model, x)
                n = int(y.shape[0])
                loss_sum += float(loss_fn(out, y)) * n
                correct += int((out.argmax(1) == y).sum())
                total += n
    finally:
        model.train(was)
    if total == 0:
        raise PrunepilotError("evaluate: the loader yielded no samples")
    return EvalResult(loss_sum / total, correct / total, total)


def distillation_loss(
    student: torch.Tensor,
    teacher: torch.Tensor,
    targets: torch.Tensor,
    *,
    alpha: float = 0.5,
    temperature: float = 4.0,
    loss_fn: LossFn | None = None,
) -> torch.Tensor:
    """Hinton et al. knowledge distillation: ``alpha`` T² KL(teacher‖student) + rest CE."""
    hard = (loss_fn or F.cross_entropy)(student, targets)
    if alpha <= 0:
        return hard
    t = temperature
    soft = F.kl_div(
        F.log_softmax(student / t, dim=1),
        F.log_softmax(teacher / t, dim=1),
        reduction="batchmean",
        log_target=True,
    ) * (t * t)
    return alpha * soft + (1 - alpha) * hard


class Trainer:
    """A supervised fine-tuning loop whose optimizer state survives pruning.

    Args:
        model: the model to train (moved to ``device``).
        optimizer: an optimizer over ``model``'s parameters; default SGD with the
            arguments below.
        lr: SGD learning rate (the peak of the cosine schedule in `fit`).
        momentum: SGD momentum.
        weight_decay: SGD weight decay.
        loss_fn: ``loss_fn(logits, targets)``; default cross-entropy.
        device: ``"cpu"``, ``"cuda"``, ...; default the model's device.
        teacher: a model to distil from (e.g. a copy of the unpruned model); frozen.
        kd_alpha: weight of the distillation term.
        kd_temperature: softmax temperature for distillation.
        callback: receives a `Progress` every ``log_every`` steps and after evaluations.
        log_every: steps between training progress reports.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        optimizer: torch.optim.Optimizer | None = None,
        lr: float = 0.01,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        loss_fn: LossFn | None = None,
        device: torch.device | str | None = None,
        teacher: nn.Module | None = None,
        kd_alpha: float = 0.5,
        kd_temperature: float = 4.0,
        callback: ProgressCallback | None = None,
        log_every: int = 50,
    ) -> None:
        self.device = torch.device(device) if device is not None else model_device(model)
        if self.device.type == "cuda" and not torch.cuda.is_available():
            raise PrunepilotError("device 'cuda' was requested but CUDA is not available")
        self.model = model.to(self.device)
        self.optimizer = optimizer or torch.optim.SGD(
            model.parameters(),
            lr=lr,
            momentum=momentum,
            weight_decay=weight_decay,
            nesterov=momentum > 0,
        )
        self.loss_fn: LossFn = loss_fn or F.cross_entropy
        self.teacher = teacher.to(self.device).eval() if teacher is not None else None
        if self.teacher is not None:
            for p in self.teacher.parameters():
                p.requires_grad_(False)
        self.kd_alpha = kd_alpha
        self.kd_temperature = kd_temperature
        self.callback = callback
        self.log_every = max(1, log_every)
        self.steps_done = 0

    def prune(self, graph: ChannelGraph, plan: Mapping[str, list[int]]) -> None:
        """Remove ``plan``'s channels from the model and slice the optimizer state with them."""
        prune_channels(self.model, graph, plan, optimizer=self.optimizer)

    def loss(self, inputs: Any, targets: torch.Tensor) -> torch.Tensor:
        """The training loss of one batch (with distillation when a teacher is set)."""
        out = call_model(self.model, inputs)
        if self.teacher is None:
            return self.loss_fn(out, targets)
        with torch.no_grad():
            t_out = call_model(self.teacher, inputs)
        return distillation_loss(
            out,
            t_out,
            targets,
            alpha=self.kd_alpha,
            temperature=self.kd_temperature,
            loss_fn=self.loss_fn,
        )

    def evaluate(self, loader: Iterable[Any], max_batches: int | None = None) -> EvalResult:
        """`evaluate` the model on ``loader`` with this trainer's loss and device."""
        return evaluate(
            self.model, loader, loss_fn=self.loss_fn, device=self.device, max_batches=max_batches
        )

    def fit(
        self,
        loader: Iterable[Any],
        *,
        epochs: int | None = 1,
        max_steps: int | None = None,
        val_loader: Iterable[Any] | None = None,
        eval_every: int | None = None,
        patience: int | None = None,
        min_delta: float = 0.0,
        restore_best: bool = True,
        schedule: Literal["cosine", "constant"] = "cosine",
    ) -> FitResult:
        """Train until ``epochs`` passes over ``loader`` or ``max_steps`` steps, whichever first.

        Args:
            loader: yields ``(inputs, targets)``; iterated once per epoch.
            epochs: passes over the loader (``None``: unlimited, needs ``max_steps``).
            max_steps: stop after this many steps.
            val_loader: evaluated every ``eval_every`` steps (default: after each epoch).
            eval_every: steps between evaluations.
            patience: stop after this many evaluations without a top-1 gain above
                ``min_delta`` (early stopping; needs ``val_loader``).
            min_delta: the smallest top-1 gain that counts as an improvement.
            restore_best: when a ``val_loader`` is given, finish with the weights of the
                best evaluation.
            schedule: ``cosine`` decays the learning rate to 0 over the planned steps;
                the optimizer's learning rates are restored afterwards.
        """
        if epochs is None and not max_steps:
            raise PrunepilotError("fit needs epochs or max_steps")
        if epochs is not None and epochs < 1:
            raise PrunepilotError(f"epochs must be >= 1; got {epochs}")
        if patience is not None and val_loader is None:
            raise PrunepilotError("early stopping (patience=) needs a val_loader")
        planned: int | None = None
        if epochs is not None and isinstance(loader, Sized):
            planned = len(loader) * epochs
        if max_steps is not None:
            planned = min(planned, max_steps) if planned is not None else max_steps
        base = [g["lr"] for g in self.optimizer.param_groups]
        result = FitResult(steps=0)
        best_state: dict[str, torch.Tensor] | None = None
        bad = 0
        running, running_n, loss_total = 0.0, 0, 0.0

        def check(epoch: int) -> bool:
            nonlocal best_state, bad
            assert val_loader is not None
            stop, best_state, bad = self._check(
                val_loader, result, epoch, best_state, bad, patience, min_delta
            )
            result.stopped_early = stop
            return stop

        self.model.train()
        try:
            epoch = 0
            while epochs is None or epoch < epochs:
                seen = 0
                for batch in loader:
                    if max_steps is not None and result.steps >= max_steps:
                        break
                    seen += 1
                    if schedule == "cosine" and planned:
                        f = 0.5 * (1 + math.cos(math.pi * result.steps / planned))
                        for g, b in zip(self.optimizer.param_groups, base, strict=True):
                            g["lr"] = b * f
                    x, y = (to_device(t, self.device) for t in split_batch(batch))
                    loss = self.loss(x, y)
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    self.optimizer.step()
                    result.steps += 1
                    self.steps_done += 1
                    v = float(loss.detach())
                    running, running_n, loss_total = running + v, running_n + 1, loss_total + v
                    if self.callback and result.steps % self.log_every == 0:
                        self.callback(
                            Progress(
                                "train", result.steps, planned, epoch, loss=running / running_n
                            )
                        )
                        running, running_n = 0.0, 0
                    if (
                        val_loader is not None
                        and eval_every is not None
                        and result.steps % eval_every == 0
                        and check(epoch)
                    ):
                        return result
                epoch += 1
                if seen == 0 or (max_steps is not None and result.steps >= max_steps):
                    break
                if val_loader is not None and eval_every is None and check(epoch - 1):
                    return result
            return result
        finally:
            for g, b in zip(self.optimizer.param_groups, base, strict=True):
                g["lr"] = b
            if restore_best and best_state is not None:
                self.model.load_state_dict(best_state)
            result.train_loss = loss_total / max(result.steps, 1)
            self.model.train()

    def _check(
        self,
        val_loader: Iterable[Any],
        result: FitResult,
        epoch: int,
        best_state: dict[str, torch.Tensor] | None,
        bad_evals: int,
        patience: int | None,
        min_delta: float,
    ) -> tuple[bool, dict[str, torch.Tensor] | None, int]:
        ev = self.evaluate(val_loader)
        result.history.append(ev)
        if self.callback:
            self.callback(Progress("eval", result.steps, None, epoch, loss=ev.loss, metric=ev.top1))
        self.model.train()
        if result.best is None or ev.top1 > result.best.top1 + min_delta:
            result.best = ev
            best_state = copy.deepcopy(self.model.state_dict())
            bad_evals = 0
        else:
            bad_evals += 1
        stop = patience is not None and bad_evals >= patience
        if stop:
            log.info("early stop after %d steps (best top-1 %.4f)", result.steps, result.best.top1)
        return stop, best_state, bad_evals
