"""The operator's bounds on one job, checked before it costs anything.

`check_spec` bounds what the spec asks for directly (trials, fine-tune steps, image size).
`check_params` and `check_memory` bound the model: at submit on the ``meta`` device (no
memory used), and again in the job runner on the real model, which also covers models only
the runner can build (uploads, factories that cannot run on ``meta``).

The memory estimate is deliberately simple, per evaluator process (each holds the model)::

    4 x weight bytes   the original model, a pruned candidate, its gradients and the SGD
                       momentum buffer (candidates are never larger than the original)
  + per-sample activation bytes x max(dataset.batch_size, latency batch size)

where the activation bytes are the sizes of every tensor the forward pass creates (views
and in-place results excluded), measured on a small batch and divided per sample: about
what autograd keeps for the backward pass. It is meant to refuse jobs out of proportion
to the server (a 150 GB model, 4096 x 4096 batches), not to predict the peak.

Every refusal is a 422 naming the limit, the value and the setting that raises it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from prunepilot.schemas import JobSpec

from ._settings import Settings
from .errors import InvalidSpecError

__all__ = [
    "Footprint",
    "MeasureMemory",
    "check_memory",
    "check_params",
    "check_spec",
    "count_params",
    "memory_estimate",
]

_WEIGHT_COPIES = 4


@dataclass(frozen=True)
class Footprint:
    """What one forward pass of a model costs.

    Attributes:
        params: parameters of the model.
        weight_bytes: bytes of its parameters and buffers.
        activation_bytes_per_sample: bytes of the tensors its forward creates, per sample.
    """

    params: int
    weight_bytes: int
    activation_bytes_per_sample: int


class MeasureMemory(TorchDispatchMode):
    """Sums the bytes of every new tensor the ops run under it create (meta or real).

    Outputs that alias an input (views, in-place ops) are not counted: they add no memory.
    """

    def __init__(self) -> None:
        super().__init__()
        self.bytes = 0

    def __torch_dispatch__(
        self,
        func: Any,
        types: Any,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Any:
        out = func(*args, **(kwargs or {}))
        if not any(r.alias_info is not None for r in func._schema.returns):
            for t in tree_leaves(out):
                if isinstance(t, torch.Tensor):
                    self.bytes += t.numel() * t.element_size()
        return out

    def footprint(self, model: nn.Module, batch: int) -> Footprint:
        """The model's footprint, given that the measured forward ran on ``batch`` samples."""
        tensors = [*model.parameters(), *model.buffers()]
        return Footprint(
            params=count_params(model),
            weight_bytes=sum(t.numel() * t.element_size() for t in tensors),
            activation_bytes_per_sample=-(-self.bytes // max(batch, 1)),
        )


def count_params(model: nn.Module) -> int:
    """Parameters of ``model`` (shared ones once)."""
    return sum(p.numel() for p in model.parameters())


def _over(what: str, value: int, limit: int, setting: str, fix: str) -> InvalidSpecError:
    return InvalidSpecError(
        f"{what}={value} is over this server's limit of {limit} "
        f"(PRUNEPILOT_{setting.upper()}); {fix}"
    )


def check_spec(spec: JobSpec, settings: Settings) -> None:
    """Refuse a spec asking for more trials, steps or a larger image size than allowed.

    Raises:
        InvalidSpecError: the first bound exceeded, named with its value and setting.
    """
    fewer_steps = "ask for fewer steps"
    bounds = [
        ("search.trials", spec.search.trials, "max_trials", "ask for fewer trials"),
        ("finetune.steps", spec.finetune.steps, "max_finetune_steps", fewer_steps),
        ("search.score_steps", spec.search.score_steps, "max_finetune_steps", fewer_steps),
        ("dataset.image_size", spec.dataset.image_size, "max_image_size", "use smaller images"),
    ]
    for field, value, setting, fix in bounds:
        limit = getattr(settings, setting)
        if value is not None and value > limit:
            raise _over(field, value, limit, setting, fix)


def check_params(params: int, spec: JobSpec, settings: Settings) -> None:
    """Refuse a model with more parameters than allowed.

    Raises:
        InvalidSpecError: naming the count, the limit and ``PRUNEPILOT_MAX_MODEL_PARAMS``.
    """
    if params > settings.max_model_params:
        raise InvalidSpecError(
            f"model {spec.model.source} has {params:,} parameters, over this server's limit "
            f"of {settings.max_model_params:,} (PRUNEPILOT_MAX_MODEL_PARAMS); use a smaller "
            "model (e.g. smaller width kwargs)"
        )


def memory_estimate(fp: Footprint, spec: JobSpec) -> tuple[int, int, int]:
    """``(total, weights part, activations part)`` in bytes; see the module docstring."""
    batch = max(spec.dataset.batch_size, spec.constraints.target.batch_size)
    weights = _WEIGHT_COPIES * fp.weight_bytes
    activations = fp.activation_bytes_per_sample * batch
    return weights + activations, weights, activations


def check_memory(fp: Footprint, spec: JobSpec, settings: Settings) -> None:
    """Refuse a job whose estimated memory per evaluator is over the limit.

    Raises:
        InvalidSpecError: naming the estimate (and its parts), the limit and
            ``PRUNEPILOT_MAX_JOB_MEMORY_BYTES``.
    """
    total, weights, activations = memory_estimate(fp, spec)
    if total > settings.max_job_memory_bytes:
        batch = max(spec.dataset.batch_size, spec.constraints.target.batch_size)
        raise InvalidSpecError(
            f"the job needs an estimated {_size(total)} of memory per evaluator "
            f"({_size(weights)} for weights, gradients and optimizer state, "
            f"{_size(activations)} for the activations of a batch of {batch}), over this "
            f"server's limit of {_size(settings.max_job_memory_bytes)} "
            f"(PRUNEPILOT_MAX_JOB_MEMORY_BYTES={settings.max_job_memory_bytes}); use a smaller "
            "model, dataset.batch_size or image size"
        )


def _size(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    value = float(n)
    for unit in ("KiB", "MiB", "GiB", "TiB"):
        value /= 1024
        if value < 1024 or unit == "TiB":
            break
    return f"{value:.1f} {unit}"
