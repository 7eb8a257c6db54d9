"""Trace-speed benchmark: ``prunepilot.trace`` vs Torch-Pruning's dependency-graph build.

For each model (torchvision, random init, eval mode, input 1x3x224x224) both tools analyse the
same model in the same process: one warm-up call each, then ``--repeats`` timed calls each,
alternating the two tools. The table reports each tool's best and median wall time and both
ratios. Target: prunepilot takes at most half of Torch-Pruning's time (ratio pp/tp <= 0.5),
judged on the best times, as ``timeit`` advises: on a shared machine the slower repeats measure
interference (time the process waited for a CPU: an additive delay of similar size for both
tools, so it inflates the shorter one's ratio), not the code. The ratio of medians is reported
beside it.

``--phases`` adds prunepilot's per-phase CPU times (best of ``--repeats``): meta copy and
op capture, channel analysis, group building, and verification (pruned meta forward; skipped,
as ``trace`` skips it, when the model's code never reads nor passes a tensor size).

Usage::

    python benchmarks/trace_speed.py [--models NAME ...] [--repeats N] [--phases]
        [--unverified] [--no-write]
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from _models import append_results, format_table

log = logging.getLogger("trace_speed")

MODELS: tuple[str, ...] = ("resnet50", "densenet121", "efficientnet_b0", "vit_b_16")
TARGET_RATIO = 0.5
ERROR_CHARS = 200


def _timed(fn: Callable[[], Any]) -> float:
    """Runs ``fn`` once (its stdout sent to stderr) and returns the wall time in seconds."""
    with contextlib.redirect_stdout(sys.stderr):
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0


def bench_model(name: str, repeats: int, unverified: bool = False) -> dict[str, Any]:
    """Times both tools on one torchvision model.

    Args:
        name: torchvision model name.
        repeats: timed calls per tool (after one warm-up call each).
        unverified: also time ``trace(..., verify=False)`` (key ``"nv"``), alternating with
            the others: the cost of the verification forward that Torch-Pruning lacks.

    Returns:
        ``{"model", "pp": [seconds...], "tp": [seconds...], "error": str | None}``.
    """
    import torch_pruning as tp
    import torchvision

    import prunepilot

    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None).eval()
    x = torch.randn(1, 3, 224, 224)

    def run_pp() -> None:
        prunepilot.trace(model, x)

    def run_tp() -> None:
        tp.DependencyGraph().build_dependency(model, example_inputs=x)

    def run_nv() -> None:
        prunepilot.trace(model, x, verify=False)

    res: dict[str, Any] = {"model": name, "pp": [], "tp": [], "nv": [], "error": None}
    runners = {"pp": run_pp, "tp": run_tp, **({"nv": run_nv} if unverified else {})}
    failed: set[str] = set()
    for rep in range(repeats + 1):  # rep 0 is the warm-up
        for tool, fn in runners.items():
            if tool in failed:
                continue
            try:
                secs = _timed(fn)
            except Exception as exc:  # a failing tool is a result
                failed.add(tool)
                msg = " ".join(f"{tool}: {type(exc).__name__}: {exc}".split())[:ERROR_CHARS]
                res["error"] = f"{res['error']}; {msg}" if res["error"] else msg
                log.warning("%s: %s", name, msg)
                continue
            if rep > 0:
                res[tool].append(secs)
            log.info("%s %s %s %.3fs", name, tool, "warm-up" if rep == 0 else f"#{rep}", secs)
    return res


def _best_median(times: list[float]) -> tuple[float, float] | None:
    """Best and median of a tool's times (``None`` when it never ran)."""
    return (min(times), statistics.median(times)) if times else None


def _ratios(
    a: tuple[float, float] | None, b: tuple[float, float] | None
) -> tuple[float, float] | None:
    """Best-to-best and median-to-median ratios of two tools' times."""
    if a is None or b is None or not b[0] or not b[1]:
        return None
    return a[0] / b[0], a[1] / b[1]


def _pair(v: tuple[float, float] | None, fmt: str) -> str:
    """``"best / median"`` cell (``"error"`` when not measured)."""
    return "error" if v is None else f"{fmt.format(v[0])} / {fmt.format(v[1])}"


PHASES: tuple[str, ...] = ("capture", "analyze", "build", "verify")


