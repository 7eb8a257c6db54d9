"""The SDK's own logic without the server: spec files, error mapping, the retry policy.

The retry tests use a real closed TCP port (connection refused) and a small in-process
transport that answers with scripted statuses, counting attempts.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from prunepilot.client import (
    BadRequest,
    ChecksumMismatch,
    Client,
    Conflict,
    NotFound,
    ServerError,
    ServerUnavailable,
    SpecError,
    TooLarge,
    Unauthorized,
    ValidationFailed,
    load_spec,
)
from prunepilot.client.errors import ApiError, error_for_status
from prunepilot.schemas import JobInfo, JobSpec, JobStatus

SPEC = {
    "name": "unit",
    "model": {"source": "prunepilot.demo.models:digits_cnn", "input_shape": [1, 8, 8]},
    "dataset": {"source": "builtin:digits"},
    "constraints": {"flops": "50%"},
    "search": {"trials": 4},
}


def _closed_port() -> int:
    """A local port nothing listens on (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _job_json(spec: JobSpec, status: str = "QUEUED") -> dict[str, object]:
    info = JobInfo(id="job1", status=JobStatus(status), created_at=datetime.now(UTC), spec=spec)
    return info.model_dump(mode="json")


def _scripted(
    answers: list[httpx.Response], seen: list[httpx.Request]
) -> Callable[[httpx.Request], httpx.Response]:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        request.read()
        return answers[min(len(seen) - 1, len(answers) - 1)]

    return handler


def _client(handler: Callable[[httpx.Request], httpx.Response], retries: int = 3) -> Client:
    return Client(
        "http://testserver",
        "tok",
        retries=retries,
        backoff=0.001,
        transport=httpx.MockTransport(handler),
    )


# -- specs ---------------------------------------------------------------------------------


def test_load_spec_from_yaml_and_json(tmp_path: Path) -> None:
    y = tmp_path / "job.yaml"
    y.write_text(
        "model:\n  source: torchvision:resnet18\n  input_shape: [3, 32, 32]\n"
        "dataset:\n  source: builtin:digits\nconstraints:\n  flops: 50%\n"
        "  latency_ms: '70%'\n  target: {batch_size: 64}\n"
    )
    spec = load_spec(y)
    assert spec.model.input_shape == (3, 32, 32)
    assert spec.constraints.flops is not None and spec.constraints.flops.relative
    assert spec.constraints.target.batch_size == 64
    j = tmp_path / "job.json"
    j.write_text(json.dumps(SPEC))
    assert load_spec(j).search.trials == 4
    assert load_spec(SPEC) == load_spec(j)
    assert load_spec(spec) is spec


def test_invalid_spec_lists_each_problem(tmp_path: Path) -> None:
    bad = {**SPEC, "model": {"source": "nope", "input_shape": []}, "constraints": {}}
    with pytest.raises(SpecError) as err:
        load_spec(bad)
    text = str(err.value)
    assert "model.source" in text and "model.input_shape" in text and "constraints" in text
    p = tmp_path / "x.yaml"
    p.write_text("- just\n- a list\n")
    with pytest.raises(SpecError, match="mapping"):
        load_spec(p)
    p.write_text("model: [unclosed\n")
    with pytest.raises(SpecError, match="not valid"):
        load_spec(p)
    with pytest.raises(SpecError, match="no spec file"):
        load_spec(tmp_path / "missing.yaml")


def test_submit_uploads_file_references_first(tmp_path: Path) -> None:
    (tmp_path / "w.safetensors").write_bytes(b"weights")
    spec_file = tmp_path / "job.yaml"
    spec_file.write_text(
        json.dumps({**SPEC, "model": {**SPEC["model"], "weights": "file:w.safetensors"}})  # type: ignore[dict-item]
    )
    seen: list[httpx.Request] = []
    upload = {
        "id": "abcdef0123",
        "filename": "w.safetensors",
        "size": 7,
        "sha256": "0" * 64,
        "kind": "safetensors",
        "created_at": datetime.now(UTC).isoformat(),
    }
    spec = load_spec(SPEC)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        request.read()
        if request.url.path == "/uploads":
            assert b"weights" in request.content
            return httpx.Response(201, json=upload)
        body = json.loads(request.content)
        assert body["model"]["weights"] == "abcdef0123"
        return httpx.Response(201, json=_job_json(spec))

    with _client(handler) as c:
        job = c.submit(spec_file)
    assert job.id == "job1"
    assert [r.url.path for r in seen] == ["/uploads", "/jobs"]
    missing = tmp_path / "m.yaml"
    missing.write_text(json.dumps({**SPEC, "dataset": {"source": "file:nothere.zip"}}))
    with _client(handler) as c, pytest.raises(SpecError, match="not a file"):
        c.submit(missing)


# -- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, BadRequest),
        (401, Unauthorized),
        (404, NotFound),
        (409, Conflict),
        (413, TooLarge),
        (422, ValidationFailed),
        (418, ApiError),
        (500, ServerError),
    ],
)
def test_error_for_status(status: int, cls: type[ApiError]) -> None:
    err = error_for_status(status, "why")
    assert type(err) is cls and err.status == status and err.detail == "why"


