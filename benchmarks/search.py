"""Searched per-group ratios vs uniform, global, LAMP and Torch-Pruning, same recovery.

Model and data: FashionMixNet of ``benchmarks/_fashion_models.py`` (17 prunable groups: plain
convs, residual basic blocks, inverted residual blocks with expansion; about 27 M MACs),
trained once and cached under ``benchmarks/.cache/``, on Fashion-MNIST from Debian's
``dataset-fashion-mnist`` package (``bash scripts/get-fashion-mnist.sh`` once).

Three budgets, each its own scenario:

* ``flops25`` / ``flops10``: MACs <= 25 % / 10 % of the original;
* ``latency``: CPU latency (batch 32, 1 thread) <= the uniform 10 %-MACs model's latency,
  measured in this run beside the original (alternating rounds, so drift cancels) and given
  to the search as that fraction of the original's.

Rows per scenario, every one recovered with the same recipe, the one the search applies to
its winner, a `FinetuneSettings` with the job's defaults but for ``--ft-steps`` SGD steps
(batch 128, cosine) and ``--distill`` (knowledge distillation from the unpruned model;
default: the job's); BatchNorm re-estimation first; with ``--ft-seeds``
seeds (data order and torch seed), reported as mean ± sd:

* ``searched``: `prunepilot.search.search` on a Ray pool (``--workers`` CPU actors, one
  thread each) with the search's default settings unless ``--trials``/``--score-steps``/
  ``--top-k`` say otherwise; its config re-pruned from the original and recovered like the
  other rows. Also reported: its wall-clock, the fine-tune (optimizer) steps it spent in
  total (candidate scoring + finalists) and that over ``--ft-steps`` ("cost in fine-tunes");
* ``uniform``: the same keep ratio for every group, the least pruning meeting the budget
  (under the latency budget: the uniform 10 %-MACs model, whose latency is the budget);
* ``global``: prunepilot's global ranking of mean-normalised l2 scores (at most 90 % of a
  group);
* ``lamp``: ``Strategy(allocation="lamp")`` (skipped, with the reason, where this tree's
  prunepilot has no LAMP allocation);
* ``tp-global``: Torch-Pruning ``MetaPruner`` with ``GroupMagnitudeImportance(p=2)``,
  ``global_pruning=True``, ``max_pruning_ratio=0.9``.

Budgets are met by bisection on analytic MACs or on measured latency (the chosen model is
then re-measured 3x longer and pruned a little more until it passes that too, as the search
re-measures its winner). Proxy quality (``--tau N``): N of the search's candidates, spread
over its score range, each recovered like the rows (first seed); Kendall's tau between the
final test top-1 and each fidelity's score: ``bn`` (BatchNorm re-estimation only, computed
here), ``search`` (the cheap score that guided the sampler) and ``rung1``, ``rung2``, ...
(the search's successive-halving probes, `Evaluator.probe` with each rung's steps, run here
on every pick; the last rung picks the finalists).

Usage::

    python benchmarks/search.py [--ft-steps N] [--distill] [--ft-seeds K] [--tau N]
        [--trials N] [--workers N] [--quick] [--no-append]
"""

from __future__ import annotations

import argparse
import copy
import logging
import math
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from _fashion_models import MixConfig, train_mixnet
from _models import append_results, format_table
from criteria import Batches, contiguous, load_fashion_mnist
from scipy.stats import kendalltau
from torch import nn

import prunepilot as pp
from prunepilot import search as ps
from prunepilot.search.engine._budget import Budgets
from prunepilot.worker import RayPool

log = logging.getLogger("search_bench")

MACS_KEEP = {"flops25": 0.25, "flops10": 0.10}
LATENCY_OF = "flops10"  # the latency budget is this scenario's uniform model's latency
SCENARIOS = ("flops25", "flops10", "latency")
SCORE_IMAGES = 5000
BN_BATCHES = 10
MIN_GROUPS = 15
MAX_COST = 10.0  # target: search cost <= this many fine-tunes of the final model


@dataclass
class Row:
    """One table row."""

    scenario: str
    method: str
    acc: float
    acc_sd: float
    macs_kept: float
    search_s: float
    latency_ms: float = math.nan
    latency_kept: float = math.nan
    ft_steps: int | None = None  # searched: optimizer steps the search spent
    cost: float | None = None  # searched: ft_steps over one final fine-tune's steps
    tau: dict[str, float] = field(default_factory=dict)  # searched: fidelity -> Kendall tau


@dataclass
class Bench:
    """What every row shares."""

    base: nn.Module
    graph: pp.ChannelGraph
    example: torch.Tensor
    macs: int
    scores: ps.Scores
    train: Callable[[int], Batches]  # training batches; the argument shifts their order
    score: Batches
    test: Batches
    target: ps.LatencyTarget
    base_latency: float
    recipe: ps.FinetuneSettings  # the recovery of every row and of the search's winner
    seeds: int
    seed: int


