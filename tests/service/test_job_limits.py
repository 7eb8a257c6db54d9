"""Bounded jobs, against a real server process: the operator's limits refuse a job at submit
(422 naming the limit, the value and the setting), a job past the wall-clock limit FAILs,
users never see tracebacks or terminal escapes, and ``serve`` never prints a token."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ._failing_zoo import BROKEN
from ._process import ServerProcess
from ._server import tiny_spec, wait_for

ROOT = Path(__file__).resolve().parents[2]
LIMITS = {
    "PRUNEPILOT_MAX_TRIALS": "50",
    "PRUNEPILOT_MAX_FINETUNE_STEPS": "100",
    "PRUNEPILOT_MAX_MODEL_PARAMS": "1000000",
    "PRUNEPILOT_MAX_JOB_MEMORY_BYTES": str(64 << 20),
    "PRUNEPILOT_MAX_IMAGE_SIZE": "256",
}
WALL_CLOCK_S = 15  # long enough for the crash test's job to fail first on a busy machine


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server with small limits that only accepts jobs (no scheduler)."""
    with ServerProcess(tmp_path_factory.mktemp("limited"), LIMITS) as srv:
        yield srv


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server that runs jobs for at most WALL_CLOCK_S and allows the failing test zoo."""
    env = {
        "PRUNEPILOT_MAX_JOB_SECONDS": str(WALL_CLOCK_S),
        "PRUNEPILOT_CANCEL_GRACE_S": "2",
        "PRUNEPILOT_MODEL_ALLOWLIST": "prunepilot.demo.models:*,tests.service._failing_zoo:*",
        # the server, its runners and workers import the test zoo from this checkout
        "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
    }
    with ServerProcess(tmp_path_factory.mktemp("running"), env, scheduler=True) as srv:
        yield srv


@pytest.mark.parametrize(
    ("sections", "setting", "value"),
    [
        # inside the schema's hard bounds (test_hostile_input), over this operator's limits
        ({"search": {"trials": 100_000}}, "PRUNEPILOT_MAX_TRIALS", "100000"),
        ({"finetune": {"steps": 10**7}}, "PRUNEPILOT_MAX_FINETUNE_STEPS", str(10**7)),
        ({"search": {"score_steps": 101}}, "PRUNEPILOT_MAX_FINETUNE_STEPS", "101"),
        ({"dataset": {"image_size": 4096}}, "PRUNEPILOT_MAX_IMAGE_SIZE", "4096"),
        ({"model": {"kwargs": {"width": 20000}}}, "PRUNEPILOT_MAX_MODEL_PARAMS", "43,200,940,010"),
        (
            {
                "model": {"input_shape": [1, 128, 128]},
                "dataset": {"image_size": 128, "batch_size": 512},
            },
            "PRUNEPILOT_MAX_JOB_MEMORY_BYTES",
            "batch of 512",
        ),
    ],
    ids=["trials", "finetune-steps", "score-steps", "image-size", "params", "memory"],
)
def test_over_a_limit_is_refused(
    limited: ServerProcess, sections: dict[str, Any], setting: str, value: str
) -> None:
    with limited.client() as c:
        r = c.post("/jobs", json=tiny_spec(**sections))
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert setting in detail and value in detail and "limit" in detail, detail


def test_within_the_limits_is_accepted(limited: ServerProcess) -> None:
    with limited.client() as c:
        r = c.post("/jobs", json=tiny_spec(search={"trials": 50}, finetune={"steps": 100}))
    assert r.status_code == 201, r.text
    assert limited.alive()


def _no_internals(text: str) -> None:
    assert "Traceback" not in text and 'File "' not in text, text
    assert "\x1b[" not in text and "\\u001b" not in text, text  # raw, or escaped in JSON


def test_a_job_past_the_wall_clock_limit_fails(running: ServerProcess) -> None:
    spec = tiny_spec(search={"trials": 400, "score_steps": 20, "uniform_seeds": 0})
    with running.client() as c:
        r = c.post("/jobs", json=spec)
        assert r.status_code == 201, r.text
        job = wait_for(c, r.json()["id"], timeout=120)
        logs = c.get(f"/jobs/{job['id']}/logs").text
    assert job["status"] == "FAILED", job
    assert f"wall-clock limit of {WALL_CLOCK_S} s" in job["error"], job["error"]
    assert "PRUNEPILOT_MAX_JOB_SECONDS" in job["error"]
    _no_internals(logs)
    assert running.alive()


def test_a_crash_shows_type_and_message_only(running: ServerProcess) -> None:
    # after the wall-clock test: this job only starts once that job's runner has stopped
    spec = tiny_spec(model={"source": "tests.service._failing_zoo:broken_when_built"})
    spec["model"].pop("kwargs")
    with running.client() as c:
        r = c.post("/jobs", json=spec)
        assert r.status_code == 201, r.text
        job = wait_for(c, r.json()["id"], timeout=120)
        logs = c.get(f"/jobs/{job['id']}/logs").text
        events = c.get(f"/jobs/{job['id']}/events").text
    assert job["status"] == "FAILED"
    assert job["error"] == f"RuntimeError: {BROKEN}", job["error"]
    assert "crashed" in logs and BROKEN in logs, logs
    for text in (job["error"], logs, events):
        _no_internals(text)


def _serve(args: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "env", "secret"),
    [
        (["prunepilot.client", "serve", "--token", "short=alice"], None, "short"),
        (["prunepilot.client", "serve", "--token", "s3cr3t-no-owner"], None, "s3cr"),
        (["prunepilot.service", "--token", "s3cr3t=alice"], None, "s3cr3t"),
        (["prunepilot.service"], {"PRUNEPILOT_TOKENS": "s3cr3t=alice"}, "s3cr3t"),
        (["prunepilot.service"], {"PRUNEPILOT_TOKENS": '{"s3cr3t-tok": ""}'}, "s3cr"),
        (["prunepilot.service"], {"PRUNEPILOT_TOKENS": "s3cr3t-no-owner"}, "s3cr"),
    ],
    ids=["cli-short", "cli-no-owner", "module-short", "env-short", "env-json", "env-pair"],
)
def test_a_bad_token_is_never_printed(
    tmp_path: Path, args: list[str], env: dict[str, str] | None, secret: str
) -> None:
    done = _serve([*args, "--data-dir", str(tmp_path)], env)
    assert done.returncode != 0
    out = done.stdout + done.stderr
    assert "token" in out.lower(), out
    assert secret not in out, out
