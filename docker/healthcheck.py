#!/usr/bin/env python3
"""The image's health check: exit 0 when this container does its job, 1 otherwise.

``PRUNEPILOT_HEALTH=api`` (the default, as the image's default command is the API): the
service answers ``GET /healthz`` on ``PRUNEPILOT_HEALTH_URL`` (``http://127.0.0.1:8000``).
``PRUNEPILOT_HEALTH=ray`` (a Ray head or worker container): a ``raylet`` process runs here,
and on a head (``ray start --head``) the ``gcs_server`` too. Standard library only: the check
runs every few seconds and must be cheap.
"""

from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path


def _processes() -> list[tuple[str, bytes]]:
    """``(name, command line)`` of every process visible here."""
    found: list[tuple[str, bytes]] = []
    for pid in Path("/proc").glob("[0-9]*"):
        try:
            found.append(((pid / "comm").read_text().strip(), (pid / "cmdline").read_bytes()))
        except OSError:  # the process ended while we looked
            continue
    return found


def _ray_ok() -> bool:
    procs = _processes()
    names = {name for name, _ in procs}
    head = any(b"ray\x00start" in cmd and b"--head" in cmd for _, cmd in procs)
    return "raylet" in names and (not head or "gcs_server" in names)


def _api_ok() -> bool:
    url = os.environ.get("PRUNEPILOT_HEALTH_URL", "http://127.0.0.1:8000").rstrip("/")
    try:
        with urllib.request.urlopen(f"{url}/healthz", timeout=4) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def main() -> int:
    """Run the check this container's role asks for."""
    role = os.environ.get("PRUNEPILOT_HEALTH", "api")
    ok = _ray_ok() if role == "ray" else _api_ok()
    print(f"{role}: {'healthy' if ok else 'unhealthy'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