def measure(b: Bench, model: nn.Module, repeats: int | None = None) -> float:
    """Median latency (ms) on the benchmark's target."""
    return ps.measure_latency(model, b.example, b.target, repeats=repeats).median_ms


def finetune(b: Bench, model: nn.Module, seed: int = 0) -> nn.Module:
    """The recovery every row gets, the search's `Evaluator.finetune` recipe (BatchNorm
    re-estimation, SGD, distillation from the original with ``--distill``); ``seed`` shifts
    the data order and torch's seed (fine-tune noise, ``--ft-seeds``)."""
    model = contiguous(model)
    ps.recalibrate_bn(model, b.train(seed), steps=BN_BATCHES)
    torch.manual_seed(b.seed + seed)
    ft = b.recipe
    teacher = copy.deepcopy(b.base) if ft.distill else None
    tr = ps.Trainer(
        model, lr=ft.lr, momentum=ft.momentum, weight_decay=ft.weight_decay, teacher=teacher
    )
    tr.fit(b.train(seed), epochs=None, max_steps=ft.steps)
    return model.eval()


def recovered(b: Bench, untuned: nn.Module, seeds: int) -> tuple[float, float]:
    """Test top-1 of ``untuned`` recovered with ``seeds`` seeds: mean and sd (0 for one)."""
    accs = [
        ps.evaluate(finetune(b, copy.deepcopy(untuned), seed), b.test).top1 for seed in range(seeds)
    ]
    return statistics.mean(accs), statistics.stdev(accs) if len(accs) > 1 else 0.0


def row_for(b: Bench, scenario: str, method: str, untuned: nn.Module, search_s: float) -> Row:
    """A row for a pruned, not yet recovered model: recovered with every seed, MACs counted
    (latency comes from the round-robin pass)."""
    acc, sd = recovered(b, untuned, b.seeds)
    macs = pp.profile(untuned, b.example).macs / b.macs
    return Row(scenario, method, acc, sd, macs, search_s)


def interleaved(b: Bench, models: list[nn.Module], rounds: int = 7) -> list[float]:
    """Median latency of each model, measured round-robin so that every model sees the
    same background load (on a shared machine, latency drifts by tens of % over minutes)."""
    per: list[list[float]] = [[] for _ in models]
    for _ in range(rounds):
        for i, m in enumerate(models):
            per[i].append(ps.measure_latency(m, b.example, b.target, repeats=10).median_ms)
    return [statistics.median(v) for v in per]


def pruned(b: Bench, plan: dict[str, list[int]]) -> nn.Module:
    """A pruned copy of the base model."""
    model = copy.deepcopy(b.base)
    if plan:
        pp.prune_channels(model, b.graph, plan)
    return model.eval()


def latency_ratio(b: Bench, model: nn.Module, scale: int = 1) -> float:
    """``model``'s latency over the original's, timed in alternating rounds (same load);
    ``scale`` times the runs and rounds."""
    stats, ref = ps.measure_relative(
        model, b.base, b.example, b.target, repeats=20 * scale, rounds=4 * scale
    )
    return stats.median_ms / ref.median_ms


def bisect_latency(build: Callable[[float], nn.Module], keep: float, b: Bench) -> nn.Module:
    """The least pruning (``build(x)``, x in [0, 1] = pruning strength) whose latency is at
    most ``keep`` of the original's (both timed together, so drift cancels)."""
    lo, hi = 0.0, 1.0
    best = build(hi)
    if latency_ratio(b, best) > keep:
        log.warning("latency budget unreachable; using the most pruned model")
        return best
    for _ in range(10):
        mid = (lo + hi) / 2
        m = build(mid)
        if latency_ratio(b, m) <= keep:
            hi, best = mid, m
        else:
            lo = mid
        if hi - lo < 0.01:
            break
    # Winner's curse: the least pruning that passed is often one that passed on a lucky
    # reading. Re-measure it 3x longer (as the search re-measures its winner) and prune a
    # little more until it passes that too.
    while hi < 1.0 and latency_ratio(b, best, scale=3) > keep:
        hi = min(1.0, hi + 0.02)
        best = build(hi)
    return best


def strategy_model(b: Bench, strategy: ps.Strategy, strength: float) -> nn.Module:
    """``strategy``'s plan removing ``strength * 0.9`` of the channels (per group for
    uniform, in total for global rankings, at most ``max_remove`` of a group)."""
    return pruned(b, ps.plan_for_ratio(b.base, b.graph, b.scores, 0.9 * strength, strategy))


def uniform_model(b: Bench, strength: float) -> nn.Module:
    """Uniform pruning with the fraction ``strength * 0.9`` removed from every group."""
    return strategy_model(b, ps.Strategy(), strength)


def global_model(b: Bench, strength: float) -> nn.Module:
    """Global ranking removing ``strength * 0.9`` of all channels (90 % cap per group)."""
    return strategy_model(b, ps.Strategy(allocation="global", max_remove=0.9), strength)


