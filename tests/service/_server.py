"""A real uvicorn server on 127.0.0.1 in a background thread, and job-spec helpers."""

from __future__ import annotations

import socket
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from prunepilot.service import Settings, create_app

ALICE = "alice-token-0001"
BOB = "bob-token-00002"
TERMINAL = ("SUCCEEDED", "FAILED", "CANCELLED")


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def settings(data_dir: Path, **overrides: Any) -> Settings:
    """Test settings: two tokens, small limits, fast polling, one worker per job."""
    values: dict[str, Any] = {
        "data_dir": data_dir,
        "tokens": {ALICE: "alice", BOB: "bob"},
        "max_upload_bytes": 256 * 1024,
        "max_jobs_per_token": 10,
        "concurrent_jobs": 2,
        "workers_per_job": 1,
        "poll_interval_s": 0.2,
        "cancel_grace_s": 4.0,
        "ray_num_cpus": 4,
    }
    values.update(overrides)
    return Settings(**values)


class Server:
    """The service on a free port, run by uvicorn in a daemon thread.

    Args:
        cfg: the service settings.
    """

    def __init__(self, cfg: Settings) -> None:
        self.settings = cfg
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(cfg),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            timeout_graceful_shutdown=5,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def __enter__(self) -> Server:
        self._thread.start()
        deadline = time.monotonic() + 60
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Shut down: the app's lifespan stops its scheduler and kills its runners."""
        self._server.should_exit = True
        self._thread.join(60)

    def client(self, token: str | None = ALICE) -> httpx.Client:
        """An httpx client, authenticated with ``token`` (``None``: no header)."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)


def tiny_spec(**sections: dict[str, Any]) -> dict[str, Any]:
    """A job that prunes the zoo's digits CNN (width 8) on 400 digits in a few seconds."""
    spec: dict[str, Any] = {
        "name": "tiny",
        "model": {
            "source": "prunepilot.demo.models:digits_cnn",
            "kwargs": {"width": 8},
            "input_shape": [1, 8, 8],
        },
        "dataset": {"source": "builtin:digits", "limit": 400, "batch_size": 32},
        "constraints": {"flops": "60%"},
        "space": {"min_keep": 0.25, "step": 0.125},
        "search": {
            "trials": 4,
            "uniform_seeds": 2,
            "bn_batches": 2,
            "score_batches": 2,
            "top_k": 1,
        },
        "finetune": {"steps": 5},
    }
    for key, value in sections.items():
        spec[key] = {**spec.get(key, {}), **value} if isinstance(value, dict) else value
    return spec


def wait_for(
    client: httpx.Client,
    job_id: str,
    predicate: Any = None,
    timeout: float = 120.0,
) -> dict[str, Any]:
    """Poll ``GET /jobs/{id}`` until ``predicate(job)`` (default: a terminal status)."""
    check = predicate or (lambda j: j["status"] in TERMINAL)
    deadline = time.monotonic() + timeout
    while True:
        r = client.get(f"/jobs/{job_id}")
        r.raise_for_status()
        job: dict[str, Any] = r.json()
        if check(job):
            return job
        if job["status"] in TERMINAL:
            raise AssertionError(f"job ended {job['status']} before the condition: {job}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for job {job_id}: {job}")
        time.sleep(0.2)
