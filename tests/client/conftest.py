"""A real service for the client tests: uvicorn on 127.0.0.1, SQLite in a temp dir, local Ray."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from ..service._server import Server
from ..service._server import settings as service_settings
from ..service._server import tiny_spec as service_tiny_spec

TOKEN = "client-test-token-1"
OTHER = "client-test-token-2"
MAX_UPLOAD = 512 * 1024


class LiveServer(Server):
    """The service tests' threaded uvicorn server, with the client tests' tokens."""

    def __init__(self, data_dir: Path) -> None:
        super().__init__(
            service_settings(
                data_dir, tokens={TOKEN: "carol", OTHER: "dave"}, max_upload_bytes=MAX_UPLOAD
            )
        )

    def start(self) -> None:
        """Start serving; returns once the socket accepts connections."""
        self.__enter__()


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

    from prunepilot.demo.models import digits_cnn

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "digits_cnn_w8.safetensors"
    save_file(digits_cnn(width=8).state_dict(), str(path))
    return path


def tiny_spec(**sections: Any) -> dict[str, Any]:
    """The service tests' tiny job (digits CNN width 8, 400 digits), named for the client."""
    return service_tiny_spec(**{"name": "client-tiny", **sections})
