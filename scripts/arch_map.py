"""Measure the code's shape: packages, import levels, arrows, largest functions, client import.

Issue 16 asked for a before/after map of the redesign; this script is how it is measured, so
anyone can rerun it on any commit::

    python scripts/arch_map.py            # the working tree
    python scripts/arch_map.py --json     # machine-readable

Definitions (module-level imports only; imports inside functions are lazy and not arrows):

- *arrow*: module A imports module B, both inside the same top-level package (``search``...).
- *folder arrow*: the same, counted once per pair of distinct sub-folders of that package.
- *levels*: the longest import chain inside a package, in modules (1 = nothing imports a
  sibling). A loop makes levels undefined and is reported instead. Package ``__init__``
  modules only re-export: they are left out of arrows and levels.
- *largest function*: by lines, over the whole ``prunepilot`` tree.
"""

from __future__ import annotations

import argparse
import ast
import json
import subprocess
import sys
from collections import defaultdict
from functools import cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PKG = ROOT / "prunepilot"
HEAVY = ("torch", "fastapi", "sqlalchemy", "optuna", "ray", "numpy")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PKG.rglob("*.py"))}


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING"
    )


def _top_imports(tree: ast.Module) -> list[ast.Import | ast.ImportFrom]:
    out: list[ast.Import | ast.ImportFrom] = []
    stack: list[ast.stmt] = list(tree.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            out.append(node)
        elif isinstance(node, ast.If) and not _is_type_checking(node):
            stack.extend(node.body + node.orelse)
        elif isinstance(node, ast.Try):
            stack.extend(node.body + node.orelse + node.finalbody)
            for h in node.handlers:
                stack.extend(h.body)
    return out


def _targets(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """The prunepilot modules that ``name`` imports at module level."""
    tree = ast.parse(path.read_text())
    is_pkg = path.name == "__init__.py"
    here = name.split(".") if is_pkg else name.split(".")[:-1]
    found: set[str] = set()
    for node in _top_imports(tree):
        if isinstance(node, ast.Import):
            bases = [a.name for a in node.names]
            subs: list[str] = []
        else:
            if node.level:
                anchor = here[: len(here) - (node.level - 1)]
                base = ".".join(anchor + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            bases = [base]
            subs = [f"{base}.{a.name}" for a in node.names]
        for cand in subs + bases:
            if cand in mods and cand != name:
                found.add(cand)
    return {t for t in found if t.startswith("prunepilot")}


def _levels(nodes: set[str], edges: dict[str, set[str]]) -> int | str:
    state: dict[str, int] = {}
    depth: dict[str, int] = {}

    def visit(n: str, trail: list[str]) -> int:
        if state.get(n) == 1:
            raise RecursionError(" -> ".join([*trail, n]))
        if state.get(n) == 2:
            return depth[n]
        state[n] = 1
        d = 1 + max((visit(m, [*trail, n]) for m in edges.get(n, ()) if m in nodes), default=0)
        state[n] = 2
        depth[n] = d
        return d

    try:
        return max((visit(n, []) for n in nodes), default=0)
    except RecursionError as loop:
        return f"loop: {loop}"


def _largest_functions(mods: dict[str, Path], n: int) -> list[tuple[int, str]]:
    sizes: list[tuple[int, str]] = []
    for name, path in mods.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno:
                sizes.append((node.end_lineno - node.lineno + 1, f"{name}:{node.name}"))
    return sorted(sizes, reverse=True)[:n]


def _client_import() -> dict[str, Any]:
    code = (
        "import sys, time; before = set(sys.modules); t = time.perf_counter();"
        "import prunepilot.client; dt = time.perf_counter() - t;"
        "new = set(sys.modules) - before;"
        f"heavy = sorted(h for h in {HEAVY!r} if h in sys.modules);"
        "import json; print(json.dumps({'seconds': round(dt, 2), 'modules': len(new),"
        "'heavy': heavy, 'prunepilot': sorted(m for m in new if m.startswith('prunepilot'))}))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


@cache
def _lines(path: Path) -> int:
    return len(path.read_text().splitlines())


def measure() -> dict[str, Any]:
    """The map of the tree under ``prunepilot/``, as a JSON-able dict."""
    mods = _modules()
    edges = {m: _targets(m, p, mods) for m, p in mods.items()}
    packages: dict[str, Any] = {}
    for top in sorted({m.split(".")[1] for m in mods if m.count(".") >= 1}):
        prefix = f"prunepilot.{top}"
        inside = {m for m in mods if m == prefix or m.startswith(prefix + ".")}
        if len(inside) == 1 and mods[prefix].name != "__init__.py":
            continue  # a single module, not a package
        # re-export facades (``__init__``) are not rooms: arrows go to the modules they name
        inner = {m for m in inside if mods[m].name != "__init__.py"}
        arrows = {(a, b) for a in inner for b in edges[a] if b in inner}

        def folder(m: str, prefix: str = prefix) -> str:
            rest = m[len(prefix) + 1 :].split(".")
            return rest[0] if mods[m].name == "__init__.py" or len(rest) > 1 else "."

        folders = {folder(m) for m in inner}
        folder_arrows = {(folder(a), folder(b)) for a, b in arrows if folder(a) != folder(b)}
        folder_edges: dict[str, set[str]] = defaultdict(set)
        for a, b in folder_arrows:
            folder_edges[a].add(b)
        packages[top] = {
            "modules": len(inside),
            "lines": sum(_lines(mods[m]) for m in inside),
            "subfolders": sorted(f for f in folders if f != "."),
            "levels": _levels(inner, edges),
            "arrows": len(arrows),
            "folder_levels": _levels(folders, folder_edges) if len(folders) > 1 else None,
            "folder_arrows": len(folder_arrows),
        }
    cross_private = sorted(
        f"{a} -> {b}"
        for a, targets in edges.items()
        for b in targets
        if _top(a) != _top(b) and any(p.startswith("_") for p in b.split("."))
    )
    return {
        "packages": packages,
        "largest_functions": _largest_functions(mods, 5),
        "cross_package_private_imports": cross_private,
        "import_prunepilot_client": _client_import(),
    }


def _print(m: dict[str, Any]) -> None:
    print(
        "| package | modules | lines | sub-folders | levels | arrows "
        "| folder levels | folder arrows |"
    )
    print("|---|---:|---:|---|---:|---:|---:|---:|")
    for name, p in m["packages"].items():
        print(
            f"| {name} | {p['modules']} | {p['lines']} | {len(p['subfolders'])} | {p['levels']} "
            f"| {p['arrows']} | {p['folder_levels'] or '-'} | {p['folder_arrows']} |"
        )
    print("\nlargest functions (lines):")
    for size, name in m["largest_functions"]:
        print(f"  {size:4d}  {name}")
    print("\ncross-package private imports:", len(m["cross_package_private_imports"]))
    for line in m["cross_package_private_imports"]:
        print("  ", line)
    c = m["import_prunepilot_client"]
    print(
        f"\nimport prunepilot.client: {c['seconds']} s, {c['modules']} modules, "
        f"heavy: {', '.join(c['heavy']) or 'none'}, prunepilot modules: {len(c['prunepilot'])}"
    )


def main() -> None:
    """Print the map (a markdown table and notes, or JSON with ``--json``)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = ap.parse_args()
    m = measure()
    if args.json:
        print(json.dumps(m, indent=2))
    else:
        _print(m)


if __name__ == "__main__":
    main()
