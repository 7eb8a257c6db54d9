"""Trials per minute with 1, 2 and 4 evaluators on a local two-node Ray cluster, and the
time from a node's death to the search carrying on.

The cluster is the one the test suite uses (``tests/service/_cluster.py``): a head and a
second raylet on this machine, the second in its own mount namespace, ``--cpus-per-node``
logical CPUs each. Every search is the same: FashionMixNet (random weights: throughput does
not depend on them) on synthetic 28x28 batches, a 25 % MACs budget, ``--trials`` candidates,
no fine-tuning, no baselines; trials per minute count the searching phase only (start-up
and finalists excluded). The worker counts run in interleaved rounds (1, 2, 4, 1, 2, 4,
...), so a drifting machine affects each alike; reported as the median over rounds and as
the ratio to 1 evaluator in the same run.

Node death: a 2-evaluator search (one per node); once the second node's evaluator has
finished a trial, every process of that node is killed. Reported: seconds until the pool
noticed (the lost task re-queued) and until the lost task finished again on the head.
Logical CPUs may exceed physical cores (a 2-core machine declaring 2 per node): then 4
evaluators share 2 cores and the numbers say so.

Usage::

    python benchmarks/cluster.py [--trials N] [--rounds K] [--cpus-per-node C] [--no-append]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from _fashion_models import FashionMixNet, MixConfig
from _models import append_results, format_table

from prunepilot import search as ps
from prunepilot.worker import RayPool, ensure_ray

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.service._cluster import TwoNodeCluster, cluster_unavailable

WORKERS = (1, 2, 4)


class _Batches:
    """Fixed synthetic Fashion-MNIST-shaped batches (re-iterable)."""

    def __init__(self, n: int, batch: int, seed: int) -> None:
        g = torch.Generator().manual_seed(seed)
        self.items = [
            (
                torch.randn(batch, 1, 28, 28, generator=g),
                torch.randint(0, 10, (batch,), generator=g),
            )
            for _ in range(n)
        ]

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.items)


def _spec(trials: int) -> ps.SearchSpec:
    return ps.SearchSpec.model_validate(
        {
            "constraints": {"flops": "25%"},
            "search": {"trials": trials, "baselines": [], "top_k": 1, "bn_batches": 5},
            "finetune": {"steps": 0},
        }
    )


def _search(
    model: torch.nn.Module, data: ps.SearchData, trials: int, workers: int
) -> tuple[float, ps.SearchResult]:
    """Trials per minute of the searching phase, and the result."""
    marks: dict[str, float] = {}

    def progress(p: ps.SearchProgress) -> None:
        marks.setdefault(p.phase, time.perf_counter())

    pool = RayPool(workers, device="cpu", threads=1)
    try:
        res = ps.search(model, torch.randn(1, 1, 28, 28), data, _spec(trials), pool=pool,
                        callback=progress)  # fmt: skip
    finally:
        pool.close()
    phase = marks.get("finalists", time.perf_counter()) - marks["searching"]
    done = len([t for t in res.trials if t.state == "complete" and t.baseline is None])
    return done / phase * 60, res


class _Events(logging.Handler):
    """Timestamps of the pool's replacement messages."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.times: list[tuple[float, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.times.append((time.perf_counter(), record.getMessage()))


