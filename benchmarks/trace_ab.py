"""Paired trace-speed A/B: this tree's ``prunepilot.trace`` against another git revision's.

Both versions are imported into one process (the base revision's package is extracted with
``git archive`` under another name) and called alternately on the same model, so drifts in
machine speed hit both sides alike: what one change to ``prunepilot/core`` gained or lost,
within a few percent on a noisy machine. The table gives CPU ms per trace (min, median) of
each side and the median of the per-pair ratios (this tree / base).

Usage::

    python benchmarks/trace_ab.py --base REV [--models NAME ...] [--pairs N] [--no-write]
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from _models import append_results, format_table

ROOT = Path(__file__).resolve().parent.parent
MODELS: tuple[str, ...] = ("resnet50", "densenet121", "efficientnet_b0", "vit_b_16")
BASE_NAME = "prunepilot_base"


def import_base(rev: str, into: Path) -> ModuleType:
    """``prunepilot`` as of git revision ``rev``, imported as `BASE_NAME` from ``into``."""
    archive = into / "base.tar"
    with archive.open("wb") as f:
        subprocess.run(["git", "archive", rev, "prunepilot"], cwd=ROOT, stdout=f, check=True)
    with tarfile.open(archive) as tar:
        tar.extractall(into, filter="data")
    (into / "prunepilot").rename(into / BASE_NAME)  # its imports inside are relative
    sys.path.insert(0, str(into))
    return importlib.import_module(BASE_NAME)


def pair(name: str, base: Any, head: Any, pairs: int) -> dict[str, list[float]]:
    """CPU seconds of ``pairs`` alternating calls of each side's ``trace`` on one model."""
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None).eval()
    x = torch.randn(1, 3, 224, 224)
    for side in (base, head):  # warm-up
        side.trace(model, x)
    out: dict[str, list[float]] = {"base": [], "head": []}
    for i in range(pairs):
        order = (("base", base), ("head", head)) if i % 2 == 0 else (("head", head), ("base", base))
        for key, side in order:
            t0 = time.process_time()
            side.trace(model, x)
            out[key].append(time.process_time() - t0)
    return out


def report(rev: str, results: dict[str, dict[str, list[float]]], pairs: int) -> str:
    rows = []
    for name, r in results.items():
        ratios = [h / b for b, h in zip(r["base"], r["head"], strict=True)]
        rows.append(
            [
                f"tv:{name}",
                f"{min(r['base']) * 1e3:.1f} / {statistics.median(r['base']) * 1e3:.1f}",
                f"{min(r['head']) * 1e3:.1f} / {statistics.median(r['head']) * 1e3:.1f}",
                f"{statistics.median(ratios):.3f}",
            ]
        )
    header = ["model", f"base {rev} ms (min / median)", "this tree ms", "median ratio"]
    return (
        format_table(header, rows)
        + f"\n\nCPU time per trace, {pairs} alternating pairs after one warm-up each, one "
        f"process; input 1x3x224x224, random init, eval mode; torch threads "
        f"{torch.get_num_threads()}."
    )


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", required=True, help="git revision to compare against")
    p.add_argument("--models", nargs="+", default=list(MODELS), metavar="NAME")
    p.add_argument("--pairs", type=int, default=30)
    p.add_argument("--no-write", action="store_true", help="do not append to RESULTS.md")
    args = p.parse_args(argv)
    import prunepilot

    with tempfile.TemporaryDirectory() as tmp:
        base = import_base(args.base, Path(tmp))
        results = {m: pair(m, base, prunepilot, args.pairs) for m in args.models}
    body = report(args.base, results, args.pairs)
    print(body)
    if not args.no_write:
        append_results("trace_ab.py", body)
        print("appended to benchmarks/RESULTS.md")


if __name__ == "__main__":
    main()
