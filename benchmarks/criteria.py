"""Importance criteria x allocation on Fashion-MNIST, against Torch-Pruning, same fine-tune.

Data: Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package; nothing is downloaded
at run time. Once per machine::

    bash scripts/get-fashion-mnist.sh   # apt-get installs the package if missing, then
                                        # un-gzips its IDX files into
                                        # benchmarks/.cache/data/FashionMNIST/raw/

What it does:

1. Trains a small ResNet-style CNN (stride-2 stem, three basic blocks of 32/64/128
   channels; about 20 M MACs) to >= 92 % test accuracy once and caches it under
   ``benchmarks/.cache/`` (git-ignored).
2. For each FLOPs target (fraction of MACs kept: 50 %, 25 %, 10 %), for every registered
   prunepilot criterion with ``uniform`` and ``global`` allocation: score the channels of the
   trained model (data-driven criteria from one `calibrate` run on training batches), find the
   least pruning meeting the MACs target by bisection on ``graph.macs(plan)`` (uniform: on
   the ratio; global: on a threshold of mean-normalised scores, at most 90 % of a group),
   prune a copy, re-estimate BatchNorm statistics, evaluate, fine-tune, evaluate.
3. The same for Torch-Pruning's magnitude (``GroupMagnitudeImportance(p=2)``) and Taylor
   (``GroupTaylorImportance``) pruners, local (uniform) and global (``global_pruning=True``,
   ``max_pruning_ratio=0.9``), with ``pruning_ratio`` bisected until the same MACs target is
   met; gradients for Taylor come from the same number of training batches.

Every row gets the same BatchNorm re-estimation, the same fine-tune (SGD, fixed number of
steps, the same data order) and the same test set; MACs are counted for every row with
``prunepilot.profile``. The table and, per target, whether the best prunepilot row is at
least as accurate as the best Torch-Pruning row are printed and appended to
``benchmarks/RESULTS.md``.

Usage::

    python benchmarks/criteria.py [--quick] [--threads N] [--ft-steps N] [--no-append]

The first full run trains the base model (15 epochs, about 20 minutes on one shared CPU
core); later runs load it from the cache and take about 25 minutes.
"""

from __future__ import annotations

import argparse
import copy
import logging
import math
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from _models import append_results, format_table
from torch import nn

import prunepilot as pp
from prunepilot import search as ps

BENCH_DIR = Path(__file__).resolve().parent
CACHE = BENCH_DIR / ".cache"
DATA_ROOT = CACHE / "data"
RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
MEAN, STD = 0.2860, 0.3530
WIDTHS = (32, 64, 128)
TARGETS = (0.5, 0.25, 0.1)
MAX_RATIO = 0.9

log = logging.getLogger("criteria")


# --------------------------------------------------------------------------------- data


