"""A real service for the client tests: uvicorn on 127.0.0.1, SQLite in a temp dir, local Ray."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import uvicorn

from ..service._server import tiny_spec as service_tiny_spec

TOKEN = "client-test-token-1"
OTHER = "client-test-token-2"
MAX_UPLOAD = 512 * 1024


def free_port() -> int:
    """A TCP port nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """The service app served by uvicorn in a daemon thread of the test process."""

    def __init__(self, data_dir: Path) -> None:
        from prunepilot.service import Settings, create_app

        self.settings = Settings(
            data_dir=data_dir,
            tokens={TOKEN: "carol", OTHER: "dave"},
            max_upload_bytes=MAX_UPLOAD,
            concurrent_jobs=2,
            workers_per_job=1,
            poll_interval_s=0.2,
            cancel_grace_s=4.0,
            ray_num_cpus=4,
        )
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(
            create_app(self.settings),
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            timeout_graceful_shutdown=5,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    def start(self) -> None:
        """Start serving; returns once the socket accepts connections."""
        self._thread.start()
        deadline = time.monotonic() + 60
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.05)

    def stop(self) -> None:
        """Graceful shutdown (the app's lifespan stops its scheduler and runners)."""
        self._server.should_exit = True
        self._thread.join(60)


@pytest.fixture(scope="module")
def live_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """A service for one test module, on a local Ray this fixture starts if needed.

    Module scope: the server and the Ray it started are gone before other test packages
    (the service's own tests start theirs) run.
    """
    import ray

    from prunepilot.worker import ensure_ray

    started = not ray.is_initialized()
    ensure_ray(None, num_cpus=4)
    srv = LiveServer(tmp_path_factory.mktemp("client-service"))
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()
        if started and ray.is_initialized():
            ray.shutdown()


@pytest.fixture(scope="session")
def weights_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A safetensors state dict of the zoo's digits CNN at width 8."""
    from safetensors.torch import save_file

    from prunepilot.service.zoo import digits_cnn

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "digits_cnn_w8.safetensors"
    save_file(digits_cnn(width=8).state_dict(), str(path))
    return path


def tiny_spec(**sections: Any) -> dict[str, Any]:
    """The service tests' tiny job (digits CNN width 8, 400 digits), named for the client."""
    return service_tiny_spec(**{"name": "client-tiny", **sections})