def test_4xx_is_not_retried_and_carries_the_message() -> None:
    seen: list[httpx.Request] = []
    answer = httpx.Response(404, json={"detail": "no job 'zzz'"})
    with _client(_scripted([answer], seen)) as c, pytest.raises(NotFound) as err:
        c.job("zzz")
    assert err.value.detail == "no job 'zzz'" and len(seen) == 1
    assert seen[0].headers["Authorization"] == "Bearer tok"


def test_fastapi_validation_errors_are_readable() -> None:
    body = {"detail": [{"loc": ["body", "model", "source"], "msg": "bad source"}]}
    seen: list[httpx.Request] = []
    with (
        _client(_scripted([httpx.Response(422, json=body)], seen)) as c,
        pytest.raises(ValidationFailed) as err,
    ):
        c.submit(SPEC)
    assert err.value.detail == "model.source: bad source"


# -- retries -------------------------------------------------------------------------------


def test_closed_port_raises_server_unavailable_after_retries() -> None:
    port = _closed_port()
    t0 = time.monotonic()
    with (
        Client(f"http://127.0.0.1:{port}", retries=3, backoff=0.01) as c,
        pytest.raises(ServerUnavailable) as err,
    ):
        c.health()
    assert err.value.attempts == 4
    assert "cannot connect" in str(err.value)
    assert time.monotonic() - t0 < 5


def test_closed_port_without_retries_fails_at_once() -> None:
    with (
        Client(f"http://127.0.0.1:{_closed_port()}", retries=0) as c,
        pytest.raises(ServerUnavailable) as err,
    ):
        c.job("x")
    assert err.value.attempts == 1


def test_5xx_is_retried_until_success_with_one_idempotency_key() -> None:
    spec = load_spec(SPEC)
    seen: list[httpx.Request] = []
    answers = [
        httpx.Response(503, json={"detail": "busy"}),
        httpx.Response(500, json={"detail": "oops"}),
        httpx.Response(201, json=_job_json(spec)),
    ]
    with _client(_scripted(answers, seen)) as c:
        job = c.submit(spec)
    assert job.id == "job1" and len(seen) == 3
    keys = {r.headers["Idempotency-Key"] for r in seen}
    assert len(keys) == 1 and len(keys.pop()) >= 16


def test_explicit_idempotency_key_is_sent() -> None:
    spec = load_spec(SPEC)
    seen: list[httpx.Request] = []
    with _client(_scripted([httpx.Response(201, json=_job_json(spec))], seen)) as c:
        c.submit(spec, idempotency_key="my-key")
    assert seen[0].headers["Idempotency-Key"] == "my-key"


def test_persistent_5xx_raises_after_the_retries() -> None:
    seen: list[httpx.Request] = []
    with (
        _client(_scripted([httpx.Response(500, json={"detail": "db down"})], seen), 2) as c,
        pytest.raises(ServerError, match="db down"),
    ):
        c.job("j")
    assert len(seen) == 3
    seen.clear()
    with (
        _client(_scripted([httpx.Response(503, text="maintenance")], seen), 1) as c,
        pytest.raises(ServerUnavailable, match="maintenance"),
    ):
        c.job("j")
    assert len(seen) == 2


def test_download_verifies_sha256(tmp_path: Path) -> None:
    import hashlib

    data = b"x" * 1000
    good = hashlib.sha256(data).hexdigest()
    spec = load_spec(SPEC)
    arts = [{"name": "a.bin", "size": 1000, "sha256": good, "media_type": "x"}]

    def make(payload: bytes) -> Callable[[httpx.Request], httpx.Response]:
        def handler(request: httpx.Request) -> httpx.Response:
            path = request.url.path
            if path == "/jobs/job1":
                return httpx.Response(200, json=_job_json(spec, "SUCCEEDED"))
            if path == "/jobs/job1/artifacts":
                return httpx.Response(200, json=arts)
            return httpx.Response(200, content=payload, headers={"X-Checksum-Sha256": good})

        return handler

    with _client(make(data)) as c:
        (path,) = c.job("job1").download(tmp_path / "out")
    assert path.read_bytes() == data
    with _client(make(b"y" * 1000)) as c, pytest.raises(ChecksumMismatch):
        c.job("job1").download(tmp_path / "bad")
    assert not any((tmp_path / "bad").iterdir())
    with _client(make(data)) as c, pytest.raises(Exception, match="no artifact 'nope'"):
        c.job("job1").download(tmp_path / "out", names=["nope"])


def test_ready_probes_once() -> None:
    with Client(f"http://127.0.0.1:{_closed_port()}", retries=5, backoff=2.0) as c:
        t0 = time.monotonic()
        assert c.ready() is False
    assert time.monotonic() - t0 < 1.5  # no backoff sleeps
