"""The web UI's files as served (headers, CSP, no inline script, no token in URLs) and the
self-contained report.html (valid, nothing fetched, the data escaped), without a browser."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from prunepilot.schemas import ArtifactInfo
from prunepilot.service import create_app
from prunepilot.service._report_html import render_report, report_data
from prunepilot.service._routes_ui import UI_DIR

from ._server import Server, settings

_HOSTILE = '</script><script>alert(1)</script><!-- & \u2028 "x"'


class _Tags(HTMLParser):
    """Every start tag with its attributes, and the text inside each <script> / <style>."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.bodies: list[tuple[str, dict[str, str | None], str]] = []
        self._open: tuple[str, dict[str, str | None]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag in ("script", "style"):
            self._open = (tag, dict(attrs))
            self.bodies.append((tag, dict(attrs), ""))

    def handle_data(self, data: str) -> None:
        if self._open is not None:
            tag, attrs, text = self.bodies[-1]
            self.bodies[-1] = (tag, attrs, text + data)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style"):
            self._open = None


def _parse(text: str) -> _Tags:
    p = _Tags()
    p.feed(text)
    p.close()
    return p


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Any:
    app = create_app(settings(tmp_path_factory.mktemp("ui"), scheduler=False))
    with TestClient(app) as c:
        yield c


def test_ui_page_and_files_are_served_with_a_strict_policy(client: TestClient) -> None:
    r = client.get("/ui")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "default-src 'none'" in csp
    assert "unsafe" not in csp and "connect-src 'self'" in csp and "form-action 'none'" in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    page = _parse(r.text)
    for tag, attrs in page.tags:  # no inline script or style, no event handler attributes
        assert not any(k.startswith("on") or k == "style" for k in attrs), (tag, attrs)
    scripts = [(attrs, body) for tag, attrs, body in page.bodies if tag == "script"]
    assert scripts and all(a.get("src") and not body.strip() for a, body in scripts)
    assets = [str(a.get("src")) for a, _ in scripts] + [
        str(a["href"]) for t, a in page.tags if t == "link" and a.get("rel") == "stylesheet"
    ]
    assert len(assets) == 5
    for url in assets:
        assert url.startswith("/ui/static/")
        got = client.get(url)
        assert got.status_code == 200, url
        want = "text/javascript" if url.endswith(".js") else "text/css"
        assert got.headers["content-type"].startswith(want)
        assert got.headers["x-content-type-options"] == "nosniff"
        assert got.headers["content-security-policy"] == csp
        again = client.get(url, headers={"If-None-Match": got.headers["etag"]})
        assert again.status_code == 304
    # only the package's files: no traversal, no other paths
    for bad in ("/ui/static/../_app.py", "/ui/static/%2e%2e/_app.py", "/ui/static/nope.js"):
        assert client.get(bad).status_code == 404, bad
    assert "/ui" not in client.get("/openapi.json").json()["paths"]


def test_the_chart_library_is_vendored_with_its_name_version_and_licence() -> None:
    vendor = UI_DIR / "vendor" / "uplot"
    version = (vendor / "VERSION").read_text()
    assert version.startswith("uplot 1.6.32")
    assert "(v1.6.32)" in (vendor / "uPlot.iife.min.js").read_text()[:200]
    assert "MIT License" in (vendor / "LICENSE").read_text()
    html = (UI_DIR / "index.html").read_text()
    assert not re.search(r"(src|href)=\"(https?:)?//", html)  # nothing from the network


def test_the_token_never_goes_into_a_url() -> None:
    app = (UI_DIR / "app.js").read_text()
    # every request goes through api(), which puts the token in the Authorization header
    assert (
        app.count("await fetch(") == 1
        and 'headers.set("Authorization", `Bearer ${token()}`)' in app
    )
    assert "sessionStorage" in app and "localStorage" not in app
    assert not re.search(r"[?&](token|access_token)=", app)
    assert "EventSource" not in app.replace("(EventSource cannot send", "")
    assert ".innerHTML" not in app + (UI_DIR / "charts.js").read_text()


def _report(name: str) -> dict[str, Any]:
    trial = {
        "number": 0,
        "config": {"a": 0.5, "b": 0.75},
        "state": "complete",
        "macs": 1000,
        "params": 10,
        "predicted_ms": 1.5,
        "score": 0.5,
        "feasible": True,
        "baseline": "uniform",
    }
    rejected = dict(trial, number=1, state="rejected", score=None, feasible=False, baseline=None)
    rejected["reason"] = f"macs over budget {_HOSTILE}"
    return {
        "config": {"a": 0.25, "b": 1.0},
        "macs": 900,
        "params": 9,
        "latency": {"median_ms": 1.2},
        "score": 0.75,
        "baseline": {"macs": 2000, "params": 20, "latency": None},
        "limits": {"macs": 1000.0, "latency_ms": float("inf")},
        "trials": [trial, rejected],
        "pareto": [0],
        "finalists": [dict(trial, val_score=0.75, score=0.5)],
        "chosen": "uniform",
        "wall_s": 3.0,
        "job": {"id": "0123456789abcdef", "spec": {"name": name}},
    }


def test_report_html_is_self_contained_and_escapes_the_data() -> None:
    artifact = ArtifactInfo(name="model.safetensors", size=123, sha256="ab" * 32, media_type="x")
    report = _report(_HOSTILE)
    page = render_report(report, [artifact])
    parsed = _parse(page)
    # nothing is fetched: no src or href leaves the page, no external stylesheet
    for tag, attrs in parsed.tags:
        assert "src" not in attrs and (tag != "link"), (tag, attrs)
        assert not str(attrs.get("href") or "").startswith(("http", "//")), (tag, attrs)
    assert not re.search(r"(src|href)\s*=\s*[\"']?(https?:)?//", page)
    # the job's strings cannot break out of the data block
    assert "</script><script>alert" not in page and "<!-- &" not in page
    blocks = [b for t, a, b in parsed.bodies if a.get("type") == "application/json"]
    assert len(blocks) == 1
    assert json.loads(blocks[0]) == report_data(report, [artifact])
    data = json.loads(blocks[0])
    assert data["name"] == _HOSTILE and data["result"]["limits"]["latency_ms"] is None
    assert data["trials"][1]["reason"].endswith(_HOSTILE)
    assert "&lt;/script&gt;" in page.split("<title>")[1].split("</title>")[0]
    # the page's CSP allows exactly its inline scripts and styles, by hash
    (csp,) = [
        a["content"] for t, a in parsed.tags if a.get("http-equiv") == "Content-Security-Policy"
    ]
    assert csp and "default-src 'none'" in csp and "unsafe" not in csp
    for tag, attrs, body in parsed.bodies:
        if attrs.get("type") == "application/json":
            continue
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in csp, tag
    assert len([t for t, a, _ in parsed.bodies if t == "script" and not a]) == 3


def test_a_finished_job_has_a_report_html_matching_its_trials(
    server: Server, finished_job: dict[str, Any], tmp_path: Path
) -> None:
    job = finished_job["job"]
    with server.client() as c:
        listed = {a["name"]: a for a in c.get(f"/jobs/{job['id']}/artifacts").json()}
        r = c.get(f"/jobs/{job['id']}/artifacts/report.html")
        trials = c.get(f"/jobs/{job['id']}/trials").json()
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "attachment" in r.headers["content-disposition"]  # saved, never rendered in place
    assert hashlib.sha256(r.content).hexdigest() == listed["report.html"]["sha256"]
    parsed = _parse(r.text)
    (block,) = [b for t, a, b in parsed.bodies if a.get("type") == "application/json"]
    data = json.loads(block)
    assert data["id"] == job["id"] and data["trials"] == trials["trials"]
    assert data["pareto"] == trials["pareto"]
    assert data["result"]["config"] == job["result"]["config"]
    assert {a["name"] for a in data["artifacts"]} == {
        "model.safetensors",
        "model.onnx",
        "report.json",
    }
    assert not any("src" in a for _, a in parsed.tags)


def test_ui_answers_without_a_token_on_a_real_server(server: Server) -> None:
    r = httpx.get(f"{server.url}/ui", timeout=10)
    assert r.status_code == 200 and "Authorization" in r.text
    assert httpx.get(f"{server.url}/jobs", timeout=10).status_code == 401
