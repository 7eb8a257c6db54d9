"""A job's study opens in optuna-dashboard, pointed at the service's database (README)."""

from __future__ import annotations

import io
import json
from typing import Any
from wsgiref.util import setup_testing_defaults

import pytest

from ._server import Server

optuna_dashboard = pytest.importorskip("optuna_dashboard", reason="needs the dev extra")


def _get(app: Any, path: str) -> Any:
    environ: dict[str, Any] = {
        "PATH_INFO": path,
        "REQUEST_METHOD": "GET",
        "wsgi.input": io.BytesIO(),
    }
    setup_testing_defaults(environ)
    status: list[str] = []
    body = b"".join(app(environ, lambda s, _headers, _exc=None: status.append(s)))
    assert status[0].startswith("200"), (path, status, body[:300])
    return json.loads(body)


def test_a_jobs_study_opens_in_optuna_dashboard(
    server: Server, finished_job: dict[str, Any]
) -> None:
    job = finished_job["job"]
    # what the README says: optuna-dashboard <the service's database URL>
    app = optuna_dashboard.wsgi(server.settings.db_url)
    studies = {s["study_name"]: s for s in _get(app, "/api/studies")["study_summaries"]}
    name = f"job-{job['id']}"
    assert name in studies
    study = _get(app, f"/api/studies/{studies[name]['study_id']}")
    with server.client() as c:
        trials = c.get(f"/jobs/{job['id']}/trials").json()["trials"]
    assert len(study["trials"]) == len(trials)
    assert {t["number"] for t in study["trials"]} == {t["number"] for t in trials}
