"""Model coverage benchmark: can prunepilot (and Torch-Pruning) prune each model correctly?

For every model (torchvision classification / detection / segmentation / optical flow / video
and a set of timm models, all randomly initialised) a fresh subprocess runs one tool with a time
limit and prints a single JSON line; the parent collects the lines into a markdown table.

prunepilot check: ``trace`` -> ``select(remove=0.5)`` -> zero the selected channels on a copy
and run it (``ref``) -> physically prune that copy and run it (``out``). Success means the
pruned model runs, its output has the unpruned model's structure and shapes, its MACs dropped
(for detection models, against a run that found as many boxes as the pruned model, as only it
took the same path: the zeroed copy, else the unpruned model; a detector's heads run once per
box, and pruning a random model changes its boxes; with no such run MACs are not compared),
and ``out`` matches ``ref`` (max |out - ref| / max |ref| <= 1e-4 per tensor leaf). The value
check is skipped where a pruned group touches a LayerNorm/GroupNorm-like module (zeroed
channels still count in their statistics), and is "n/a" for detection models whose two runs
return different numbers of boxes.

Torch-Pruning check: ``BasePruner`` with ``GroupMagnitudeImportance(p=2)``,
``pruning_ratio=0.5``, ``round_to=None`` and ignored layers following Torch-Pruning's own
torchvision/timm examples; success means the pruned model runs with the same output structure
and shapes and fewer MACs (``tp.utils.count_ops_and_params``; for detection models only when
the pruned model found as many boxes as the unpruned one: Torch-Pruning has no zeroed copy).

Usage::

    python benchmarks/coverage.py [--models NAME ...] [--filter REGEX] [--timeout SEC]
                                  [--no-tp] [--small] [--jobs N] [--no-write]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import copy
import json
import logging
import os
import re
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from _models import (
    SEED_MODELS,
    SMALL_MODELS,
    ModelSpec,
    all_specs,
    append_results,
    format_table,
    resolve_names,
)
from torch import nn
from torch.utils._pytree import tree_flatten

log = logging.getLogger("coverage")

RATIO = 0.5
VALUE_TOL = 1e-4
ERROR_CHARS = 200
SCRIPT = Path(__file__).resolve()

TOOLS = ("prunepilot", "tp")


# --------------------------------------------------------------------------------------------
# Output comparison
# --------------------------------------------------------------------------------------------


def _short(exc: BaseException, stage: str) -> str:
    """Formats an exception for the table, truncated to ``ERROR_CHARS`` characters."""
    msg = " ".join(f"{stage}: {type(exc).__name__}: {exc}".split())
    return msg[:ERROR_CHARS]


def compare_structure(out: Any, base: Any, *, ragged_dim0: bool) -> str | None:
    """Checks that ``out`` has the pytree structure and tensor shapes of ``base``.

    Args:
        out: output of the pruned model.
        base: output of the unpruned model.
        ragged_dim0: ignore the leading dimension of every tensor leaf (detection outputs have
            a data-dependent number of boxes).

    Returns:
        ``None`` if they match, otherwise a description of the first difference.
    """
    leaves_o, spec_o = tree_flatten(out)
    leaves_b, spec_b = tree_flatten(base)
    if spec_o != spec_b:
        return f"output structure differs: {spec_o} vs {spec_b}"[:ERROR_CHARS]
    for i, (a, b) in enumerate(zip(leaves_o, leaves_b, strict=True)):
        if isinstance(a, torch.Tensor) != isinstance(b, torch.Tensor):
            return f"output leaf {i}: tensor vs non-tensor"
        if not isinstance(a, torch.Tensor):
            continue
        sa, sb = tuple(a.shape), tuple(b.shape)
        if ragged_dim0 and a.dim() == b.dim() and a.dim() > 0:
            sa, sb = sa[1:], sb[1:]
        if sa != sb:
            return f"output leaf {i}: shape {tuple(a.shape)} vs unpruned {tuple(b.shape)}"
    return None


def max_rel_error(out: Any, ref: Any) -> float | None:
    """Largest per-leaf relative error ``max|out - ref| / (max|ref| + 1e-12)``.

    Args:
        out: output of the pruned model.
        ref: output of the channel-zeroed (unpruned) model.

    Returns:
        The worst relative error over all tensor leaves (``inf`` for NaN/inf mismatches), or
        ``None`` if the structures or shapes differ (values not comparable).
    """
    leaves_o, spec_o = tree_flatten(out)
    leaves_r, spec_r = tree_flatten(ref)
    if spec_o != spec_r:
        return None
    worst = 0.0
    for a, b in zip(leaves_o, leaves_r, strict=True):
        if not isinstance(a, torch.Tensor) or not isinstance(b, torch.Tensor):
            continue
        if a.shape != b.shape:
            return None
        if a.numel() == 0:
            continue
        a64, b64 = a.detach().double(), b.detach().double()
        err = float((a64 - b64).abs().max() / (b64.abs().max() + 1e-12))
        if err != err:  # NaN
            err = float("inf")
        worst = max(worst, err)
    return worst


def _is_channel_norm(module: nn.Module) -> bool:
    """True for LayerNorm/GroupNorm-like modules (statistics over channels), not BatchNorm."""
    if isinstance(module, nn.LayerNorm | nn.GroupNorm):
        return True
    cls = type(module).__name__
    return "Norm" in cls and "BatchNorm" not in cls


def norm_over_pruned(model: nn.Module, graph: Any, plan: dict[str, list[int]]) -> str | None:
    """Finds a LayerNorm/GroupNorm-like module among the members of the pruned groups.

    Args:
        model: the unpruned model.
        graph: its prunepilot ``ChannelGraph``.
        plan: group id -> channels to remove.

    Returns:
        ``"<class> at <module name>"`` for the first such module, else ``None``.
    """
    groups = {g.id: g for g in graph.groups}
    for gid, channels in plan.items():
        if not channels or gid not in groups:
            continue
        for member in groups[gid].members:
            owner = member.name.rpartition(".")[0]
            try:
                module = model.get_submodule(owner)
            except AttributeError:
                continue
            if _is_channel_norm(module):
                return f"{type(module).__name__} at {owner or '<root>'}"
    return None


def _num_boxes(out: Any) -> int:
    """Number of detections in a torchvision detection output (first image)."""
    leaves = [t for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)]
    return int(leaves[0].shape[0]) if leaves and leaves[0].dim() > 0 else 0


def _like_for_like(res: dict[str, Any], candidates: list[tuple[int, str]]) -> str | None:
    """The MACs key of the first run that found as many boxes as the pruned model (a
    detector's heads run once per box, so only such a run took the same path), else ``None``."""
    pruned = res["boxes"][-1]
    return next((key for boxes, key in candidates if boxes == pruned), None)


def _macs_problems(res: dict[str, Any], key: str | None) -> list[str]:
    """``"MACs not reduced"`` when the pruned model's MACs are not below those under ``key``
    (kept as ``res["macs_vs"]``); ``None`` (no run took the pruned detector's path) leaves
    MACs unchecked, noted."""
    res["macs_vs"] = key
    if key is None:
        res["macs_check"] = "n/a: no run found as many boxes as the pruned model"
        return []
    ref = res[key]
    return [f"MACs not reduced ({res['macs_after']} >= {ref})"] if res["macs_after"] >= ref else []


def _pp_inputs(args: tuple[Any, ...]) -> Any:
    """Example inputs in prunepilot's convention: a tensor, or a tuple of positional args."""
    if len(args) == 1 and isinstance(args[0], torch.Tensor):
        return args[0]
    return args


# --------------------------------------------------------------------------------------------
# Workers (run in a subprocess, one model and one tool each)
# --------------------------------------------------------------------------------------------


def run_prunepilot(spec: ModelSpec) -> dict[str, Any]:
    """Traces, selects, zero-checks and prunes one model with prunepilot.

    Args:
        spec: the model to test.

    Returns:
        A JSON-serialisable result record.
    """
    res: dict[str, Any] = {"model": spec.name, "tool": "prunepilot", "ok": False, "error": None}
    stage = "import"
    try:
        import prunepilot

        stage = "build"
        torch.manual_seed(0)
        model = spec.build()
        args = spec.example_inputs()
        pp_in = _pp_inputs(args)
        with torch.no_grad():
            base = model(*args)

        stage = "trace"
        t0 = time.perf_counter()
        graph = prunepilot.trace(model, pp_in)
        res["trace_s"] = round(time.perf_counter() - t0, 3)
        res["groups"] = len(graph.groups)
        res["prunable"] = sum(1 for g in graph.groups if g.prunable)

        stage = "select"
        plan = prunepilot.select(model, graph, remove=RATIO)
        res["pruned_groups"] = sum(1 for ch in plan.values() if ch)
        res["pruned_channels"] = sum(len(ch) for ch in plan.values())
        norm = norm_over_pruned(model, graph, plan)

        stage = "profile"
        res["macs_before"] = int(prunepilot.profile(model, pp_in).macs)

        stage = "zero_channels"
        work = copy.deepcopy(model)
        prunepilot.zero_channels(work, graph, plan)
        if spec.task == "detection":
            # A detector's MACs depend on its detections (the heads run per box), which
            # pruning a random model changes: compare MACs with the zeroed model's, which
            # takes the pruned model's path (when both find as many boxes; the value check
            # below compares them).
            stage = "profile (zeroed)"
            res["macs_zeroed"] = int(prunepilot.profile(work, pp_in).macs)
        stage = "forward (zeroed)"
        with torch.no_grad():
            ref = work(*args)

        stage = "prune_channels"
        prunepilot.prune_channels(work, graph, plan)
        stage = "forward (pruned)"
        with torch.no_grad():
            out = work(*args)

        stage = "profile (pruned)"
        res["macs_after"] = int(prunepilot.profile(work, pp_in).macs)

        stage = "compare"
        problems: list[str] = []
        shape_err = compare_structure(out, base, ragged_dim0=spec.task == "detection")
        if shape_err:
            problems.append(shape_err)
        macs_key: str | None = "macs_before"
        if spec.task == "detection":
            unpruned, zeroed, _ = res["boxes"] = [
                _num_boxes(base),
                _num_boxes(ref),
                _num_boxes(out),
            ]
            macs_key = _like_for_like(res, [(zeroed, "macs_zeroed"), (unpruned, "macs_before")])
        problems += _macs_problems(res, macs_key)
        if norm is not None:
            res["value"] = "skipped (norm over pruned dims)"
            res["norm_module"] = norm
        else:
            err = max_rel_error(out, ref)
            if err is None:
                res["value"] = "n/a"
                if spec.task != "detection":
                    problems.append("zeroed and pruned outputs have different shapes")
            else:
                res["value_err"] = err
                res["value"] = "pass" if err <= VALUE_TOL else "fail"
                if err > VALUE_TOL:
                    problems.append(f"value mismatch: rel err {err:.3g} > {VALUE_TOL:g}")
        res["ok"] = not problems
        if problems:
            res["error"] = "; ".join(problems)[:ERROR_CHARS]
    except Exception as exc:  # a failing model is a result, not a crash
        res["error"] = _short(exc, stage)
        res["stage"] = stage
        log.debug("prunepilot failed on %s", spec.name, exc_info=True)
    return res


_TP_DETECTION_IGNORES: tuple[tuple[str, tuple[str, ...]], ...] = (
    # Following Torch-Pruning's examples/torchvision_models/torchvision_global_pruning.py.
    ("ssd", ("head",)),
    (
        "fasterrcnn_",
        ("rpn.head.cls_logits", "rpn.head.bbox_pred", "backbone.fpn", "roi_heads"),
    ),
    (
        "fcos_",
        (
            "head.classification_head.cls_logits",
            "head.regression_head.bbox_reg",
            "head.regression_head.bbox_ctrness",
        ),
    ),
    (
        "keypointrcnn_",
        (
            "rpn.head.cls_logits",
            "backbone.fpn.layer_blocks",
            "rpn.head.bbox_pred",
            "roi_heads.box_head",
            "roi_heads.box_predictor",
            "roi_heads.keypoint_predictor",
        ),
    ),
    (
        "maskrcnn_",
        (
            "rpn.head.cls_logits",
            "rpn.head.bbox_pred",
            "roi_heads.box_predictor",
            "roi_heads.mask_predictor",
        ),
    ),
    ("retinanet_", ("head.classification_head.cls_logits", "head.regression_head.bbox_reg")),
    ("raft_", ("corr_block", "update_block", "mask_predictor")),
)


def tp_ignored_layers(spec: ModelSpec, model: nn.Module) -> list[nn.Module]:
    """Layers Torch-Pruning must not prune, following its own examples.

    Classifier layers (``nn.Linear``, and for classification / segmentation / video also
    convolutions, e.g. SqueezeNet's and S3D's conv classifiers or the segmentation heads' last
    convs) whose output size is the number of classes, plus the per-family detection /
    optical-flow heads listed in Torch-Pruning's torchvision example.

    Args:
        spec: the model's spec.
        model: the model.

    Returns:
        Modules to pass as ``ignored_layers``.
    """
    n = spec.num_classes
    ignored: list[nn.Module] = []
    for m in model.modules():
        is_fc = isinstance(m, nn.Linear) and m.out_features == n
        is_conv = (
            spec.task != "detection"
            and isinstance(m, nn.modules.conv._ConvNd)
            and m.out_channels == n
        )
        if is_fc or is_conv:
            ignored.append(m)
    for prefix, paths in _TP_DETECTION_IGNORES:
        if not spec.arch.startswith(prefix):
            continue
        for path in paths:
            try:
                sub = model.get_submodule(path)
            except AttributeError:
                log.debug("%s: no submodule %s to ignore", spec.name, path)
                continue
            ignored.append(sub)
    return ignored


def _qkv_attention(m: nn.Module) -> nn.Linear | None:
    """The fused qkv projection of a timm/torchvision-style attention module, if any."""
    qkv = getattr(m, "qkv", None)
    if hasattr(m, "num_heads") and isinstance(qkv, nn.Linear):
        return qkv
    return None


def tp_num_heads(model: nn.Module) -> dict[nn.Module, int]:
    """Attention head counts to pass as ``num_heads`` (Torch-Pruning's timm/ViT examples).

    Args:
        model: the model.

    Returns:
        ``{qkv_linear: num_heads}`` for timm-style attention and ``{mha: num_heads}`` for
        ``nn.MultiheadAttention``.
    """
    heads: dict[nn.Module, int] = {}
    for m in model.modules():
        if isinstance(m, nn.MultiheadAttention):
            heads[m] = m.num_heads
        else:
            qkv = _qkv_attention(m)
            if qkv is not None:
                heads[qkv] = int(m.num_heads)
    return heads


def tp_fix_attention(model: nn.Module, num_heads: dict[nn.Module, int]) -> None:
    """Post-pruning attribute fixes from Torch-Pruning's examples (attention and ViT dims).

    Args:
        model: the pruned model.
        num_heads: the pruner's (possibly updated) ``num_heads`` mapping.
    """
    for m in model.modules():
        qkv = _qkv_attention(m)
        if qkv is None or isinstance(m, nn.MultiheadAttention):
            continue
        heads = num_heads.get(qkv, int(m.num_heads))
        m.num_heads = heads
        if hasattr(m, "head_dim"):
            m.head_dim = qkv.out_features // (3 * heads)
            if hasattr(m, "attn_dim"):
                m.attn_dim = heads * m.head_dim
    from torchvision.models.vision_transformer import VisionTransformer

    if isinstance(model, VisionTransformer):
        model.hidden_dim = model.conv_proj.out_channels


def run_tp(spec: ModelSpec) -> dict[str, Any]:
    """Prunes one model with Torch-Pruning's ``BasePruner`` at ratio 0.5.

    Args:
        spec: the model to test.

    Returns:
        A JSON-serialisable result record.
    """
    res: dict[str, Any] = {"model": spec.name, "tool": "tp", "ok": False, "error": None}
    stage = "import"
    try:
        import torch_pruning as tp

        stage = "build"
        torch.manual_seed(0)
        model = spec.build()
        args = spec.example_inputs()
        with torch.no_grad():
            base = model(*args)
        for p in model.parameters():  # as in Torch-Pruning's torchvision example
            p.requires_grad_(True)

        stage = "count_ops"
        res["macs_before"] = int(tp.utils.count_ops_and_params(model, args)[0])

        stage = "pruner"
        ignored = tp_ignored_layers(spec, model)
        num_heads = tp_num_heads(model)
        res["ignored_layers"] = len(ignored)
        res["attention_layers"] = len(num_heads)
        pruner = tp.pruner.BasePruner(
            model,
            example_inputs=args,
            forward_fn=lambda m, inputs: m(*inputs),
            importance=tp.importance.GroupMagnitudeImportance(p=2),
            pruning_ratio=RATIO,
            ignored_layers=ignored,
            num_heads=num_heads,
            round_to=None,
        )
        stage = "step"
        pruner.step()
        tp_fix_attention(model, pruner.num_heads)

        stage = "forward (pruned)"
        model.eval()
        with torch.no_grad():
            out = model(*args)

        stage = "count_ops (pruned)"
        res["macs_after"] = int(tp.utils.count_ops_and_params(model, args)[0])

        stage = "compare"
        macs_key: str | None = "macs_before"
        if spec.task == "detection":
            res["boxes"] = [_num_boxes(base), _num_boxes(out)]
            macs_key = _like_for_like(res, [(res["boxes"][0], "macs_before")])
        problems: list[str] = []
        shape_err = compare_structure(out, base, ragged_dim0=spec.task == "detection")
        if shape_err:
            problems.append(shape_err)
        problems += _macs_problems(res, macs_key)
        res["ok"] = not problems
        if problems:
            res["error"] = "; ".join(problems)[:ERROR_CHARS]
    except Exception as exc:  # a failing model is a result, not a crash
        res["error"] = _short(exc, stage)
        res["stage"] = stage
        log.debug("torch-pruning failed on %s", spec.name, exc_info=True)
    return res


def worker_main(name: str, tool: str) -> int:
    """Entry point of ``--worker``: runs one model with one tool, prints one JSON line.

    Args:
        name: model name, e.g. ``tv:resnet18``.
        tool: ``prunepilot`` or ``tp``.

    Returns:
        Process exit code.
    """
    warnings.filterwarnings("ignore")
    if tool == "tp":
        # Torch-Pruning's timm examples trace with timm's fused attention disabled.
        os.environ.setdefault("TIMM_FUSED_ATTN", "0")
    (spec,) = resolve_names([name], all_specs())
    t0 = time.perf_counter()
    # Keep stdout for the single JSON line: libraries print progress and warnings.
    with contextlib.redirect_stdout(sys.stderr):
        res = run_prunepilot(spec) if tool == "prunepilot" else run_tp(spec)
    res["elapsed_s"] = round(time.perf_counter() - t0, 2)
    print(json.dumps(res), flush=True)
    return 0


# --------------------------------------------------------------------------------------------
# Parent: run workers, collect, report
# --------------------------------------------------------------------------------------------


def _parse_result(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                parsed = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(parsed, dict):
                return parsed
    return None


def run_worker(spec: ModelSpec, tool: str, timeout: float, threads: int | None) -> dict[str, Any]:
    """Runs one worker subprocess and returns its result (or a failure record).

    Args:
        spec: model to test.
        tool: ``prunepilot`` or ``tp``.
        timeout: wall-clock limit in seconds.
        threads: intra-op thread count for the worker (``None``: torch default).

    Returns:
        The worker's JSON record, or a failure record for timeouts and crashes.
    """
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1")
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    cmd = [sys.executable, str(SCRIPT), "--worker", spec.name, "--tool", tool]
    t0 = time.perf_counter()
    fail: dict[str, Any] = {"model": spec.name, "tool": tool, "ok": False}
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        return fail | {"error": f"timeout after {timeout:g}s", "elapsed_s": round(timeout, 2)}
    elapsed = round(time.perf_counter() - t0, 2)
    res = _parse_result(proc.stdout)
    if res is None:
        tail = proc.stderr.strip().splitlines()[-1:] or [""]
        why = f"signal {-proc.returncode}" if proc.returncode < 0 else f"rc={proc.returncode}"
        msg = f"worker crashed ({why}): {tail[0]}"
        return fail | {"error": msg[:ERROR_CHARS], "elapsed_s": elapsed}
    return res


def _fmt_macs(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e9:.2f}G" if n >= 1e9 else f"{n / 1e6:.1f}M"


def _pp_cells(r: dict[str, Any] | None) -> tuple[str, str, str, list[str]]:
    if r is None:
        return "-", "-", "not run", []
    groups = f"{r['prunable']}/{r['groups']}" if "groups" in r else "-"
    macs = "-"
    if "macs_before" in r:
        # detectors: against the run that took the pruned model's path (the zeroed copy)
        before = r[r.get("macs_vs") or "macs_before"]
        after = _fmt_macs(r.get("macs_after"))
        macs = f"{after}/{_fmt_macs(before)}"
        if r.get("macs_after") is not None and before:
            macs += f" ({100 * r['macs_after'] / before:.0f}%)"
        if r.get("macs_vs") == "macs_zeroed":
            macs += f" [unpruned {_fmt_macs(r['macs_before'])}]"
    result = "PASS" if r.get("ok") else "FAIL"
    notes: list[str] = []
    value = r.get("value")
    boxes = r.get("boxes")
    box_note = f"; boxes unpruned/zeroed/pruned {'/'.join(map(str, boxes))}" if boxes else ""
    if value == "pass" or value == "fail":
        notes.append(f"value {value} (err {r['value_err']:.1e}{box_note})")
    elif value == "n/a":
        notes.append(f"value: n/a (box counts differ{box_note})")
    elif value is not None:
        notes.append(f"value {value}: {r.get('norm_module', '')}")
    if "trace_s" in r:
        notes.append(f"trace {r['trace_s']:.2f}s")
    if "macs_check" in r:
        notes.append(f"pp MACs {r['macs_check']}")
    if r.get("error"):
        notes.append(f"pp: {r['error']}")
    return groups, macs, result, notes


def _tp_cells(r: dict[str, Any] | None) -> tuple[str, list[str]]:
    if r is None:
        return "not run", []
    boxes = r.get("boxes")
    box_note = f" (boxes unpruned/pruned {boxes[0]}/{boxes[1]})" if boxes else ""
    notes = [f"tp MACs {r['macs_check']}{box_note}"] if "macs_check" in r else []
    if r.get("ok"):
        macs = f"{_fmt_macs(r.get('macs_after'))}/{_fmt_macs(r.get('macs_before'))}"
        return f"PASS ({macs})", notes
    return "FAIL", [*notes, f"tp: {r.get('error')}{box_note}"]


def build_report(
    specs: list[ModelSpec],
    results: dict[tuple[str, str], dict[str, Any]],
    with_tp: bool,
) -> str:
    """Renders the results table plus the coverage summary lines.

    Args:
        specs: models in table order.
        results: ``(model name, tool) -> record``.
        with_tp: whether Torch-Pruning was run.

    Returns:
        Markdown text.
    """
    header = [
        "model",
        "pp groups (prunable/total)",
        "pp MACs after/before",
        "pp result",
        "tp result",
        "notes",
    ]
    rows: list[list[str]] = []
    pp_ok = tp_ok = 0
    for spec in specs:
        pp = results.get((spec.name, "prunepilot"))
        tpr = results.get((spec.name, "tp"))
        groups, macs, pp_res, notes = _pp_cells(pp)
        tp_res, tp_notes = _tp_cells(tpr) if with_tp else ("not run", [])
        pp_ok += bool(pp and pp.get("ok"))
        tp_ok += bool(tpr and tpr.get("ok"))
        rows.append([spec.name, groups, macs, pp_res, tp_res, "; ".join(notes + tp_notes)])
    total = len(specs)
    lines = [format_table(header, rows), "", f"coverage: {pp_ok}/{total} models"]
    if with_tp:
        lines.append(f"torch-pruning coverage: {tp_ok}/{total} models")
    else:
        lines.append("torch-pruning coverage: not run (--no-tp)")
    return "\n".join(lines)


def select_specs(args: argparse.Namespace) -> list[ModelSpec]:
    """Applies ``--models``, ``--small`` and ``--filter`` to the full model list.

    Args:
        args: parsed command line.

    Returns:
        Models to run, in table order.
    """
    specs = all_specs()
    if args.models:
        specs = resolve_names(args.models, specs)
    elif args.small:
        specs = resolve_names(list(SMALL_MODELS), specs)
    elif args.seeds:
        specs = resolve_names(list(SEED_MODELS), specs)
    if args.filter:
        pattern = re.compile(args.filter)
        specs = [s for s in specs if pattern.search(s.name)]
    return specs


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parses the command line.

    Args:
        argv: arguments (default: ``sys.argv[1:]``).

    Returns:
        The parsed namespace.
    """
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--models", nargs="+", metavar="NAME", help="e.g. tv:resnet18 timm:resnet50")
    p.add_argument("--filter", metavar="REGEX", help="keep models whose name matches")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds per model and tool")
    p.add_argument("--no-tp", action="store_true", help="skip Torch-Pruning")
    p.add_argument("--small", action="store_true", help="quick list: " + ", ".join(SMALL_MODELS))
    p.add_argument("--seeds", action="store_true", help="the first seed document's model list")
    p.add_argument("--jobs", type=int, default=1, help="models run in parallel (default 1)")
    p.add_argument("--no-write", action="store_true", help="do not append to RESULTS.md")
    p.add_argument("--worker", metavar="NAME", help=argparse.SUPPRESS)
    p.add_argument("--tool", choices=TOOLS, default="prunepilot", help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Runs the coverage benchmark.

    Args:
        argv: command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        Process exit code (0 even when models fail: failures are results).
    """
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.worker:
        return worker_main(args.worker, args.tool)

    specs = select_specs(args)
    if not specs:
        log.error("no models selected")
        return 2
    tools = ["prunepilot"] if args.no_tp else list(TOOLS)
    jobs = max(1, args.jobs)
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None
    results: dict[tuple[str, str], dict[str, Any]] = {}
    counter = iter(range(1, len(specs) + 1))

    def run_model(spec: ModelSpec) -> None:
        for tool in tools:
            r = run_worker(spec, tool, args.timeout, threads)
            results[(spec.name, tool)] = r
            status = "PASS" if r.get("ok") else f"FAIL ({r.get('error')})"
            log.info("%s %-10s %s [%.1fs]", spec.name, tool, status, r.get("elapsed_s", 0.0))
        log.info("[%d/%d] done: %s", next(counter), len(specs), spec.name)

    log.info("coverage: %d models, tools: %s, timeout %gs", len(specs), tools, args.timeout)
    with concurrent.futures.ThreadPoolExecutor(max_workers=jobs) as pool:
        for fut in [pool.submit(run_model, s) for s in specs]:
            fut.result()

    report = build_report(specs, results, with_tp=not args.no_tp)
    print(report)
    if not args.no_write:
        append_results("coverage.py", report)
        log.info("appended to benchmarks/RESULTS.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
