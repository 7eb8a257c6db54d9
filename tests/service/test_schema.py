"""The published OpenAPI schema is the behaviour, against a real server process.

Schemathesis runs every check it has (server errors, status codes, content types,
response schemas and headers, positive data accepted, negative data refused, Allow
headers, auth, ...) on positive and negative data, bounded to a few dozen cases per
operation; a queued-then-cancelled job, a job to delete and an upload are pinned as half
of the generated ids, so responses of existing resources are checked too. The probes
after it pin each mismatch a full run once found.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from prunepilot.schemas import JobSpec

from ._process import ServerProcess
from ._server import ALICE, tiny_spec

_HOOKS = Path(__file__).with_name("_schema_hooks.py")
_EXAMPLES = 50
# positive_data_acceptance's default, plus the 422 of a spec naming what this server lacks
_JOB_SPEC_STATUSES = ["2xx", "3xx", "401", "403", "404", "409", "422", "429"]
_METHODS = {"get", "put", "post", "delete", "patch"}


@pytest.fixture(scope="module")
def process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The service as its own process, no scheduler (jobs stay queued until cancelled)."""
    with ServerProcess(tmp_path_factory.mktemp("schema") / "server") as server:
        yield server


@pytest.fixture(scope="module")
def schema(process: ServerProcess) -> dict[str, Any]:
    """The published OpenAPI document."""
    with process.client(None) as client:
        doc: dict[str, Any] = client.get("/openapi.json").json()
    return doc


def _cancelled_job(client: httpx.Client) -> str:
    r = client.post("/jobs", json=tiny_spec())
    assert r.status_code == 201, r.text
    job_id: str = r.json()["id"]
    assert client.post(f"/jobs/{job_id}/cancel").json()["status"] == "CANCELLED"
    return job_id


def _config(kept: str, doomed: str, upload: str) -> str:
    """Half the generated ids name a real job (``doomed`` only for DELETE) or upload."""

    def pick(name: str) -> str:
        return f'{{ dictionary = "{name}", probability = 0.5 }}'

    return f"""
[dictionaries.jobs]
values = ["{kept}"]
[dictionaries.doomed]
values = ["{doomed}"]
[dictionaries.uploads]
values = ["{upload}"]

[parameters]
"path.job_id" = {pick("jobs")}
"path.upload_id" = {pick("uploads")}

[[operations]]
include-path = "/jobs/{{job_id}}"
include-method = "DELETE"
parameters = {{ "path.job_id" = {pick("doomed")} }}

[[operations]]
include-path = "/jobs"
include-method = "POST"
checks.positive_data_acceptance.expected-statuses = {json.dumps(_JOB_SPEC_STATUSES)}
"""


def _schemathesis(url: str, config: Path, report: Path) -> subprocess.CompletedProcess[str]:
    cmd = [
        str(Path(sys.executable).with_name("schemathesis")),
        "--config-file", str(config),
        "--no-color",
        "run", f"{url}/openapi.json",
        "--checks", "all",
        "--mode", "all",
        "--header", f"Authorization: Bearer {ALICE}",
        "--max-examples", str(_EXAMPLES),
        "--generation-deterministic",
        "--workers", "1",
        "--request-timeout", "20",
        "--suppress-health-check", "all",
        "--continue-on-failure",
        "--report", "json",
        "--report-json-path", str(report),
    ]  # fmt: skip
    env = {**os.environ, "SCHEMATHESIS_HOOKS": str(_HOOKS)}
    return subprocess.run(
        cmd, env=env, cwd=config.parent, capture_output=True, text=True, timeout=600
    )


def test_schemathesis_all_checks_find_nothing(process: ServerProcess, tmp_path: Path) -> None:
    with process.client() as client:
        kept, doomed = _cancelled_job(client), _cancelled_job(client)
        upload = client.post("/uploads", content=b"weights", params={"filename": "w.bin"})
    assert upload.status_code == 201, upload.text
    config = tmp_path / "schemathesis.toml"
    config.write_text(_config(kept, doomed, upload.json()["id"]))
    run = _schemathesis(process.url, config, tmp_path / "report.json")
    assert process.alive(), process.output()
    assert run.returncode == 0, run.stdout[-8000:] + run.stderr[-2000:]
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["complete"] and report["operations"]["tested"] >= 15, report["operations"]
    assert report["failures"] == [] and report["errors"] == [], report["failures"]
    assert report["test_cases"]["generated"] >= 500, report["test_cases"]