def load_fashion_mnist() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Normalised train/test images (N, 1, 28, 28) and labels; exits clearly when missing."""
    raw = DATA_ROOT / "FashionMNIST" / "raw"
    missing = [f for f in RAW_FILES if not (raw / f).is_file()]
    if missing:
        raise SystemExit(
            f"criteria.py: Fashion-MNIST is missing ({', '.join(missing)} not in {raw}).\n"
            "It comes from Debian's dataset-fashion-mnist package; run once:\n"
            "    bash scripts/get-fashion-mnist.sh\n"
            "(installs the package with apt-get if needed and un-gzips its IDX files there)."
        )
    import torchvision

    try:
        train = torchvision.datasets.FashionMNIST(str(DATA_ROOT), train=True, download=False)
        test = torchvision.datasets.FashionMNIST(str(DATA_ROOT), train=False, download=False)
    except RuntimeError as e:
        raise SystemExit(
            f"criteria.py: cannot read Fashion-MNIST from {raw} ({e}); re-run "
            "bash scripts/get-fashion-mnist.sh"
        ) from e

    def prep(images: torch.Tensor) -> torch.Tensor:
        return ((images.float() / 255 - MEAN) / STD).unsqueeze(1)

    return prep(train.data), train.targets.clone(), prep(test.data), test.targets.clone()


class Batches:
    """Mini-batches from in-memory tensors: seeded order, optional crop/flip augmentation."""

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch: int,
        *,
        shuffle: bool = False,
        augment: bool = False,
        seed: int = 0,
        limit: int | None = None,
    ) -> None:
        self.x, self.y, self.batch = x, y, batch
        self.shuffle, self.augment, self.seed = shuffle, augment, seed
        self.limit = limit
        self.epoch = 0

    def __len__(self) -> int:
        n = math.ceil(len(self.x) / self.batch)
        return min(n, self.limit) if self.limit is not None else n

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator().manual_seed(self.seed * 1000 + self.epoch)
        self.epoch += 1
        n = len(self.x)
        order = torch.randperm(n, generator=g) if self.shuffle else torch.arange(n)
        for k in range(len(self)):
            idx = order[k * self.batch : (k + 1) * self.batch]
            xb = self.x[idx]
            if self.augment:
                i, j = torch.randint(0, 5, (2,), generator=g).tolist()
                xb = F.pad(xb, (2, 2, 2, 2))[:, :, i : i + 28, j : j + 28]
                flip = torch.rand(len(idx), generator=g) < 0.5
                xb = torch.where(flip[:, None, None, None], xb.flip(3), xb)
            yield xb.contiguous(), self.y[idx]


# -------------------------------------------------------------------------------- model


class Block(nn.Module):
    """A ResNet basic block (two 3x3 conv-BN, projection shortcut when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = self.bn2(self.conv2(y))
        return F.relu(y + (x if self.short is None else self.short(x)))


class FashionResNet(nn.Module):
    """Stride-2 stem, three basic blocks (14x14, 7x7, 4x4), global pooling, linear head."""

    def __init__(self, widths: tuple[int, int, int] = WIDTHS, num_classes: int = 10) -> None:
        super().__init__()
        a, b, c = widths
        self.stem = nn.Sequential(
            nn.Conv2d(1, a, 3, 2, 1, bias=False), nn.BatchNorm2d(a), nn.ReLU()
        )
        self.l1 = Block(a, a, 1)
        self.l2 = Block(a, b, 2)
        self.l3 = Block(b, c, 2)
        self.fc = nn.Linear(c, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.l3(self.l2(self.l1(self.stem(x))))
        return self.fc(F.adaptive_avg_pool2d(y, 1).flatten(1))


def contiguous(model: nn.Module) -> nn.Module:
    """Standard (NCHW) memory format.

    Channels-last would be about 30 % faster here, but torch 2.14.1 corrupts the heap in the
    weight gradient of a 1x1 stride-2 channels-last convolution with 7 input channels (a
    shape pruning produces), so every model stays NCHW.
    """
    return model.to(memory_format=torch.contiguous_format)


def train_cached(
    model: nn.Module, data: tuple[torch.Tensor, ...], epochs: int, seed: int, path: Path, label: str
) -> tuple[nn.Module, float]:
    """Train ``model`` on the data (or load it from ``path``); returns it (eval mode) and its
    test top-1. SGD lr 0.1, cosine, batch 128 with crop/flip augmentation."""
    xtr, ytr, xte, yte = data
    test = Batches(xte, yte, 1000)
    model = contiguous(model)
    if path.is_file():
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        model = contiguous(model)
        acc = ps.evaluate(model, test).top1
        print(f"loaded {path.name}: test top-1 {acc:.4f}", flush=True)
        return model.eval(), acc
    torch.manual_seed(seed)
    print(f"training {label} for {epochs} epoch(s) (cached afterwards)...", flush=True)
    started = time.perf_counter()

    def report(p: ps.Progress) -> None:
        if p.stage == "eval":
            print(
                f"  epoch {p.epoch + 1}/{epochs}: test top-1 {p.metric:.4f} "
                f"({time.perf_counter() - started:.0f}s)",
                flush=True,
            )

    tr = ps.Trainer(
        model, lr=0.1, momentum=0.9, weight_decay=5e-4, callback=report, log_every=10**9
    )
    train = Batches(xtr, ytr, 128, shuffle=True, augment=True, seed=seed)
    tr.fit(train, epochs=epochs, val_loader=test, restore_best=False)
    acc = ps.evaluate(model, test).top1
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict(), "top1": acc, "epochs": epochs}, path)
    print(f"trained {label}: test top-1 {acc:.4f} ({time.perf_counter() - started:.0f}s)")
    return model.eval(), acc


def train_base(
    data: tuple[torch.Tensor, ...], epochs: int, seed: int, path: Path
) -> tuple[nn.Module, float]:
    """Train (or load from ``path``) the base model; returns it and its test top-1."""
    return train_cached(FashionResNet(), data, epochs, seed, path, "the base model")


# -------------------------------------------------------------------------------- rows


