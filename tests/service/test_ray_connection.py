"""The server's connection to a Ray cluster: visible when it fails, token authentication.

The servers run as processes (`ServerProcess`) so that each has its own Ray driver. The
token cluster is a real ``ray start --head`` with ``RAY_AUTH_MODE=token``, in a temporary
directory on free ports, stopped (its process group killed) after the test.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from prunepilot.service import Settings
from prunepilot.worker import ensure_ray

from ._process import ServerProcess
from ._server import free_port, tiny_spec

WAITING = "waiting: cannot connect to Ray"


def _poll(fetch: Callable[[], Any], until: Callable[[Any], bool], timeout: float = 60.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if until(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out; last: {value}")
        time.sleep(0.2)


def _readyz(c: httpx.Client) -> tuple[int, dict[str, Any]]:
    r = c.get("/readyz")
    return r.status_code, r.json()


def _submit(c: httpx.Client) -> str:
    r = c.post("/jobs", json=tiny_spec(search={"trials": 2}, finetune={"steps": 0}))
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


@contextmanager
def _token_cluster(port: int, token_file: Path) -> Iterator[None]:
    """A one-CPU Ray head with token authentication, its GCS on ``port``."""
    ray_cli = Path(sys.executable).with_name("ray")
    if not ray_cli.exists():
        pytest.skip("the ray command is not installed next to this Python")
    temp = Path(f"/tmp/pp-tok-{os.getpid()}-{port}")  # short: Ray's socket paths are limited
    temp.mkdir()
    env = {
        **os.environ,
        "HOME": str(temp),  # no ~/.ray/auth_token of this machine's user
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN_PATH": str(token_file),
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    env.pop("RAY_AUTH_TOKEN", None)
    ports = {
        "--node-manager-port": free_port(),
        "--object-manager-port": free_port(),
        "--dashboard-agent-listen-port": free_port(),
        "--dashboard-agent-grpc-port": free_port(),
        "--metrics-export-port": free_port(),
        "--runtime-env-agent-port": free_port(),
    }
    cmd = [
        str(ray_cli), "start", "--head", "--block", f"--port={port}", "--num-cpus=1",
        "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp / 'r'}",
        *(f"{k}={v}" for k, v in ports.items()),
    ]  # fmt: skip
    with (temp / "out").open("wb") as out:
        proc = subprocess.Popen(
            cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    out_text = (temp / "out").read_text(errors="replace")[-1500:]
                    pytest.skip(f"a token-auth Ray head did not start here: {out_text}")
                time.sleep(0.3)
        yield
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the head's own process group: only its processes
        proc.wait(30)
        shutil.rmtree(temp, ignore_errors=True)


def test_unreachable_ray_shows_on_readyz_and_on_queued_jobs(tmp_path: Path) -> None:
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    env = {"PRUNEPILOT_RAY_ADDRESS": address}
    with ServerProcess(tmp_path / "srv", env, scheduler=True) as srv, srv.client() as c:
        _, body = _poll(lambda: _readyz(c), lambda r: r[0] == 503, timeout=30)
        expected = "error: cannot connect to Ray: Connection refused"
        assert body["ray"] == expected, body
        assert body["database"] == "ok" and body["scheduler"] == "ok"
        assert "ray: " + expected in body["detail"]
        assert address not in str(body)  # an unauthenticated probe: no internal address

        job_id = _submit(c)
        job = _poll(lambda: c.get(f"/jobs/{job_id}").json(), lambda j: j["phase"] == WAITING)
        assert job["status"] == "QUEUED" and job["error"] is None
        logs = c.get(f"/jobs/{job_id}/logs").text
        assert f"{WAITING} at {address}: Connection refused" in logs
        assert logs.count(WAITING) == 1  # noted once, not every retry
        for text in (logs, str(body)):
            assert "\x1b" not in text and "Traceback" not in text
        assert srv.alive()


def test_token_auth_cluster(tmp_path: Path) -> None:
    """A server with the cluster's token file connects (its queued job's waiting note is
    cleared and its runner runs on the cluster); one without it is refused, and /readyz
    says why."""
    port = free_port()
    token_file = tmp_path / "ray-token"
    token_file.write_text("pp-test-token-" + os.urandom(16).hex())
    token_file.chmod(0o600)
    address = f"127.0.0.1:{port}"
    with_token = {
        "PRUNEPILOT_RAY_ADDRESS": address,
        "PRUNEPILOT_RAY_AUTH_MODE": "token",
        "PRUNEPILOT_RAY_AUTH_TOKEN_FILE": str(token_file),
    }
    with ServerProcess(tmp_path / "a", with_token, scheduler=True) as srv, srv.client() as c:
        # first no cluster: the job waits and says why
        job_id = _submit(c)
        _poll(lambda: c.get(f"/jobs/{job_id}").json(), lambda j: j["phase"] == WAITING)
        with _token_cluster(port, token_file):
            _, body = _poll(lambda: _readyz(c), lambda r: r[0] == 200, timeout=90)
            assert body["ray"] == "ok (1 node, 1 CPU, 0 GPUs)", body
            # the runner, a task on the token cluster, reports its own phase
            job = _poll(
                lambda: c.get(f"/jobs/{job_id}").json(),
                lambda j: j["phase"] not in (WAITING, "queued", "starting"),
            )
            assert job["status"] in ("RUNNING", "SUCCEEDED"), job
            logs = c.get(f"/jobs/{job_id}/logs").text
            assert f"connected to Ray at {address}" in logs
            # without the token: refused, said on /readyz (fewer GCS retries: seconds)
            no_token = {"PRUNEPILOT_RAY_ADDRESS": address, "RAY_NUM_REDIS_GET_RETRIES": "2"}
            other = ServerProcess(tmp_path / "b", no_token, scheduler=True)
            with other, other.client() as c2:
                _, body = _poll(lambda: _readyz(c2), lambda r: r[0] == 503, timeout=90)
            assert body["ray"].startswith("error: cannot connect to Ray: "), body
            assert "PRUNEPILOT_RAY_AUTH_TOKEN_FILE" in body["ray"]
            assert token_file.read_text() not in srv.output() + other.output()


def test_ray_auth_settings(tmp_path: Path) -> None:
    env = {"PRUNEPILOT_RAY_AUTH_MODE": "token", "PRUNEPILOT_RAY_AUTH_TOKEN_FILE": "/run/tok"}
    s = Settings.from_env(env, data_dir=tmp_path)
    assert s.ray_auth_mode == "token" and s.ray_auth_token_file == Path("/run/tok")
    assert Settings.from_env({}, data_dir=tmp_path).ray_auth_mode is None
    with pytest.raises(ValueError, match="ray_auth_mode"):
        Settings.from_env({"PRUNEPILOT_RAY_AUTH_MODE": "sometimes"}, data_dir=tmp_path)
    with pytest.raises(ValueError, match="not 'disabled'"):
        Settings(ray_auth_mode="disabled", ray_auth_token_file=Path("/run/tok"))


def test_unusable_token_file_is_refused_before_connecting(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"cannot read the Ray token file .*missing"):
        ensure_ray("127.0.0.1:1", auth_token_file=tmp_path / "missing")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ValueError, match="is empty"):
        ensure_ray("127.0.0.1:1", auth_token_file=tmp_path / "empty")
