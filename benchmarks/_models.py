"""Shared model list, builders and result-file helpers for the benchmark scripts.

Every model is built with random initialisation (``weights=None`` / ``pretrained=False``);
nothing is ever downloaded. Models are named ``tv:<name>`` (torchvision) or ``timm:<name>``.
Each :class:`ModelSpec` knows how to build its model and a small but valid set of example
inputs, given as a tuple of positional arguments (the model is called as ``model(*args)``).
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

__all__ = [
    "RESULTS_PATH",
    "SEED_MODELS",
    "SMALL_MODELS",
    "ModelSpec",
    "all_specs",
    "append_results",
    "machine_info",
    "resolve_names",
]

BENCH_DIR = Path(__file__).resolve().parent
RESULTS_PATH = BENCH_DIR / "RESULTS.md"

#: Quick list for ``--small``: small, fast models covering plain residual nets, depthwise +
#: squeeze-excite, channel shuffle, grouped convs, fire-module concatenation, LayerNorm over
#: channels (value check skipped) and a dict-output segmentation model.
SMALL_MODELS: tuple[str, ...] = (
    "tv:resnet18",
    "tv:mobilenet_v3_small",
    "tv:shufflenet_v2_x0_5",
    "tv:regnet_x_400mf",
    "tv:squeezenet1_1",
    "timm:convnextv2_atto",
    "tv:lraspp_mobilenet_v3_large",
)

#: ``--seeds``: the models the first seed document (ENOT's pruning docs) lists as supported.
SEED_MODELS: tuple[str, ...] = (
    "tv:efficientnet_b0",
    "tv:resnet18",
    "tv:resnet34",
    "tv:resnet50",
    "tv:wide_resnet50_2",
    "tv:densenet161",
    "tv:mobilenet_v2",
    "tv:mobilenet_v3_large",
    "tv:ssd300_vgg16",
    "tv:ssdlite320_mobilenet_v3_large",
    "tv:fcn_resnet50",
    "tv:fcn_resnet101",
    "tv:deeplabv3_resnet50",
    "tv:deeplabv3_resnet101",
    "tv:deeplabv3_mobilenet_v3_large",
    "tv:lraspp_mobilenet_v3_large",
    "timm:efficientnet_b0",
    "timm:resnet18",
    "timm:resnet34",
    "timm:resnet50",
    "timm:wide_resnet50_2",
    "timm:densenet161",
    "timm:mobilenetv2_100",
    "timm:mobilenetv3_large_100",
)

TIMM_MODELS: tuple[str, ...] = (
    "efficientnet_b0",
    "resnet18",
    "resnet34",
    "resnet50",
    "wide_resnet50_2",
    "densenet161",
    "mobilenetv2_100",
    "mobilenetv3_large_100",
    "vit_tiny_patch16_224",
    "deit_small_patch16_224",
    "swin_tiny_patch4_window7_224",
    "convnext_tiny",
    "convnextv2_atto",
)

# Classification input side length: 128 unless the architecture needs a fixed/larger size.
_DEFAULT_SIDE = 128
_FIXED_224 = re.compile(r"^(vit_|swin_|maxvit_|deit_)")

# Detection models that resize internally (GeneralizedRCNNTransform): keep them at 320 px.
_RESIZING_DETECTORS = re.compile(r"^(fasterrcnn_|maskrcnn_|keypointrcnn_|retinanet_|fcos_)")


@dataclass(frozen=True)
class ModelSpec:
    """One benchmark model.

    Attributes:
        source: ``"tv"`` (torchvision) or ``"timm"``.
        arch: architecture name inside its source library.
        task: ``classification``, ``detection``, ``segmentation``, ``optical_flow`` or
            ``video``.
    """

    source: str
    arch: str
    task: str

    @property
    def name(self) -> str:
        """The table name, e.g. ``tv:resnet18``."""
        return f"{self.source}:{self.arch}"

    @property
    def num_classes(self) -> int:
        """Number of output classes of the model's classifier head(s)."""
        if self.task == "segmentation":
            return 21
        if self.task == "video":
            return 400
        if self.task == "detection":
            return 2 if self.arch.startswith("keypointrcnn") else 91
        return 1000

    def build(self) -> nn.Module:
        """Builds the model with random weights, in eval mode.

        Returns:
            The freshly initialised model.
        """
        if self.source == "timm":
            import timm

            model: nn.Module = timm.create_model(self.arch, pretrained=False)
        else:
            import torchvision

            kwargs: dict[str, Any] = {"weights": None}
            if self.task in ("detection", "segmentation"):
                kwargs["weights_backbone"] = None
            if _RESIZING_DETECTORS.match(self.arch):
                kwargs.update(min_size=320, max_size=320)
            if self.arch in ("googlenet", "inception_v3"):
                # Torch-Pruning's torchvision example builds these without aux heads; the aux
                # heads are unused in eval mode anyway. Both tools get the same model.
                kwargs.update(aux_logits=False, init_weights=True)
            model = torchvision.models.get_model(self.arch, **kwargs)
        return model.eval()

    def example_inputs(self) -> tuple[Any, ...]:
        """Small but valid example inputs, as positional arguments.

        Returns:
            A tuple ``args`` such that ``model(*args)`` runs the model.
        """
        if self.task == "detection":
            return ([torch.rand(3, 320, 320)],)
        if self.task == "segmentation":
            return (torch.randn(1, 3, 224, 224),)
        if self.task == "optical_flow":
            return (torch.randn(1, 3, 128, 128), torch.randn(1, 3, 128, 128))
        if self.task == "video":
            if self.arch in ("s3d", "mvit_v1_b", "mvit_v2_s"):
                return (torch.randn(1, 3, 16, 224, 224),)
            return (torch.randn(1, 3, 8, 112, 112),)
        side = 224 if _FIXED_224.match(self.arch) else _DEFAULT_SIDE
        return (torch.randn(1, 3, side, side),)