def lamp_strategy(b: Bench) -> ps.Strategy | str:
    """LAMP allocation (at most 90 % of a group), or why this prunepilot cannot plan it."""
    allocation: Any = "lamp"  # not in every prunepilot's Allocation literal
    try:
        strategy = ps.Strategy(allocation=allocation, max_remove=0.9)
        ps.plan_for_ratio(b.base, b.graph, b.scores, 0.5, strategy)
    except pp.PlanError as e:
        return f"LAMP row skipped: this prunepilot has no LAMP allocation ({e})"
    return strategy


def tp_model(b: Bench, ratio: float) -> nn.Module:
    """Torch-Pruning's global magnitude pruning at ``pruning_ratio = ratio * 0.9``."""
    import torch_pruning as tp

    model = copy.deepcopy(b.base)
    pruner = tp.pruner.MetaPruner(
        model,
        b.example,
        importance=tp.importance.GroupMagnitudeImportance(p=2),
        pruning_ratio=0.9 * ratio,
        global_pruning=True,
        max_pruning_ratio=0.9,
        ignored_layers=[model.fc],
    )
    pruner.step()
    return model.eval()


def bisect_macs(build: Callable[[float], nn.Module], keep: float, b: Bench) -> nn.Module:
    """The least pruning whose MACs are at most ``keep`` of the original."""
    lo, hi = 0.0, 1.0
    best = build(hi)
    for _ in range(20):
        mid = (lo + hi) / 2
        m = build(mid)
        if pp.profile(m, b.example).macs <= keep * b.macs:
            hi, best = mid, m
        else:
            lo = mid
        if hi - lo < 1e-3:
            break
    return best


def tuned_top1(b: Bench, space: ps.Space, config: dict[str, float]) -> float:
    """Test top-1 of a config's pruned model after the rows' recovery (first seed)."""
    return ps.evaluate(finetune(b, pruned(b, space.plan(config))), b.test).top1


def candidates(res: ps.SearchResult) -> list[ps.TrialRecord]:
    """The search's distinct scored feasible candidates, best cheap score first."""
    return sorted(
        (
            t
            for t in res.trials
            if t.state == "complete"
            and t.feasible
            and t.duplicate_of is None
            and t.score is not None
        ),
        key=lambda t: -(t.score or 0),
    )


def top_check(b: Bench, spec: ps.SearchSpec, res: ps.SearchResult, n: int, uni: float) -> str:
    """Recover the ``n`` best candidates by cheap score like every row; a note line."""
    space = ps.Space(b.base, b.graph, b.scores, spec.space)
    top = candidates(res)[:n]
    accs = [tuned_top1(b, space, t.config) for t in top]
    pairs = ", ".join(
        f"#{t.number} {t.score:.4f} -> {a:.4f}" for t, a in zip(top, accs, strict=True)
    )
    return (
        f"the {len(top)} best candidates by cheap score, each recovered like the rows (cheap "
        f"score -> test top-1): {pairs}; best {max(accs):.4f} = uniform {max(accs) - uni:+.4f}"
    )


def bn_score(b: Bench, model: nn.Module) -> float:
    """The cheapest fidelity: top-1 on the held-out split after BatchNorm re-estimation."""
    model = contiguous(model)
    ps.recalibrate_bn(model, b.train(0), steps=BN_BATCHES)
    return ps.evaluate(model, b.score).top1


def rung_steps(spec: ps.SearchSpec) -> list[int]:
    """Steps of each successive-halving rung of the search (as `SearchSettings.rungs`)."""
    st = spec.search
    total = spec.finetune.steps
    if not st.rungs or not total:
        return []
    return [max(1, round(total / st.eta ** (st.rungs - r))) for r in range(st.rungs)]