def phase_times(name: str, repeats: int) -> dict[str, float]:
    """Best-of-``repeats`` CPU seconds of each phase of ``prunepilot.trace`` (diagnostic).

    Mirrors ``prunepilot.core._api.trace`` step by step through its private helpers.
    """
    import torchvision

    from prunepilot.core import _api

    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None).eval()
    x = torch.randn(1, 3, 224, 224)
    best: dict[str, float] = {}
    for _ in range(repeats + 1):
        t: dict[str, float] = {}
        t0 = time.process_time()
        run = _api._run(model, x, watch=True)
        t1 = time.process_time()
        an = _api.analyze(run.cap)
        t2 = time.process_time()
        _api._pin_fixed_modules(model, an)
        graph = _api.build_graph(an, run.cap.params)
        t3 = time.process_time()
        if graph.prunable and not run.cap.blind:  # as trace: skipped for size-blind code
            _api._verify(model, run, graph)
        t4 = time.process_time()
        t = dict(zip(PHASES, (t1 - t0, t2 - t1, t3 - t2, t4 - t3), strict=True))
        best = {k: min(v, best.get(k, v)) for k, v in t.items()}
    return best


def build_report(
    results: list[dict[str, Any]],
    repeats: int,
    load: tuple[float, float] | None = None,
    phases: dict[str, dict[str, float]] | None = None,
    unverified: bool = False,
) -> str:
    """Renders the timing table and the target line.

    Args:
        results: per-model records from :func:`bench_model`.
        repeats: timed calls per tool.
        load: 1-minute load average before and after the run (other processes on the
            machine make CPU timings unreliable).
        phases: per model, prunepilot's CPU seconds per phase (see :func:`phase_times`).
        unverified: add the ``trace(..., verify=False)`` columns.

    Returns:
        Markdown text.
    """
    rows: list[list[str]] = []
    met = met_median = measured = 0
    for r in results:
        pp, tpt, nv = (_best_median(r.get(k, [])) for k in ("pp", "tp", "nv"))
        ratio = _ratios(pp, tpt)
        if ratio is not None:
            measured += 1
            met += ratio[0] <= TARGET_RATIO
            met_median += ratio[1] <= TARGET_RATIO
        row = [f"tv:{r['model']}", _pair(pp, "{:.3f}"), _pair(tpt, "{:.3f}")]
        if unverified:
            row += [_pair(nv, "{:.3f}"), _pair(_ratios(nv, tpt), "{:.2f}")]
        row += [_pair(ratio, "{:.2f}")]
        if r["error"]:
            row[-1] += f" ({r['error']})"
        rows.append(row)
    header = ["model", "prunepilot s", "torch-pruning s", "ratio (pp/tp)"]
    if unverified:
        header[3:3] = ["unverified s", "unverified / tp"]
    header = [header[0], *(f"{h} best / median" for h in header[1:])]
    lines = [
        format_table(header, rows),
        "",
        f"best and median of {repeats} runs after 1 warm-up per tool, tools alternating; "
        f"input 1x3x224x224, random init, eval mode; torch threads {torch.get_num_threads()}"
        + (f"; load average before/after {load[0]:.2f}/{load[1]:.2f}." if load else "."),
        f"target: ratio <= {TARGET_RATIO} on best times — met for {met}/{len(results)} models "
        f"(on medians: {met_median}/{len(results)})"
        + ("" if measured == len(results) else f" ({len(results) - measured} not measured)"),
    ]
    if phases:
        prow = [
            [f"tv:{m}", *(f"{p[k] * 1e3:.1f}" for k in PHASES), f"{sum(p.values()) * 1e3:.1f}"]
            for m, p in phases.items()
        ]
        lines += [
            "",
            "prunepilot CPU ms per phase (best of the repeats): capture = meta copy + op "
            "capture; verify = shape-only prune + meta forward of the pruned copy (0 when the "
            "model's code never reads nor passes a size: trace skips it).",
            "",
            format_table(["model", *PHASES, "sum"], prow),
        ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Runs the trace-speed benchmark.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        Process exit code.
    """
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", default=list(MODELS), metavar="NAME")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per tool (default 3)")
    p.add_argument("--phases", action="store_true", help="add prunepilot's per-phase CPU times")
    p.add_argument("--no-write", action="store_true", help="do not append to RESULTS.md")
    p.add_argument(
        "--unverified",
        action="store_true",
        help="also time trace(..., verify=False): the part of the time verification takes",
    )
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    warnings.filterwarnings("ignore")

    names = [n.removeprefix("tv:") for n in args.models]
    load_before = os.getloadavg()[0]
    results = [bench_model(n, max(1, args.repeats), args.unverified) for n in names]
    load = (load_before, os.getloadavg()[0])
    phases = {n: phase_times(n, max(1, args.repeats)) for n in names} if args.phases else None
    report = build_report(results, max(1, args.repeats), load, phases, args.unverified)
    print(report)
    if not args.no_write:
        append_results("trace_speed.py", report)
        log.info("appended to benchmarks/RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