def all_specs() -> list[ModelSpec]:
    """The full coverage model list, in table order.

    Returns:
        torchvision classification, detection, segmentation, optical-flow and video models,
        followed by the timm models.
    """
    import torchvision.models as tvm

    modules = (
        ("classification", tvm),
        ("detection", tvm.detection),
        ("segmentation", tvm.segmentation),
        ("optical_flow", tvm.optical_flow),
        ("video", tvm.video),
    )
    specs: list[ModelSpec] = []
    for task, module in modules:
        specs.extend(ModelSpec("tv", n, task) for n in tvm.list_models(module=module))
    specs.extend(ModelSpec("timm", n, "classification") for n in TIMM_MODELS)
    return specs


def resolve_names(names: list[str], specs: list[ModelSpec]) -> list[ModelSpec]:
    """Maps user-given names to specs.

    Args:
        names: ``tv:resnet18``-style names, or bare architecture names (matching every source
            that has it).
        specs: the specs to choose from.

    Returns:
        The matching specs, in the order given.

    Raises:
        SystemExit: if a name matches nothing.
    """
    out: list[ModelSpec] = []
    for name in names:
        hits = [s for s in specs if name in (s.name, s.arch)]
        if not hits:
            raise SystemExit(f"unknown model {name!r} (use e.g. tv:resnet18 or timm:resnet18)")
        out.extend(h for h in hits if h not in out)
    return out


# --------------------------------------------------------------------------------------------
# Results-file helpers
# --------------------------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return ""


def machine_info() -> str:
    """A one-line description of this machine for the results file.

    Returns:
        Processor (``platform.processor()``, with the ``/proc/cpuinfo`` model name when that
        is more informative), core count, GPU if any, torch version and OS.
    """
    proc = platform.processor() or platform.machine()
    cpu = _cpu_model()
    if cpu and cpu != proc:
        proc = f"{proc} ({cpu})" if proc else cpu
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (
        f"{proc}, {os.cpu_count()} cores, {gpu}, torch {torch.__version__}, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}"
    )


def command_line() -> str:
    """The exact command line this process was started with.

    Returns:
        ``sys.orig_argv`` shell-quoted (interpreter included).
    """
    return shlex.join(sys.orig_argv)


def append_results(script: str, body: str, path: Path = RESULTS_PATH) -> None:
    """Appends a dated section to ``benchmarks/RESULTS.md`` (creating the file if needed).

    Existing sections are never modified.

    Args:
        script: script name used in the section heading, e.g. ``coverage.py``.
        body: markdown table and summary lines.
        path: results file.
    """
    now = _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    section = (
        f"## {script} ({now})\n\n"
        f"- date: {now}\n"
        f"- machine: {machine_info()}\n"
        f"- command: `{command_line()}`\n\n"
        f"{body.rstrip()}\n"
    )
    if path.exists():
        text = path.read_text()
        sep = "" if text.endswith("\n\n") else ("\n" if text.endswith("\n") else "\n\n")
        path.write_text(text + sep + section)
    else:
        path.write_text("# Benchmark results\n\n" + section)


def md_escape(text: str) -> str:
    """Makes ``text`` safe inside a markdown table cell.

    Args:
        text: any text (error messages may contain pipes and newlines).

    Returns:
        The text on one line with ``|`` escaped.
    """
    return " ".join(text.split()).replace("|", "\\|")


def format_table(header: list[str], rows: list[list[str]]) -> str:
    """Renders a markdown table.

    Args:
        header: column titles.
        rows: cell texts (escaped with :func:`md_escape`).

    Returns:
        The table, one line per row.
    """
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines.extend("| " + " | ".join(md_escape(c) for c in row) + " |" for row in rows)
    return "\n".join(lines)