def proxy_tau(
    b: Bench, spec: ps.SearchSpec, res: ps.SearchResult, n: int
) -> tuple[dict[str, float], str]:
    """Kendall's tau between each fidelity's score and the recovered test top-1 of ``n``
    candidates spread evenly over the search's score range; the taus and a note.

    Fidelities: ``bn`` (BatchNorm re-estimation, computed here), ``search`` (the cheap
    score the search ranked by) and one per successive-halving rung (``rung1``, ...: the
    search's own `Evaluator.probe` with that rung's steps, run here on every pick).
    """
    space = ps.Space(b.base, b.graph, b.scores, spec.space)
    pool = candidates(res)[::-1]  # ascending score
    if n < 2 or len(pool) < 2:
        return {}, f"proxy tau: too few candidates ({len(pool)} distinct scored) or --tau < 2"
    picks = [pool[i] for i in sorted({round(k * (len(pool) - 1) / (n - 1)) for k in range(n)})]
    ev = ps.Evaluator(
        ps.Workload(
            model=b.base,
            example_inputs=b.example,
            graph=b.graph,
            scores=b.scores,
            space=spec.space,
            settings=spec.search,
            finetune=spec.finetune,
            data=ps.SearchData(train=b.train(0), val=b.score, score=b.score),
        )
    )
    rungs = rung_steps(spec)
    fid: dict[str, list[float]] = {"bn": [], "search": []}
    fid.update({f"rung{i + 1}": [] for i in range(len(rungs))})
    final = []
    for t in picks:
        final.append(tuned_top1(b, space, t.config))
        fid["bn"].append(bn_score(b, pruned(b, space.plan(t.config))))
        fid["search"].append(t.score or 0.0)
        for i, steps in enumerate(rungs):
            fid[f"rung{i + 1}"].append(ev.probe(t.config, steps).score)
        print(f"    tau pick #{t.number}: test top-1 {final[-1]:.4f}", flush=True)
    taus = {name: float(kendalltau(x, final).statistic) for name, x in fid.items()}
    pairs = ", ".join(
        f"#{t.number} " + "/".join(f"{fid[k][i]:.3f}" for k in fid) + f" -> {final[i]:.4f}"
        for i, t in enumerate(picks)
    )
    steps = ", ".join(f"rung{i + 1} {s} steps" for i, s in enumerate(rungs))
    note = (
        f"proxy: {len(picks)} candidates spread over the cheap-score range, each recovered "
        f"like the rows ({' / '.join(fid)} score -> test top-1{'; ' + steps if steps else ''}"
        f"): {pairs}; Kendall tau " + ", ".join(f"{k} {v:+.2f}" for k, v in taus.items())
    )
    return taus, note


def spread_check(
    b: Bench, spec: ps.SearchSpec, keep: float, n: int, uni: float, seed: int = 0
) -> str:
    """Recover ``n`` random configs filled to the MACs budget like every row; a note line.

    Keep ratios are drawn log-uniformly in [0.15, 1] per dimension, then filled to the
    budget as the search fills its candidates (`Budgets.fill`): a spread of allocations,
    from near-uniform to lopsided, that bounds what any ratio choice gains here.
    """
    space = ps.Space(b.base, b.graph, b.scores, spec.space)
    budgets = Budgets(space, b.graph, {"flops": keep * b.macs}, spec.search)
    gen = torch.Generator().manual_seed(1000 + seed)
    accs: list[float] = []
    shapes: list[str] = []
    for _ in range(n):
        raw = {
            d.name: float(torch.exp(torch.empty(1).uniform_(math.log(0.15), 0.0, generator=gen)))
            for d in space.dims
        }
        cfg = budgets.fill(raw)
        accs.append(tuned_top1(b, space, cfg))
        shapes.append("/".join(f"{v:.2f}" for v in cfg.values()))
        print(f"    spread {len(accs)}/{n}: keep {shapes[-1]} -> {accs[-1]:.4f}", flush=True)
    pairs = ", ".join(f"{c} -> {a:.4f}" for c, a in zip(shapes, accs, strict=True))
    return (
        f"{n} random allocations filled to the MACs budget, each recovered like the rows "
        f"(keep ratio per dimension -> test top-1): {pairs}; max {max(accs):.4f} = uniform "
        f"{max(accs) - uni:+.4f}, median {statistics.median(accs):.4f}"
    )


def spec_for(
    b: Bench, budget: dict[str, Any], args: argparse.Namespace, trials: int | None = None
) -> ps.SearchSpec:
    """The search spec of a scenario: the search's defaults, but for the benchmark's data
    sizes, latency slack and whatever ``--trials``/``--score-steps``/``--top-k`` set."""
    given = {
        "trials": trials if trials is not None else args.trials,
        "score_steps": args.score_steps,
        "top_k": args.top_k,
        "rungs": args.rungs,
        "eta": args.eta,
    }
    settings = ps.SearchSettings(
        criterion="l2",
        bn_batches=BN_BATCHES,
        score_batches=SCORE_IMAGES // 500,
        # this shared machine drifts by several % within a minute: more headroom
        latency_slack=0.06,
        **{k: v for k, v in given.items() if v is not None},
    )
    constraints = {**budget, "target": b.target} if "latency_ms" in budget else budget
    return ps.SearchSpec(
        constraints=ps.Constraints.model_validate(constraints),
        search=settings,
        finetune=b.recipe,
    )


def run_search(b: Bench, spec: ps.SearchSpec, workers: int) -> tuple[ps.SearchResult, float, float]:
    """Run a search on a Ray pool; returns the result, total and search-phase seconds."""
    marks: dict[str, float] = {}

    def progress(p: ps.SearchProgress) -> None:
        marks.setdefault(p.phase, time.perf_counter())
        if p.phase == "searching" and p.trials_done and p.trials_done % 10 == 0:
            print(f"    {p.trials_done}/{p.trials_planned} trials, best {p.best_score}", flush=True)

    data = ps.SearchData(train=b.train(0), val=b.score, score=b.score)
    pool = RayPool(workers, device="cpu", threads=1)
    t0 = time.perf_counter()
    try:
        res = ps.search(b.base, b.example, data, spec, pool=pool, callback=progress)
    finally:
        pool.close()
    total = time.perf_counter() - t0
    phase = marks.get("finalists", time.perf_counter()) - marks.get("searching", t0)
    return res, total, phase