def _node_death(
    cluster: TwoNodeCluster, model: torch.nn.Module, data: ps.SearchData, trials: int
) -> tuple[float, float]:
    """Seconds from killing the second node to the re-queue, and to the lost task done."""
    second = cluster.nodes()[1][:8]
    events = _Events()
    logging.getLogger("prunepilot.worker").addHandler(events)
    killed: list[float] = []
    lost_key: list[int] = []
    done_at: dict[int, float] = {}

    def progress(p: ps.SearchProgress) -> None:
        now = time.perf_counter()
        if p.message.startswith("trial "):
            done_at[int(p.message.split()[1].rstrip(":"))] = now

    pool = RayPool(2, device="cpu", threads=1, lost_timeout_s=120)
    orig_wait = pool.wait

    seen: list[bool] = []

    def wait(timeout: float | None = None):  # type: ignore[no-untyped-def]
        # kill once the second node's evaluator has delivered a trial and holds another
        out = orig_wait(timeout)
        if out is not None and out.worker.endswith(f"@{second}"):
            seen.append(True)
        if seen and not killed:
            running = [
                t
                for s, t, _ in pool._running.values()
                if s.info is not None and s.info.node.startswith(second)
            ]
            if running:
                lost_key.append(running[0].key)
                killed.append(time.perf_counter())
                cluster.kill_second()
        return out

    pool.wait = wait  # type: ignore[method-assign]
    try:
        ps.search(model, torch.randn(1, 1, 28, 28), data, _spec(trials), pool=pool,
                  callback=progress)  # fmt: skip
    finally:
        pool.close()
        logging.getLogger("prunepilot.worker").removeHandler(events)
    if not killed:
        raise RuntimeError("the second node never ran a trial: nothing was killed")
    requeued = next(t for t, m in events.times if "re-queued" in m and t >= killed[0])
    return requeued - killed[0], done_at.get(lost_key[0], float("nan")) - killed[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--trials", type=int, default=24)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--cpus-per-node", type=int, default=2)
    ap.add_argument("--no-append", action="store_true")
    args = ap.parse_args(argv)
    why = cluster_unavailable()
    if why:
        print(f"cannot start a two-node cluster here: {why}")
        return 2
    logging.basicConfig(level=logging.WARNING)
    torch.manual_seed(0)
    model = FashionMixNet(MixConfig()).eval()
    data = ps.SearchData(
        train=_Batches(16, 64, 1), val=_Batches(4, 256, 2), score=_Batches(4, 256, 3)
    )
    started = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        cluster = TwoNodeCluster(Path(tmp) / "hidden", Path(tmp) / "logs", args.cpus_per_node)
        os.environ["RAY_AUTH_MODE"] = "disabled"
        try:
            cluster.start()
            ensure_ray(cluster.address)
            rates: dict[int, list[float]] = {n: [] for n in WORKERS}
            for r in range(args.rounds):
                for n in WORKERS:
                    rate, _ = _search(model, data, args.trials, n)
                    rates[n].append(rate)
                    print(f"round {r + 1}: {n} evaluator(s): {rate:.1f} trials/min", flush=True)
            detect_s, rerun_s = _node_death(cluster, model, data, args.trials)
            print(f"node death: re-queued after {detect_s:.1f} s, re-run after {rerun_s:.1f} s")
        finally:
            import ray

            ray.shutdown()
            cluster.stop()
    med = {n: statistics.median(v) for n, v in rates.items()}
    table = format_table(
        ["evaluators", "trials/min (median)", "rounds", "vs 1 evaluator"],
        [
            [str(n), f"{med[n]:.1f}", " / ".join(f"{x:.1f}" for x in rates[n]),
             f"{med[n] / med[1]:.2f}x"]
            for n in WORKERS
        ],
    )  # fmt: skip
    body = "\n".join(
        [
            f"Two-node local Ray cluster ({args.cpus_per_node} logical CPUs per node, "
            f"{os.cpu_count()} physical cores on this machine), FashionMixNet at 25% MACs, "
            f"{args.trials} trials per search, no fine-tuning, {args.rounds} interleaved "
            "rounds.",
            "",
            table,
            "",
            f"- node death (2 evaluators, one per node; the second node's processes killed "
            f"while its evaluator held a trial): the lost trial re-queued {detect_s:.1f} s "
            f"after the kill and finished on the head {rerun_s:.1f} s after it.",
            f"\nTotal wall time {time.perf_counter() - started:.0f}s.",
        ]
    )
    print()
    print(body)
    if not args.no_append:
        append_results("cluster.py", body)
        print("\nappended to benchmarks/RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
