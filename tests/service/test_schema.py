"""Schemathesis against the OpenAPI schema: generated requests never cause a 5xx."""

from __future__ import annotations

from pathlib import Path

import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error

from prunepilot.service import create_app

from ._server import ALICE
from ._server import settings as service_settings


def test_generated_requests_never_cause_a_server_error(tmp_path: Path) -> None:
    # no scheduler: submitted jobs stay queued, so fuzzing never runs a search
    app: FastAPI = create_app(service_settings(tmp_path, scheduler=False))
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    headers = {"Authorization": f"Bearer {ALICE}"}
    tested = []
    for result in schema.get_all_operations():
        op = result.ok()
        if op.path.endswith("/events"):
            continue  # an event stream of a queued job never ends
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @given(case=op.as_strategy(generation_mode=mode))
            @settings(
                max_examples=6,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                derandomize=True,
                database=None,
            )
            def check(case: schemathesis.Case) -> None:
                case.call_and_validate(headers=headers, checks=[not_a_server_error])

            try:
                check()
            except Unsatisfiable:
                # nothing to break: an operation without parameters has no negative cases
                assert mode is GenerationMode.NEGATIVE, op.path
        tested.append(f"{op.method.upper()} {op.path}")
    assert len(tested) >= 12, tested


def test_schema_documents_every_endpoint(tmp_path: Path) -> None:
    app = create_app(service_settings(tmp_path, scheduler=False))
    paths = app.openapi()["paths"]
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
