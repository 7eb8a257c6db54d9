"""The service as a real separate process (``python -m prunepilot.service``) for hostile tests.

Unlike `_server.Server` (uvicorn in a thread of the test process), this is what an attacker
meets: its own interpreter, its own working directory, its own memory, which the tests read
from ``/proc`` (peak resident memory) to check that hostile input stays bounded.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from ._server import ALICE, BOB, free_port

__all__ = ["ServerProcess"]


class ServerProcess:
    """``prunepilot serve`` in a subprocess with tokens for alice and bob.

    Args:
        data_dir: the server's state directory (also its working directory).
        env: extra ``PRUNEPILOT_*`` settings (strings), e.g. limits or the allowlist.
        scheduler: run queued jobs (``False``: jobs stay queued, no Ray is started).
    """

    def __init__(
        self, data_dir: Path, env: dict[str, str] | None = None, *, scheduler: bool = False
    ) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "PRUNEPILOT_SCHEDULER": "1" if scheduler else "0",
            "PRUNEPILOT_RAY_NUM_CPUS": "2",
            "PRUNEPILOT_WORKERS_PER_JOB": "1",
            "PRUNEPILOT_POLL_INTERVAL_S": "0.2",
            "PYTHONUNBUFFERED": "1",
            **(env or {}),
        }
        self.log = data_dir / "server.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> ServerProcess:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        """Start the process and wait until ``/healthz`` answers (60 s at most)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [
            sys.executable, "-m", "prunepilot.service",
            "--port", str(self.port),
            "--data-dir", str(self.data_dir),
            "--token", f"{ALICE}=alice",
            "--token", f"{BOB}=bob",
            "--log-level", "warning",
        ]  # fmt: skip
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                cmd, cwd=self.data_dir, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 60
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the server exited {self.proc.returncode}: {self.output()}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the server did not start: {self.output()}")
            time.sleep(0.1)

    def stop(self) -> None:
        """Terminate the process (killed after 30 s)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)

    def alive(self) -> bool:
        """Whether the process still runs."""
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        """What the server printed (its log), for assertion messages."""
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""

    def peak_rss(self) -> int:
        """The process's peak resident memory in bytes (``VmHWM``)."""
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError("no VmHWM in /proc status")

    def client(self, token: str | None = ALICE, **kwargs: Any) -> httpx.Client:
        """An httpx client, authenticated with ``token`` (``None``: no header)."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60, **kwargs)
