"""Fixtures for the service tests: one local Ray, one shared server, one finished job."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import ray

from prunepilot.worker import ensure_ray

from ._server import Server, settings, tiny_spec, wait_for


@pytest.fixture(scope="session")
def local_ray() -> Iterator[None]:
    """A local Ray for every service test (started once: it takes seconds)."""
    ensure_ray(None, num_cpus=4)
    yield
    if ray.is_initialized():
        ray.shutdown()


@pytest.fixture(scope="session")
def server(local_ray: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The shared service, with tokens for alice and bob."""
    with Server(settings(tmp_path_factory.mktemp("service"))) as srv:
        yield srv


@pytest.fixture(scope="session")
def weights_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A safetensors state dict of the zoo's digits CNN (width 8)."""
    import torch
    from safetensors.torch import save_file

    from prunepilot.demo.models import digits_cnn

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "digits_cnn_w8.safetensors"
    save_file(digits_cnn(width=8).state_dict(), str(path))
    return path


@pytest.fixture(scope="session")
def finished_job(server: Server, weights_path: Path) -> dict[str, Any]:
    """Alice's tiny job (uploaded weights), run to completion: the job and its spec."""
    with server.client() as c:
        r = c.post("/uploads", files={"file": (weights_path.name, weights_path.read_bytes())})
        assert r.status_code == 201, r.text
        upload = r.json()
        spec = tiny_spec(model={"weights": upload["id"]})
        r = c.post("/jobs", json=spec, headers={"Idempotency-Key": "lifecycle-1"})
        assert r.status_code == 201, r.text
        job = wait_for(c, r.json()["id"], timeout=180)
    return {"job": job, "spec": spec, "upload": upload}