def parse(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options (``--quick`` shrinks everything to a sanity run)."""
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--trials", type=int, help="candidates per search (default: the search's)")
    ap.add_argument(
        "--score-steps", type=int, help="fine-tune steps per candidate (default: the search's)"
    )
    ap.add_argument("--top-k", type=int, help="finalists fine-tuned (default: the search's)")
    ap.add_argument(
        "--rungs", type=int, help="successive-halving rungs (default: the search's; 0: none)"
    )
    ap.add_argument("--eta", type=int, help="halving factor of the rungs (default: the search's)")
    ap.add_argument(
        "--ft-steps",
        type=int,
        default=300,
        help="recovery steps: the search's finetune.steps for its winner and every row's",
    )
    ap.add_argument(
        "--distill",
        action=argparse.BooleanOptionalAction,
        default=ps.FinetuneSettings().distill,
        help="recovery distils from the unpruned model (the search's finetune.distill too; "
        "default: the job's default)",
    )
    ap.add_argument("--ft-seeds", type=int, default=3, metavar="K", help="recovery seeds per row")
    ap.add_argument(
        "--tau",
        type=int,
        default=8,
        metavar="N",
        help="recover N candidates per search and report Kendall's tau of each fidelity's "
        "score against their test top-1 (0: skip)",
    )
    ap.add_argument("--epochs", type=int, default=10, help="training epochs of the base model")
    ap.add_argument("--workers", type=int, default=2, help="Ray workers for the main searches")
    ap.add_argument("--throughput-trials", type=int, default=20)
    ap.add_argument("--scenarios", nargs="*", choices=SCENARIOS, default=list(SCENARIOS))
    ap.add_argument(
        "--quick",
        action="store_true",
        help="tiny sanity run: 1-epoch base, 8 trials, 10 recovery steps, 2 seeds, tau on 3, "
        "no throughput runs (not appended)",
    )
    ap.add_argument("--no-tp", action="store_true", help="skip the Torch-Pruning rows")
    ap.add_argument("--no-append", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--top-check",
        type=int,
        default=0,
        metavar="N",
        help="also recover the N best candidates by cheap score and report their test top-1",
    )
    ap.add_argument(
        "--spread",
        type=int,
        default=0,
        metavar="N",
        help="MACs scenarios: also recover N random allocations filled to the budget (what "
        "any choice of ratios can gain over uniform on this model)",
    )
    ap.add_argument("--no-throughput", action="store_true", help="skip the 1-vs-2 workers runs")
    args = ap.parse_args(argv)
    if args.quick:
        args.trials, args.ft_steps, args.throughput_trials = 8, 10, 6
        args.epochs, args.ft_seeds, args.tau, args.no_throughput = 1, 2, 3, True
    if args.ft_steps < 1 or args.ft_seeds < 1:
        ap.error("--ft-steps and --ft-seeds must be at least 1")
    return args


def setup(args: argparse.Namespace) -> tuple[Bench, float, int]:
    """Data, the trained model and everything rows share; also its test top-1 and groups."""
    data = load_fashion_mnist()
    xtr, ytr, xte, yte = data
    base, base_acc = train_mixnet(data, MixConfig(), args.epochs, 0)
    for p in base.parameters():
        p.requires_grad_(True)
    example = torch.randn(1, 1, 28, 28)
    graph = pp.trace(base, example)
    groups = sum(g.prunable for g in graph.groups)
    if groups < MIN_GROUPS:
        raise SystemExit(
            f"FashionMixNet has {groups} prunable groups; the benchmark needs {MIN_GROUPS}"
        )
    perm = torch.randperm(len(xtr), generator=torch.Generator().manual_seed(args.seed))
    held, rest = perm[:SCORE_IMAGES], perm[SCORE_IMAGES:]
    xft, yft = xtr[rest].contiguous(), ytr[rest].contiguous()

    def train(shift: int = 0) -> Batches:
        return Batches(xft, yft, 128, shuffle=True, augment=True, seed=args.seed + 1 + shift)

    b = Bench(
        base=base,
        graph=graph,
        example=example,
        macs=graph.macs(),
        scores=ps.score_channels(base, graph, "l2"),
        train=train,
        score=Batches(xtr[held].contiguous(), ytr[held].contiguous(), 500),
        test=Batches(xte, yte, 1000, limit=2 if args.quick else None),
        target=ps.LatencyTarget(device="cpu", batch_size=32, threads=1, warmup=5, repeats=30),
        base_latency=0.0,
        recipe=ps.FinetuneSettings(steps=args.ft_steps, distill=args.distill),
        seeds=args.ft_seeds,
        seed=args.seed,
    )
    b.base_latency = measure(b, base, repeats=60)
    return b, base_acc, groups


def builders(b: Bench, no_tp: bool) -> tuple[list[tuple[str, Callable[[float], nn.Module]]], str]:
    """The baseline rows' model builders (pruning strength -> model); a note on any skipped."""
    out: list[tuple[str, Callable[[float], nn.Module]]] = [
        ("uniform", lambda x: uniform_model(b, x)),
        ("global", lambda x: global_model(b, x)),
    ]
    lamp = lamp_strategy(b)
    if isinstance(lamp, str):
        print(f"  {lamp}", flush=True)
        skipped = lamp
    else:
        out.append(("lamp", lambda x: strategy_model(b, lamp, x)))
        skipped = ""
    if not no_tp:
        out.append(("tp-global", lambda x: tp_model(b, x)))
    return out, skipped


def latency_budget(b: Bench, uniform10: nn.Module) -> float:
    """The uniform 10 %-MACs model's latency over the original's (timed beside it, 3x the
    usual runs), as the fraction a percentage budget writes exactly."""
    return round(latency_ratio(b, uniform10, scale=3), 3)


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(1)
    started = time.perf_counter()
    b, base_acc, groups = setup(args)
    base_test = ps.evaluate(b.base, b.test).top1
    print(
        f"base: FashionMixNet, {groups} prunable groups, {b.macs / 1e6:.2f} M MACs, test top-1 "
        f"{base_test:.4f}, latency {b.base_latency:.2f} ms (batch 32, 1 thread)",
        flush=True,
    )
    build, lamp_note = builders(b, args.no_tp)
    rows: list[Row] = []
    notes: list[str] = [f"- {lamp_note}"] if lamp_note else []
    checks: list[tuple[str, bool]] = []
    uniform10: nn.Module | None = None
    lat_keep = math.nan
    for scenario in args.scenarios:
        print(f"scenario {scenario}:", flush=True)
        seen_notes, seen_checks = len(notes), len(checks)
        if scenario == "latency":
            if uniform10 is None:
                uniform10 = bisect_macs(lambda x: uniform_model(b, x), MACS_KEEP[LATENCY_OF], b)
            lat_keep = latency_budget(b, uniform10)
            budget: dict[str, Any] = {"latency_ms": f"{lat_keep * 100:g}%"}
            print(f"  latency budget: {lat_keep:.3f} of the original's", flush=True)
        else:
            budget = {"flops": f"{MACS_KEEP[scenario]:.0%}"}
        spec = spec_for(b, budget, args)
        res, total_s, _ = run_search(b, spec, args.workers)
        print(f"  searched config: {res.config}", flush=True)
        s_row = row_for(b, scenario, "searched", pruned(b, res.plan), total_s)
        s_row.ft_steps = res.steps
        s_row.cost = s_row.ft_steps / b.recipe.steps
        rows.append(s_row)
        notes.append(
            f"- {scenario}: the search's winner: {getattr(res, 'chosen', 'search')} "
            f"(test top-1 {ps.evaluate(res.model, b.test).top1:.4f} after its own recovery); "
            "the row recovers "
            f"its config with {b.seeds} seed(s) like every other row."
        )
        print(f"  searched: {s_row}", flush=True)
        models = [pruned(b, res.plan)]
        for name, builder in build:
            t0 = time.perf_counter()
            if scenario == "latency" and name == "uniform" and uniform10 is not None:
                m = uniform10  # its latency is the budget: no re-bisection under noise
            elif scenario == "latency":
                m = bisect_latency(builder, lat_keep, b)
            else:
                m = bisect_macs(builder, MACS_KEEP[scenario], b)
            row = row_for(b, scenario, name, m, time.perf_counter() - t0)
            if scenario == LATENCY_OF and name == "uniform":
                uniform10 = m
            rows.append(row)
            models.append(m)
            print(f"  {name}: {row}", flush=True)
        extra: list[nn.Module] = []
        if scenario == "latency":
            extra.append(pruned(b, ps.plan_for_macs(b.base, b.graph, b.scores, macs=res.macs)))
        lats = interleaved(b, [b.base, *models, *extra])
        base_now = lats[0]
        scen_rows = [r for r in rows if r.scenario == scenario]
        for r, lat in zip(scen_rows, lats[1 : 1 + len(models)], strict=True):
            r.latency_ms, r.latency_kept = lat, lat / base_now
        notes.append(
            f"- {scenario}: latencies re-measured round-robin (7 rounds x 10 runs, with the "
            f"original model: {base_now:.2f} ms in this pass); 'latency kept' is relative to it."
        )
        others = [r for r in scen_rows if r.method != "searched"]
        best = max(others, key=lambda r: r.acc)
        uni = next(r for r in others if r.method == "uniform")
        if args.tau:
            s_row.tau, note = proxy_tau(b, spec, res, args.tau)
            notes.append(f"- {scenario}: {note}")
            if scenario == "flops10" and s_row.tau:
                # the fidelity that picks the finalists: the last rung (the cheap score
                # without rungs)
                last = f"rung{len(rung_steps(spec))}" if rung_steps(spec) else "search"
                checks.append((f"flops10: proxy tau ({last}) >= 0.5", s_row.tau[last] >= 0.5))
        if args.top_check:
            notes.append(f"- {scenario}: {top_check(b, spec, res, args.top_check, uni.acc)}")
        if args.spread and scenario in MACS_KEEP:
            keep = MACS_KEEP[scenario]
            notes.append(f"- {scenario}: {spread_check(b, spec, keep, args.spread, uni.acc)}")
        if scenario == "flops25":
            sd = max(s_row.acc_sd, best.acc_sd)
            checks.append(
                (
                    f"{scenario}: searched >= best other row ({best.method}) - one sd",
                    s_row.acc >= best.acc - sd,
                )
            )
        else:
            checks.append(
                (
                    f"{scenario}: searched >= best other row ({best.method}) + 1.0 pt",
                    s_row.acc >= best.acc + 0.01,
                )
            )
        checks.append(
            (f"{scenario}: search cost <= {MAX_COST:g} fine-tunes", s_row.cost <= MAX_COST)
        )
        if scenario in MACS_KEEP:
            checks.append(
                (
                    f"{scenario}: searched meets the MACs budget",
                    s_row.macs_kept <= MACS_KEEP[scenario],
                )
            )
        else:
            latency_notes(b, spec, res, s_row, lats, base_now, extra[0], lat_keep, notes, checks)
        # each scenario's findings as soon as it ends (a cut-short run keeps them)
        for line in notes[seen_notes:]:
            print(f"  {line}", flush=True)
        for name, ok in checks[seen_checks:]:
            print(f"  - {'PASS' if ok else 'FAIL'}: {name}", flush=True)

    tput = throughput(b, args)
    if tput:
        speedup = tput[2] / tput[1]
        notes.append(
            f"- throughput ({args.throughput_trials} trials, no fine-tuning): 1 worker "
            f"{tput[1]:.1f} trials/min, 2 workers {tput[2]:.1f} trials/min: {speedup:.2f}x "
            "(target >= 1.6x)."
        )
        checks.append(("2 workers >= 1.6x the trials per minute of 1", speedup >= 1.6))

    body = report(args, b, rows, notes, checks, base_test, base_acc, groups, lat_keep, started)
    print()
    print(body)
    if not args.no_append and not args.quick:
        append_results("search.py", body)
        print("\nappended to benchmarks/RESULTS.md")
    return 0 if all(ok for _, ok in checks) else 1


def latency_notes(
    b: Bench,
    spec: ps.SearchSpec,
    res: ps.SearchResult,
    s_row: Row,
    lats: list[float],
    base_now: float,
    eq: nn.Module,
    keep: float,
    notes: list[str],
    checks: list[tuple[str, bool]],
) -> None:
    """The latency scenario's notes and checks: searched vs uniform of equal MACs, the
    budget, and the latency model's error on the five best candidates."""
    eq_lat = lats[-1]
    final_lat = res.latency.median_ms if res.latency else float("nan")
    base0 = res.baseline.latency.median_ms if res.baseline.latency else base_now
    ratio = s_row.latency_ms / eq_lat
    drift = res.latency_drift or (1.0, 1.0)
    notes.append(
        f"- latency: uniform model with the searched model's MACs "
        f"({pp.profile(eq, b.example).macs / b.macs:.3f} of the original) takes "
        f"{eq_lat:.2f} ms; searched {s_row.latency_ms:.2f} ms: ratio {ratio:.2f} "
        f"(target <= 0.85). Returned model: {s_row.latency_kept:.3f} of the original "
        f"in the round-robin pass (budget {keep}); the search's own anchored "
        f"re-measurement {final_lat:.2f} ms vs its budget "
        f"{res.limits['latency_ms']:.2f} ms (original {base0:.2f} ms at its start; "
        f"the original's latency was {drift[0]:.0%}-{drift[1]:.0%} of that during "
        "the search)."
    )
    checks.append(("latency: searched <= 0.85x uniform of equal MACs", ratio <= 0.85))
    checks.append(
        (
            "latency: returned model meets the latency budget",
            s_row.latency_kept <= keep and final_lat <= res.limits["latency_ms"],
        )
    )
    # latency model: the five best feasible candidates (those a top_k=5 search would
    # fine-tune), predicted at sampling time vs measured round-robin in the search's frame
    top = [t for t in candidates(res) if t.predicted_ms][:5]
    space = ps.Space(b.base, b.graph, b.scores, spec.space)
    lat_top = interleaved(b, [b.base, *(pruned(b, space.plan(t.config)) for t in top)], rounds=3)
    meas_top = [m * base0 / lat_top[0] for m in lat_top[1:]]
    errs = [
        abs((t.predicted_ms or 0.0) - meas) / meas for t, meas in zip(top, meas_top, strict=True)
    ]
    mape = statistics.median(errs) if errs else float("nan")
    pairs = ", ".join(
        f"#{t.number} {t.predicted_ms:.2f}/{meas:.2f}"
        for t, meas in zip(top, meas_top, strict=True)
    )
    notes.append(
        f"- latency model: median absolute percentage error on the 5 best feasible "
        f"candidates {mape:.1%} (target <= 10%; predicted at sampling time / measured "
        f"round-robin, ms in the search's frame: {pairs}); on the search's measured "
        f"finalists {(res.latency_model_error or float('nan')):.1%}."
    )
    checks.append(("latency model error <= 10%", mape <= 0.10))


def throughput(b: Bench, args: argparse.Namespace) -> dict[int, float]:
    """Trials per minute of the 25 % MACs search with 1 and 2 workers (no fine-tuning)."""
    tput: dict[int, float] = {}
    for workers in () if args.no_throughput else (1, 2):
        spec = spec_for(b, {"flops": "25%"}, args, trials=args.throughput_trials)
        spec = spec.model_copy(update={"finetune": spec.finetune.model_copy(update={"steps": 0})})
        res, _, phase = run_search(b, spec, workers)
        n = len([t for t in res.trials if t.state == "complete"])
        tput[workers] = n / (phase / 60)
        print(f"  throughput, {workers} worker(s): {tput[workers]:.1f} trials/min", flush=True)
    return tput


def report(
    args: argparse.Namespace,
    b: Bench,
    rows: list[Row],
    notes: list[str],
    checks: list[tuple[str, bool]],
    base_test: float,
    base_acc: float,
    groups: int,
    lat_keep: float,
    started: float,
) -> str:
    """The markdown section: setup, table, notes, checks."""
    header = [
        "scenario",
        "method",
        "test top-1 (mean ± sd)",
        "MACs kept",
        "latency ms",
        "latency kept",
        "search s",
        "search FT steps",
        "cost (fine-tunes)",
        "proxy tau (bn / search / rungs)",
    ]

    def tau(r: Row) -> str:
        return " / ".join(f"{v:+.2f}" for v in r.tau.values())

    table = format_table(
        header,
        [
            [
                r.scenario,
                r.method,
                f"{r.acc:.4f} ± {r.acc_sd:.4f}",
                f"{r.macs_kept:.3f}",
                f"{r.latency_ms:.2f}",
                f"{r.latency_kept:.3f}",
                f"{r.search_s:.0f}",
                "" if r.ft_steps is None else str(r.ft_steps),
                "" if r.cost is None else f"{r.cost:.1f}",
                tau(r),
            ]
            for r in rows
        ],
    )
    trials = args.trials if args.trials is not None else "the search's default number of"
    ft = b.recipe
    distill = ", distilled from the original" if ft.distill else ""
    return "\n".join(
        [
            f"Base: FashionMixNet {MixConfig()}, {groups} prunable groups, {b.macs / 1e6:.2f} M "
            f"MACs, {args.epochs} epochs, test top-1 {base_test:.4f} (cached accuracy "
            f"{base_acc:.4f}), CPU latency {b.base_latency:.2f} ms at batch 32, 1 thread.",
            f"Scenarios {', '.join(args.scenarios)}: MACs <= 25% / 10%; latency <= the uniform "
            f"10%-MACs model's ({lat_keep:.3f} of the original's, timed beside it; nan: not "
            f"run). {trials} trials per search on "
            f"{args.workers} Ray CPU workers, the search's defaults otherwise (score_steps "
            f"{args.score_steps or 'default'}, top_k {args.top_k or 'default'}, rungs "
            f"{'default' if args.rungs is None else args.rungs}, eta {args.eta or 'default'}: "
            f"rung steps {rung_steps(spec_for(b, {'flops': '10%'}, args)) or 'none'}). "
            "Recovery, "
            f"every row and the search's winner alike: BatchNorm re-estimation, {ft.steps} "
            f"SGD steps (batch 128, lr {ft.lr}){distill}; {b.seeds} seed(s) per row; test set "
            f"{len(b.test) * 1000 if args.quick else len(b.test.x)} images; 'search s' = the "
            "whole search (searched) or finding the ratio (others); 'search FT steps' = "
            "optimizer steps the search spent (`SearchResult.steps`: scoring, rungs and "
            "finalists), 'cost' = that over one "
            "recovery's steps (target <= 10).",
            "",
            table,
            "",
            *notes,
            *[f"- {'PASS' if ok else 'FAIL'}: {name}" for name, ok in checks],
            f"\nTotal wall time {time.perf_counter() - started:.0f}s.",
        ]
    )


if __name__ == "__main__":
    sys.exit(main())