@dataclass
class Row:
    """One table row."""

    target: float
    tool: str
    criterion: str
    allocation: str
    macs_kept: float
    params_kept: float
    acc_before: float
    acc_after: float
    search_s: float
    total_s: float


@dataclass
class Setup:
    """Everything every row shares."""

    base: nn.Module
    example: torch.Tensor
    macs: int
    params: int
    train_ft: Callable[[], Batches]
    bn_loader: list[tuple[torch.Tensor, torch.Tensor]]
    test: Batches
    ft_steps: int
    ft_lr: float
    bn_steps: int
    seed: int


def finish_row(s: Setup, pruned: nn.Module, t0: float, search_s: float, **fields: Any) -> Row:
    """The shared tail of every row: BN re-estimation, evaluate, fine-tune, evaluate."""
    pruned = contiguous(pruned)
    prof = pp.profile(pruned, s.example)
    ps.recalibrate_bn(pruned, s.bn_loader, steps=s.bn_steps)
    before = ps.evaluate(pruned, s.test).top1
    torch.manual_seed(s.seed)
    tr = ps.Trainer(pruned, lr=s.ft_lr, momentum=0.9, weight_decay=5e-4)
    tr.fit(s.train_ft(), epochs=None, max_steps=s.ft_steps)
    after = ps.evaluate(pruned, s.test).top1
    return Row(
        macs_kept=prof.macs / s.macs,
        params_kept=prof.params / s.params,
        acc_before=before,
        acc_after=after,
        search_s=search_s,
        total_s=time.perf_counter() - t0,
        **fields,
    )


def prunepilot_scores(
    s: Setup,
    graph: pp.ChannelGraph,
    criteria: list[str],
    calib: list[tuple[torch.Tensor, torch.Tensor]],
    sens_batches: int,
) -> dict[str, tuple[ps.Scores, float]]:
    """Scores of every criterion on the base model, with the seconds each took."""
    out: dict[str, tuple[ps.Scores, float]] = {}
    driven = [c for c in criteria if ps.get_criterion(c).data_driven and c != "sensitivity"]
    cal_s = 0.0
    cal = None
    if driven:
        t = time.perf_counter()
        cal = ps.calibrate(
            s.base, calib, F.cross_entropy, steps=len(calib), graph=graph, criteria=driven
        )
        cal_s = time.perf_counter() - t
    for c in criteria:
        t = time.perf_counter()
        use = cal
        if c == "sensitivity":
            use = ps.calibrate(
                s.base,
                calib,
                F.cross_entropy,
                steps=1,
                graph=graph,
                criteria=["sensitivity"],
                sensitivity_batches=sens_batches,
            )
        scores = ps.score_channels(s.base, graph, c, calibration=use)
        took = time.perf_counter() - t + (cal_s if c in driven else 0.0)
        out[c] = (scores, took)
        print(f"  scored {c:16s} in {took:6.1f}s", flush=True)
    return out


def prunepilot_row(
    s: Setup,
    graph: pp.ChannelGraph,
    target: float,
    criterion: str,
    scores: ps.Scores,
    score_s: float,
    allocation: str,
) -> Row:
    t0 = time.perf_counter()
    strategy = ps.Strategy(allocation=allocation, max_remove=MAX_RATIO)  # type: ignore[arg-type]
    plan = ps.plan_for_macs(s.base, graph, scores, keep=target, strategy=strategy)
    pruned = copy.deepcopy(s.base)
    pp.prune_channels(pruned, graph, plan)
    search_s = time.perf_counter() - t0 + score_s
    return finish_row(
        s,
        pruned,
        t0 - score_s,
        search_s,
        target=target,
        tool="prunepilot",
        criterion=criterion,
        allocation=allocation,
    )


