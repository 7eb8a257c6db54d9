"""The client is light: importing it, or asking the CLI for help, loads no server or ML stack.

Each check runs in a fresh interpreter (this test process has long since imported torch), and
reports how long the import took, so a regression shows its cost.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "fastapi", "sqlalchemy", "optuna", "ray", "numpy")

_PROBE = """
import json, sys, time
t0 = time.perf_counter()
{action}
elapsed = time.perf_counter() - t0
heavy = [m for m in {heavy!r} if m in sys.modules]
print(json.dumps({{"heavy": heavy, "seconds": elapsed, "modules": len(sys.modules)}}))
"""

_CLI = """
import contextlib, io
from prunepilot.client._cli import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):
    main({argv!r})
"""


def _probe(action: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE.format(action=action, heavy=HEAVY)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize(
    "action",
    [
        "import prunepilot.client",
        "import prunepilot.schemas",
        _CLI.format(argv=["--help"]),
        _CLI.format(argv=["submit", "--help"]),
    ],
    ids=["import-client", "import-schemas", "cli-help", "cli-submit-help"],
)
def test_the_client_loads_no_heavy_package(action: str) -> None:
    got = _probe(action)
    assert got["heavy"] == [], (
        f"{action.strip()!r} loaded {got['heavy']} ({got['modules']} modules, "
        f"{got['seconds']:.2f} s)"
    )


def test_the_console_script_help_lists_every_command() -> None:
    """``python -m prunepilot.client --help`` still shows ``serve`` and ``demo``, lazily."""
    out = subprocess.run(
        [sys.executable, "-m", "prunepilot.client", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    assert "serve" in out and "demo" in out


def test_the_core_names_still_load_on_use() -> None:
    """``prunepilot.trace`` and friends come from core on first use (the lazy package)."""
    got = _probe("import prunepilot; prunepilot.trace; from prunepilot import load, Profile")
    heavy = got["heavy"]
    assert isinstance(heavy, list) and "torch" in heavy