def test_schema_documents_every_endpoint(schema: dict[str, Any]) -> None:
    paths = schema["paths"]
    for path in (
        "/jobs",
        "/jobs/{job_id}",
        "/jobs/{job_id}/cancel",
        "/jobs/{job_id}/trials",
        "/jobs/{job_id}/events",
        "/jobs/{job_id}/logs",
        "/jobs/{job_id}/artifacts",
        "/jobs/{job_id}/artifacts/{name}",
        "/uploads",
        "/uploads/{upload_id}",
        "/healthz",
        "/readyz",
        "/metrics",
    ):
        assert path in paths, path


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "0123456789abcdef", path)


def test_allow_lists_every_method_of_the_path(
    process: ServerProcess, schema: dict[str, Any]
) -> None:
    with process.client() as client:
        for path, item in schema["paths"].items():
            documented = {m.upper() for m in item if m in _METHODS}
            for method in ("OPTIONS", "PATCH"):
                r = client.request(method, _concrete(path))
                assert r.status_code == 405, (method, path, r.text)
                assert set(r.headers["allow"].split(", ")) - {"HEAD"} == documented, path
                assert r.json()["detail"].startswith("method not allowed")
        assert client.options("/jobs/0123456789abcdef").headers["allow"] == "DELETE, GET"


def test_every_error_is_documented_as_json(process: ServerProcess, schema: dict[str, Any]) -> None:
    for path, item in schema["paths"].items():
        for method, operation in item.items():
            responses = operation["responses"]
            if operation.get("security"):
                assert "401" in responses, (method, path)
            for code, response in responses.items():
                if code[0] in "45":
                    assert list(response["content"]) == ["application/json"], (method, path, code)
    with process.client(None) as anonymous:
        r = anonymous.get("/jobs/0123456789abcdef/logs")
    assert r.status_code == 401 and r.headers["content-type"] == "application/json"
    assert r.headers["www-authenticate"] == "Bearer" and "bearer token" in r.json()["detail"]
    logs = schema["paths"]["/jobs/{job_id}/logs"]["get"]["responses"]
    assert "text/plain" in logs["200"]["content"] and "application/json" in logs["401"]["content"]


def test_empty_uploads_are_refused(process: ServerProcess, schema: dict[str, Any]) -> None:
    body = schema["paths"]["/uploads"]["post"]["requestBody"]
    assert body["required"] and body["content"]["application/octet-stream"]["schema"]["minLength"]
    with process.client() as client:
        raw = client.post(
            "/uploads", content=b"", headers={"Content-Type": "application/octet-stream"}
        )
        part = client.post("/uploads", files={"file": ("w.bin", b"")})
        broken = client.post(
            "/uploads",
            content=b"--xx\r\nTrue--xx--\r\n",
            headers={"Content-Type": "multipart/form-data; boundary=xx"},
        )
    for r in (raw, part):
        assert r.status_code == 400 and "empty" in r.json()["detail"], r.text
    assert broken.status_code == 400 and "multipart" in broken.json()["detail"], broken.text
    assert "400" in schema["paths"]["/uploads"]["post"]["responses"]


def test_a_body_that_is_not_utf8_is_invalid_json(process: ServerProcess) -> None:
    with process.client() as client:
        r = client.post(
            "/jobs", content=b'{"name": "\xce\xff"}', headers={"Content-Type": "application/json"}
        )
    assert r.status_code == 422, r.text
    assert r.json()["detail"].startswith("the request body is not valid JSON: it is not UTF-8")


def _parameter(schema: dict[str, Any], path: str, method: str, name: str) -> dict[str, Any]:
    for parameter in schema["paths"][path][method]["parameters"]:
        if parameter["name"] == name:
            found: dict[str, Any] = parameter["schema"]
            return found
    raise AssertionError(f"{method} {path} has no parameter {name}")