def tp_row(
    s: Setup, target: float, method: str, global_pruning: bool, grads: dict[str, torch.Tensor]
) -> Row:
    """Torch-Pruning with ``pruning_ratio`` bisected to the MACs target."""
    import torch_pruning as tp

    t0 = time.perf_counter()

    def prune_at(ratio: float) -> nn.Module:
        model = copy.deepcopy(s.base)
        if method == "taylor":
            for n, p in model.named_parameters():
                p.grad = grads[n].clone()
            imp: Any = tp.importance.GroupTaylorImportance()
        else:
            imp = tp.importance.GroupMagnitudeImportance(p=2)
        pruner = tp.pruner.MetaPruner(
            model,
            s.example,
            importance=imp,
            pruning_ratio=ratio,
            global_pruning=global_pruning,
            max_pruning_ratio=MAX_RATIO,
            ignored_layers=[model.fc],
        )
        pruner.step()
        model.zero_grad(set_to_none=True)
        return model

    lo, hi = 0.0, MAX_RATIO
    best = prune_at(hi)
    if pp.profile(best, s.example).macs > target * s.macs:
        log.warning("Torch-Pruning %s cannot reach %.2f of MACs", method, target)
    else:
        for _ in range(14):
            mid = (lo + hi) / 2
            m = prune_at(mid)
            if pp.profile(m, s.example).macs <= target * s.macs:
                hi, best = mid, m
            else:
                lo = mid
            if hi - lo < 2e-3:
                break
    search_s = time.perf_counter() - t0
    return finish_row(
        s,
        best,
        t0,
        search_s,
        target=target,
        tool="torch-pruning",
        criterion=f"tp:{method}",
        allocation="global" if global_pruning else "uniform",
    )


