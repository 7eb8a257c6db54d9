"""Do this tree and another git revision find the same channel groups on every model?

A check for changes meant to keep ``trace``'s results (speed-ups, refactors): each coverage
model (``_models.all_specs``, or those matching ``--filter``) is traced by this tree's
``prunepilot`` and by the base revision's (imported under another name, as ``trace_ab.py``
does), in one process on the same model and inputs. The two graphs must agree on every group
(id, channels, prunability and reason, blocks, unit, pinned count, cells, split constraints),
every member (tensor, dim, role, positions of all channels), and on MACs and parameters before
and after removing the smallest step of every prunable group. Prints one line per model and
``identical: N/M models``; exits with status 1 when any model differs or fails on one side.

Usage::

    python benchmarks/groups_diff.py --base REV [--filter REGEX]
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch
from _models import all_specs
from trace_ab import import_base


def summary(pp: Any, model: torch.nn.Module, inputs: tuple[Any, ...]) -> dict[str, Any]:
    """What ``pp.trace`` finds on a model, as plain comparable values."""
    torch.manual_seed(0)
    graph = pp.trace(model, inputs)
    plan: dict[str, list[int]] = {}
    groups: list[dict[str, Any]] = []
    for g in graph.groups:
        fields = ("id", "channels", "prunable", "reason", "blocks", "unit", "pinned", "cells")
        found = {f: getattr(g, f) for f in fields}
        found["constraints"] = getattr(g, "_constraints", None)  # (private: split constraints)
        found["members"] = [
            (m.name, m.dim, m.role, list(m.indices(range(g.channels)))) for m in g.members
        ]
        groups.append(found)
        if g.prunable:
            remove = [c for cell, k in zip(g.cells, g.per_cell(1), strict=True) for c in cell[:k]]
            try:
                g.check(remove)
            except ValueError:  # (PlanError) a step that breaks a constraint: not probed
                continue
            plan[g.id] = remove
    return {
        "groups": groups,
        "costs": (graph.macs(), graph.params(), graph.macs(plan), graph.params(plan)),
        "unknown_ops": dict(graph.unknown_ops),
    }


def compare(a: dict[str, Any], b: dict[str, Any]) -> str | None:
    """The first difference between two summaries, described; ``None`` when equal."""
    if len(a["groups"]) != len(b["groups"]):
        return f"{len(a['groups'])} groups against {len(b['groups'])}"
    for ga, gb in zip(a["groups"], b["groups"], strict=True):
        if ga != gb:
            what = [k for k in ga if ga[k] != gb.get(k)]
            return f"group {ga['id']} differs in {', '.join(what)}"
    for key in ("costs", "unknown_ops"):
        if a[key] != b[key]:
            return f"{key}: {a[key]} against {b[key]}"
    return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--base", required=True, help="git revision to compare against")
    p.add_argument("--filter", default="", help="only models whose name matches this regex")
    args = p.parse_args(argv)
    import prunepilot

    specs = [s for s in all_specs() if re.search(args.filter, s.name)]
    same = 0
    with tempfile.TemporaryDirectory() as tmp:
        base = import_base(args.base, Path(tmp))
        for spec in specs:
            t0 = time.perf_counter()
            torch.manual_seed(0)
            model, inputs = spec.build(), spec.example_inputs()
            try:
                diff = compare(summary(prunepilot, model, inputs), summary(base, model, inputs))
            except Exception as e:  # a failure on either side is a finding, not a crash
                diff = f"failed: {type(e).__name__}: {str(e)[:160]}"
            same += diff is None
            took = time.perf_counter() - t0
            print(f"{spec.name:40s} {'same' if diff is None else diff}  ({took:.1f} s)", flush=True)
            del model
    print(f"identical: {same}/{len(specs)} models (this tree against {args.base})")
    return 0 if same == len(specs) else 1


if __name__ == "__main__":
    sys.exit(main())
