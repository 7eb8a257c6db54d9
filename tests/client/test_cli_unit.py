"""The command line without a server: parsing, and expected errors as one line, no traceback."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from prunepilot.client._cli import build_parser, main


def _closed_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}"


def test_global_options_before_or_after_the_command() -> None:
    p = build_parser()
    a = p.parse_args(["--url", "http://a", "status", "J1", "--token", "t"])
    assert (a.url, a.token, a.job_id) == ("http://a", "t", "J1")
    b = p.parse_args(["list", "--status", "running", "--url", "http://b"])
    assert (b.url, b.status) == ("http://b", "RUNNING")
    assert not hasattr(p.parse_args(["list"]), "url")


def test_unreachable_server_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    rc = main(["--url", _closed_url(), "--retries", "1", "status", "J1"])
    err = capsys.readouterr().err
    assert rc == 1
    assert "cannot connect" in err and "Traceback" not in err


def test_invalid_spec_file_is_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = tmp_path / "job.yaml"
    spec.write_text(json.dumps({"model": {"source": "x"}, "dataset": {"source": "builtin:digits"}}))
    rc = main(["--url", _closed_url(), "submit", str(spec)])
    err = capsys.readouterr().err
    assert rc == 1
    assert "invalid job spec" in err and "model.input_shape" in err and "constraints" in err


def test_env_fallbacks(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    url = _closed_url()
    monkeypatch.setenv("PRUNEPILOT_URL", url)
    monkeypatch.setenv("PRUNEPILOT_TOKEN", "from-env")
    assert main(["--retries", "0", "list"]) == 1
    assert url.removeprefix("http://") in capsys.readouterr().err


def test_python_dash_m_runs_the_cli() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "prunepilot.client", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    for command in ("serve", "submit", "status", "list", "trials", "download", "demo", "uploads"):
        assert command in out