def base_grads(s: Setup, calib: list[tuple[torch.Tensor, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Summed gradients over the calibration batches (Torch-Pruning Taylor reads .grad)."""
    model = copy.deepcopy(s.base).eval()
    model.zero_grad(set_to_none=True)
    for xb, yb in calib:
        F.cross_entropy(model(xb), yb).backward()
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


# --------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument(
        "--quick",
        action="store_true",
        help="a fast sanity run: 3 criteria, one target, short fine-tune, "
        "2000 test images (not appended unless --append)",
    )
    ap.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: on the shared 2-core machine 2 threads measured "
        "8x slower per training step than 1)",
    )
    ap.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="base-model training epochs (default 15; --quick: 1)",
    )
    ap.add_argument(
        "--ft-steps",
        type=int,
        default=None,
        help="fine-tune steps of batch 128 per row (default 80; --quick: 10)",
    )
    ap.add_argument("--ft-lr", type=float, default=0.01, help="fine-tune peak learning rate")
    ap.add_argument("--criteria", nargs="*", default=None, help="prunepilot criteria to run")
    ap.add_argument(
        "--targets",
        nargs="*",
        type=float,
        default=None,
        help="fractions of MACs kept (default 0.5 0.25 0.1)",
    )
    ap.add_argument("--no-tp", action="store_true", help="skip the Torch-Pruning rows")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--append", action="store_true", help="append a --quick run too")
    ap.add_argument("--no-append", action="store_true", help="do not touch RESULTS.md")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    torch.set_num_threads(args.threads)

    quick = args.quick
    epochs = args.epochs or (1 if quick else 15)
    ft_steps = args.ft_steps if args.ft_steps is not None else (10 if quick else 80)
    criteria = args.criteria or (["l2", "fpgm", "taylor"] if quick else ps.available_criteria())
    targets = args.targets or ([0.5] if quick else list(TARGETS))
    for t in targets:
        if not 0 < t < 1:
            raise SystemExit(f"targets are fractions of MACs kept in (0, 1); got {t}")
    unknown = [c for c in criteria if c not in ps.available_criteria()]
    if unknown:
        raise SystemExit(f"unknown criteria {unknown}; available: {ps.available_criteria()}")

    started = time.perf_counter()
    data = load_fashion_mnist()
    xtr, ytr, xte, yte = data
    path = CACHE / f"fashion_resnet_{'-'.join(map(str, WIDTHS))}_e{epochs}_s{args.seed}.pt"
    base, base_acc = train_base(data, epochs, args.seed, path)
    for p in base.parameters():
        p.requires_grad_(True)
    example = torch.randn(1, 1, 28, 28)
    prof = pp.profile(base, example)
    test = Batches(xte, yte, 1000, limit=2 if quick else None)
    s = Setup(
        base=base,
        example=example,
        macs=prof.macs,
        params=prof.params,
        train_ft=lambda: Batches(xtr, ytr, 128, shuffle=True, augment=True, seed=args.seed + 1),
        bn_loader=list(Batches(xtr, ytr, 256, shuffle=True, seed=args.seed + 2, limit=10)),
        test=test,
        ft_steps=ft_steps,
        ft_lr=args.ft_lr,
        bn_steps=10,
        seed=args.seed,
    )
    base_eval = ps.evaluate(base, test).top1
    print(
        f"base: {prof.macs / 1e6:.1f} M MACs, {prof.params / 1e3:.1f} k params, "
        f"test top-1 {base_acc:.4f} (full test set)",
        flush=True,
    )
    # a fixed list: every consumer (prunepilot calibration, sensitivity, Torch-Pruning's
    # gradients) sees the same 16 batches in the same order
    calib = list(Batches(xtr, ytr, 128, shuffle=True, seed=args.seed + 3, limit=16))
    graph = pp.trace(base, example)
    print("scoring (once per criterion, on the trained model):", flush=True)
    scored = prunepilot_scores(s, graph, criteria, calib, sens_batches=2)
    grads = base_grads(s, calib) if not args.no_tp else {}

    rows: list[Row] = []
    for target in targets:
        for c in criteria:
            scores, score_s = scored[c]
            for allocation in ("uniform", "global"):
                row = prunepilot_row(s, graph, target, c, scores, score_s, allocation)
                rows.append(row)
                print(
                    f"  {target:.2f} {c:16s} {allocation:8s} MACs {row.macs_kept:.3f} "
                    f"acc {row.acc_before:.4f} -> {row.acc_after:.4f} ({row.total_s:.0f}s)",
                    flush=True,
                )
        if not args.no_tp:
            for method in ("magnitude", "taylor"):
                for glob in (False, True):
                    row = tp_row(s, target, method, glob, grads)
                    rows.append(row)
                    print(
                        f"  {target:.2f} tp:{method:13s} {row.allocation:8s} MACs "
                        f"{row.macs_kept:.3f} acc {row.acc_before:.4f} -> "
                        f"{row.acc_after:.4f} ({row.total_s:.0f}s)",
                        flush=True,
                    )

    header = [
        "target",
        "tool",
        "criterion",
        "allocation",
        "FLOPs kept",
        "params kept",
        "acc before FT",
        "acc after FT",
        "search s",
        "row s",
    ]
    table_rows = [
        [
            f"{r.target:.2f}",
            r.tool,
            r.criterion,
            r.allocation,
            f"{r.macs_kept:.3f}",
            f"{r.params_kept:.3f}",
            f"{r.acc_before:.4f}",
            f"{r.acc_after:.4f}",
            f"{r.search_s:.1f}",
            f"{r.total_s:.1f}",
        ]
        for r in rows
    ]
    lines = [
        f"Base model: FashionResNet {WIDTHS}, {prof.macs / 1e6:.2f} M MACs, "
        f"{prof.params / 1e3:.1f} k params, test top-1 {base_acc:.4f} "
        f"({'>=' if base_acc >= 0.92 else 'BELOW'} 0.92; trained {epochs} epochs).",
        f"Every row: BatchNorm re-estimation on 10 batches of 256, then test top-1 ('before "
        f"FT'), then {ft_steps} SGD steps of batch 128 (lr {args.ft_lr}, cosine, momentum "
        f"0.9, same data order), then test top-1 ('after FT'); test set: "
        f"{len(test) * 1000 if quick else len(xte)} images. FLOPs = MACs counted by "
        "prunepilot.profile for every row. 'search s' = scoring (shared per criterion, counted "
        "in each row) + finding the plan/ratio that meets the target + pruning.",
        "",
        format_table(header, table_rows),
        "",
    ]
    verdicts = []
    for target in targets:
        mine = [r for r in rows if r.target == target and r.tool == "prunepilot"]
        theirs = [r for r in rows if r.target == target and r.tool == "torch-pruning"]
        if not mine or not theirs:
            continue
        bm = max(mine, key=lambda r: r.acc_after)
        bt = max(theirs, key=lambda r: r.acc_after)
        ok = bm.acc_after >= bt.acc_after
        verdicts.append(ok)
        lines.append(
            f"- target {target:.2f}: best prunepilot {bm.criterion}/{bm.allocation} "
            f"{bm.acc_after:.4f} (FLOPs {bm.macs_kept:.3f}) vs best Torch-Pruning "
            f"{bt.criterion}/{bt.allocation} {bt.acc_after:.4f} (FLOPs {bt.macs_kept:.3f}): "
            f"{'prunepilot at least as accurate' if ok else 'Torch-Pruning MORE accurate'}"
        )
    lines.append(
        f"\nTotal wall time {time.perf_counter() - started:.0f}s "
        f"({args.threads} threads; base eval on the row test set {base_eval:.4f})."
    )
    body = "\n".join(lines)
    print()
    print(body)
    if not args.no_append and (not quick or args.append):
        append_results("criteria.py", body)
        print("\nappended to benchmarks/RESULTS.md")
    return 0 if all(verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())