def test_every_cursor_the_schema_allows_is_accepted(
    process: ServerProcess, schema: dict[str, Any]
) -> None:
    pattern = _parameter(schema, "/jobs", "get", "cursor")["pattern"]
    with process.client() as client:
        for _ in range(3):
            _cancelled_job(client)
        page = client.get("/jobs", params={"limit": 1}).json()
        assert re.fullmatch(pattern, page["next_cursor"]), page["next_cursor"]
        nxt = client.get("/jobs", params={"limit": 1, "cursor": page["next_cursor"]})
        assert nxt.status_code == 200 and nxt.json()["items"][0]["id"] != page["items"][0]["id"]
        for bad in ("", "AAAA", "czA", "czAw", "czE=", page["next_cursor"] + "\n"):
            r = client.get("/jobs", params={"cursor": bad})
            assert r.status_code == 422 and "invalid cursor" in r.json()["detail"], (bad, r.text)

        @settings(
            max_examples=40,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(st.from_regex(pattern.removesuffix("$") + r"\Z"))
        def accepted(cursor: str) -> None:
            r = client.get("/jobs", params={"cursor": cursor})
            assert r.status_code == 200, (cursor, r.text)

        accepted()


def test_last_event_id_is_a_bounded_integer(process: ServerProcess, schema: dict[str, Any]) -> None:
    doc = _parameter(schema, "/jobs/{job_id}/events", "get", "last-event-id")
    assert doc["type"] == "integer" and doc["minimum"] == 0 and "anyOf" not in doc
    with process.client() as client:
        job_id = _cancelled_job(client)
        events = f"/jobs/{job_id}/events"
        ok = client.get(events, headers={"Last-Event-ID": str(doc["maximum"])})
        assert ok.status_code == 200 and "event: end" in ok.text, ok.text
        for bad in ("null", "-1", str(doc["maximum"] + 1)):
            r = client.get(events, headers={"Last-Event-ID": bad})
            assert r.status_code == 422 and "last-event-id" in r.json()["detail"], (bad, r.text)


# (spec change, whether the server accepts it): the schema must say the same
_SPECS: list[tuple[dict[str, Any], bool]] = [
    ({}, True),
    ({"model": {"source": "torchvision:resnet18"}}, True),
    ({"model": {"source": "upload:0123abcd"}}, True),
    ({"model": {"source": "upload:short"}}, False),
    ({"model": {"source": "upload:0123abcd\n"}}, False),
    ({"model": {"source": "os:system()"}}, False),
    ({"model": {"source": "no-colon"}}, False),
    ({"model": {"weights": "0123abcd"}}, True),
    ({"model": {"weights": "UPPER-case"}}, False),
    ({"model": {"input_shape": [0, 8]}}, False),
    ({"model": {"input_shape": [1, 4097]}}, False),
    ({"dataset": {"source": "dir:images/train"}}, True),
    ({"dataset": {"source": "builtin:"}}, False),
    ({"dataset": {"source": "upload:../../etc"}}, False),
    ({"dataset": {"source": "upload:0123abcd\n"}}, False),
    ({"dataset": {"source": "http://x/y"}}, False),
    ({"dataset": {"mean": [0.5], "std": [0.2]}}, True),
    ({"dataset": {"mean": [0.5]}}, False),
    ({"dataset": {"mean": [0.5], "std": [0.0]}}, False),
    ({"constraints": {"flops": "100%"}}, True),
    ({"constraints": {"flops": " .5 %"}}, True),
    ({"constraints": {"flops": "0%"}}, False),
    ({"constraints": {"flops": "100.5%"}}, False),
    ({"constraints": {"flops": 1e9}}, True),
    ({"constraints": {"flops": 0}}, False),
    ({"constraints": {"flops": None, "params": None}}, False),
    ({"constraints": {"flops": None, "latency_ms": 5, "target": {"device": "cuda"}}}, True),
    ({"constraints": {"flops": None, "latency_ms": 5, "target": {"device": "cuda:0"}}}, True),
    ({"constraints": {"flops": None, "latency_ms": 5, "target": {"device": "cuda:1"}}}, False),
    ({"finetune": {"device": "cuda:1"}}, False),
    ({"constraints": {"flops": "50%", "target": {"device": "gpu"}}}, False),
]


def _merged(change: dict[str, Any]) -> dict[str, Any]:
    spec = tiny_spec()
    for key, value in change.items():
        spec[key] = {**spec[key], **value}
    return spec


@pytest.mark.parametrize(("change", "valid"), _SPECS)
def test_job_spec_schema_states_its_rules(change: dict[str, Any], valid: bool) -> None:
    schema = JobSpec.model_json_schema()
    spec = _merged(change)
    # jsonschema_rs reads patterns as JSON Schema does (ECMA: `$` ends the string)
    assert jsonschema_rs.validator_for(schema).is_valid(spec) is valid
    try:
        JobSpec.model_validate(spec)
        accepted = True
    except ValueError:
        accepted = False
    assert accepted is valid
