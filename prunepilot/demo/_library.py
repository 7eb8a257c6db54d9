"""The library-only demo: trace a torchvision ResNet-50, prune it to half its MACs, measure it.

``python -m prunepilot.demo`` runs it; the README's main command, ``bash scripts/demo.sh``,
runs the service demo ``prunepilot demo`` instead. Random weights: nothing is downloaded.
Prints the channel groups, MACs/params and CPU latency before/after.
"""

from __future__ import annotations

import argparse
import copy
import logging
import time

import torch
import torchvision

from prunepilot.core import profile, prune_channels, trace
from prunepilot.search import Strategy, plan_for_macs, score_channels

from ._timing import latency_ms

__all__ = ["main"]

log = logging.getLogger("prunepilot.demo")


def main(argv: list[str] | None = None) -> None:
    """Trace, prune to a MACs target, and report before/after numbers."""
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="resnet50", help="torchvision classification model")
    p.add_argument("--target", type=float, default=0.5, help="fraction of MACs to keep")
    p.add_argument("--size", type=int, default=224, help="input resolution")
    p.add_argument("--round-to", type=int, default=8, help="keep widths multiples of this")
    p.add_argument("--threads", type=int, default=2, help="CPU threads for latency")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.manual_seed(0)
    torch.set_num_threads(args.threads)

    model = torchvision.models.get_model(args.model, weights=None).eval()
    x = torch.randn(1, 3, args.size, args.size)
    t0 = time.perf_counter()
    graph = trace(model, x)
    t_trace = time.perf_counter() - t0
    print(f"traced {args.model} in {t_trace:.2f} s")
    print(graph.summary())

    scores = score_channels(model, graph, "l2")
    strategy = Strategy(allocation="uniform", round_to=args.round_to)
    plan = plan_for_macs(model, graph, scores, keep=args.target, strategy=strategy)
    before = profile(model, x)
    pruned = prune_channels(copy.deepcopy(model), graph, plan)
    after = profile(pruned, x)
    lat_before, lat_after = latency_ms([model, pruned], x)
    with torch.inference_mode():
        out = pruned(x)
    print(f"\nuniform l2 pruning (round_to={args.round_to}) over {len(plan)} groups")
    print(f"{'':10s}{'before':>16s}{'after':>16s}{'ratio':>9s}")
    print(f"{'MACs':10s}{before.macs:16,d}{after.macs:16,d}{after.macs / before.macs:9.3f}")
    print(
        f"{'params':10s}{before.params:16,d}{after.params:16,d}{after.params / before.params:9.3f}"
    )
    print(f"{'latency':10s}{lat_before:13.1f} ms{lat_after:13.1f} ms{lat_after / lat_before:9.3f}")
    print(f"output shape {tuple(out.shape)} (unchanged)")


if __name__ == "__main__":
    main()
