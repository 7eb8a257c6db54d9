"""Hostile model references run no code: against a real server process, the runner, and
`prunepilot.load`. Every probe aims at a marker path (in tmp) that must never appear."""

from __future__ import annotations

import json
import os
import pickle
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from safetensors.torch import save_file

import prunepilot as pp
from prunepilot.service import Settings
from prunepilot.service._runner import run_job
from prunepilot.service._store import Database

from ._process import ServerProcess
from ._server import ALICE, tiny_spec


class _MakeDir:
    """Pickles to ``os.mkdir(path)``: whoever unpickles it creates the directory."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.mkdir, (str(self.path),))


@pytest.fixture(scope="module")
def hostile(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A server process (default allowlist, no scheduler) and alice's uploaded pickle."""
    root = tmp_path_factory.mktemp("hostile")
    marker = root / "pwned-by-pickle"
    with ServerProcess(root / "server") as srv, srv.client() as c:
        r = c.post("/uploads", files={"file": ("evil.pt", pickle.dumps(_MakeDir(marker)))})
        assert r.status_code == 201, r.text
        assert r.json()["kind"] == "pickle"
        pickle_path = root / "server" / "uploads" / r.json()["id"]
        assert pickle_path.is_file()
        yield {"server": srv, "client": c, "root": root, "marker": marker, "pickle": pickle_path}
        assert srv.alive(), srv.output()
        assert c.get("/jobs").status_code == 200


def _submit(c: httpx.Client, source: str, kwargs: dict[str, Any]) -> httpx.Response:
    spec = tiny_spec(model={"source": source, "kwargs": kwargs, "input_shape": [1, 8, 8]})
    return c.post("/jobs", json=spec)


@pytest.mark.parametrize(
    ("source", "kwargs", "status", "says"),
    [
        # the attribute walk: mkdir in the API process
        ("prunepilot.demo.models:torch.os.mkdir", {"path": "{marker}"}, 422, "attribute path"),
        # the attribute walk: torch.load of an uploaded pickle in the API process
        (
            "prunepilot.demo.models:torch.load",
            {"f": "{pickle}", "weights_only": False},
            422,
            "attribute path",
        ),
        # an imported module as the "factory"
        ("prunepilot.demo.models:torch", {"f": "{pickle}"}, 422, "kwargs.f is refused"),
        ("prunepilot.demo.models:nn", {}, 422, "is a module"),
        ("prunepilot.demo.models:_Residual", {"width": 8}, 422, "'_private' name"),
        # trusted libraries, told to read a file
        ("timm:resnet18", {"checkpoint_path": "{pickle}"}, 422, "kwargs.checkpoint_path"),
        ("timm:resnet18", {"pretrained_cfg_overlay": {"file": "{pickle}"}}, 422, "overlay"),
        ("torchvision:resnet18", {"weights": "DEFAULT"}, 422, "kwargs.weights is refused"),
        ("prunepilot.demo.models:digits_cnn", {"cfg": {"path": "{marker}"}}, 422, "cfg.path"),
        # outside the allowlist
        ("os:makedirs", {"name": "{marker}"}, 403, "PRUNEPILOT_MODEL_ALLOWLIST"),
        ("subprocess:Popen", {"args": ["mkdir", "{marker}"]}, 403, "not allowed"),
    ],
)
def test_hostile_model_references_are_refused_before_running_anything(
    hostile: dict[str, Any],
    tmp_path: Path,
    source: str,
    kwargs: dict[str, Any],
    status: int,
    says: str,
) -> None:
    marker = tmp_path / "pwned"
    fill = {"{marker}": str(marker), "{pickle}": str(hostile["pickle"])}
    raw = json.dumps(kwargs)
    for key, value in fill.items():
        raw = raw.replace(key, value)
    r = _submit(hostile["client"], source, json.loads(raw))
    assert r.status_code == status, r.text
    assert says in r.json()["detail"], r.json()
    assert not marker.exists() and not hostile["marker"].exists()
    assert hostile["client"].get("/jobs").status_code == 200
    assert hostile["server"].alive(), hostile["server"].output()


def test_a_queued_job_is_refused_by_the_runner_once_its_factory_is_no_longer_allowed(
    tmp_path: Path,
) -> None:
    data = tmp_path / "server"
    with ServerProcess(data) as srv, srv.client() as c:
        r = c.post("/jobs", json=tiny_spec())
        assert r.status_code == 201, r.text
        job_id = r.json()["id"]
    narrowed = Settings(data_dir=data, tokens={ALICE: "alice"}, model_allowlist=("mypkg.*:*",))
    db = Database(narrowed.db_url)
    try:
        attempt = db.claim(job_id)  # as the scheduler of the restarted server would
        assert attempt is not None
        status = run_job(job_id, attempt, narrowed.model_dump(mode="json", exclude={"tokens"}))
        row = db.get_job(job_id)
    finally:
        db.dispose()
    assert status == "FAILED"
    assert row is not None and row.error is not None
    assert "prunepilot.demo.models:digits_cnn" in row.error and "not allowed" in row.error
    assert "mypkg.*:*" in row.error and "PRUNEPILOT_MODEL_ALLOWLIST" in row.error


def _checkpoint(path: Path, source: str, kwargs: dict[str, Any]) -> Path:
    """A prunepilot/1 checkpoint naming ``source`` with ``kwargs``, as an attacker writes it."""
    state = {"w": torch.zeros(2, 2)}
    meta = {
        "format": "prunepilot/1",
        "source": source,
        "kwargs": json.dumps(kwargs),
        "shapes": json.dumps({"w": [2, 2]}),
        "num_features": "{}",
    }
    save_file(state, str(path), metadata=meta)
    return path


def test_prunepilot_load_runs_nothing_a_checkpoint_names(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = _checkpoint(tmp_path / "evil.safetensors", "os:makedirs", {"name": str(marker)})
    with pytest.raises(pp.UntrustedSourceError) as info:
        pp.load(path)
    msg = str(info.value)
    assert "'os:makedirs'" in msg and "allow=" in msg and "factory=" in msg
    with pytest.raises(pp.UntrustedSourceError):
        pp.load(path, allow=["mypkg.models:*"])
    assert not marker.exists()


def test_prunepilot_load_refuses_a_trusted_library_told_to_read_a_file(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    payload = tmp_path / "evil.pth"
    payload.write_bytes(pickle.dumps(_MakeDir(marker)))
    path = _checkpoint(
        tmp_path / "evil.safetensors", "timm:resnet18", {"checkpoint_path": str(payload)}
    )
    with pytest.raises(pp.PrunepilotError, match=r"kwargs\.checkpoint_path is refused"):
        pp.load(path)
    assert not marker.exists()
