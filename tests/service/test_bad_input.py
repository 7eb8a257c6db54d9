"""Bad input: each a 4xx whose detail says what is wrong, and the server keeps serving."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from prunepilot.demo.models import digits_cnn

from ._server import Server, tiny_spec, wait_for


def _upload(server: Server, name: str, data: bytes) -> dict[str, Any]:
    with server.client() as c:
        r = c.post("/uploads", files={"file": (name, data)})
    assert r.status_code == 201, r.text
    out: dict[str, Any] = r.json()
    return out


def _submit(server: Server, spec: dict[str, Any]) -> tuple[int, str]:
    with server.client() as c:
        r = c.post("/jobs", json=spec)
    detail = r.json().get("detail", "") if r.status_code >= 400 else ""
    return r.status_code, detail


def _safetensors(tensors: dict[str, torch.Tensor], tmp: Path) -> bytes:
    path = tmp / "t.safetensors"
    save_file(tensors, str(path))
    return path.read_bytes()


def test_malformed_json_and_invalid_fields(server: Server) -> None:
    with server.client() as c:
        r = c.post("/jobs", content=b'{"model": ', headers={"content-type": "application/json"})
        assert r.status_code == 422 and "not valid JSON" in r.json()["detail"]
        r = c.post("/jobs", json={"dataset": {"source": "builtin:digits"}})
        assert r.status_code == 422 and "model" in r.json()["detail"]
        r = c.post("/jobs", json=tiny_spec(constraints={"flops": "150%"}))
        assert r.status_code == 422 and "percentage" in r.json()["detail"]
        r = c.post("/jobs", json=tiny_spec(dataset={"source": "http://example.com/x"}))
        assert r.status_code == 422 and "dataset source must be" in r.json()["detail"]


def test_unknown_model_dataset_and_upload(server: Server) -> None:
    bad = {"source": "torchvision:resnet_nope", "input_shape": [1, 8, 8]}
    code, detail = _submit(server, tiny_spec(model=bad))
    assert code == 422 and "torchvision has no model 'resnet_nope'" in detail
    code, detail = _submit(server, tiny_spec(model={"source": "os:system"}))
    assert code == 403 and "not allowed" in detail and "PRUNEPILOT_MODEL_ALLOWLIST" in detail
    code, detail = _submit(server, tiny_spec(dataset={"source": "builtin:imagenet"}))
    assert code == 422 and "unknown built-in dataset 'imagenet'" in detail
    code, detail = _submit(server, tiny_spec(dataset={"source": "upload:0123456789abcdef"}))
    assert code == 422 and "unknown upload id '0123456789abcdef'" in detail
    code, detail = _submit(server, tiny_spec(dataset={"source": "dir:../etc"}))
    assert code == 422 and "data root" in detail
    code, detail = _submit(server, tiny_spec(search={"criterion": "magic"}))
    assert code == 422 and "unknown criterion 'magic'" in detail
    code, detail = _submit(server, tiny_spec(model={"kwargs": {"width": 8, "depth": 3}}))
    assert code == 422 and "depth" in detail


def test_pickled_model_is_refused_without_the_operator_flag(server: Server, tmp_path: Path) -> None:
    buf = io.BytesIO()
    torch.save(digits_cnn(width=8), buf)
    up = _upload(server, "model.pt", buf.getvalue())
    assert up["kind"] == "pickle"
    code, detail = _submit(server, tiny_spec(model={"source": f"upload:{up['id']}"}))
    assert code == 403
    assert "pickled module" in detail and "PRUNEPILOT_ALLOW_UNTRUSTED_MODELS" in detail


def test_archive_with_parent_paths_is_refused(server: Server) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("cats/1.png", b"not really a png")
        zf.writestr("../../evil.png", b"x")
    up = _upload(server, "data.zip", buf.getvalue())
    assert up["kind"] == "archive"
    code, detail = _submit(server, tiny_spec(dataset={"source": f"upload:{up['id']}"}))
    assert code == 422 and "'../../evil.png'" in detail and ".." in detail

    tbuf = io.BytesIO()
    with tarfile.open(fileobj=tbuf, mode="w:gz") as tf:
        link = tarfile.TarInfo("cats/link.png")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tf.addfile(link)
    up = _upload(server, "data.tar.gz", tbuf.getvalue())
    assert up["kind"] == "archive"
    code, detail = _submit(server, tiny_spec(dataset={"source": f"upload:{up['id']}"}))
    assert code == 422 and "link" in detail


def test_upload_over_the_limit_is_413_and_leaves_nothing(server: Server) -> None:
    limit = server.settings.max_upload_bytes
    before = set(server.settings.uploads_path.iterdir())
    with server.client() as c:
        r = c.post("/uploads", files={"file": ("big.bin", b"\0" * (limit + 1))})
        assert r.status_code == 413 and str(limit) in r.json()["detail"]
        r = c.post("/uploads", content=b"\1" * (limit + 10), params={"filename": "raw.bin"})
        assert r.status_code == 413
        r = c.post("/uploads", content=b"abc", headers={"content-type": "text/plain"})
        assert r.status_code == 400 and "multipart/form-data" in r.json()["detail"]
    assert set(server.settings.uploads_path.iterdir()) == before


def test_inputs_that_do_not_fit_the_model_are_refused_at_submit(
    server: Server, tmp_path: Path
) -> None:
    code, detail = _submit(server, tiny_spec(model={"input_shape": [3, 32, 32]}))
    assert code == 422 and "[3, 32, 32]" in detail and "[1, 8, 8]" in detail
    rn = {"source": "torchvision:resnet18", "kwargs": {"num_classes": 10}, "input_shape": [1, 8, 8]}
    code, detail = _submit(server, tiny_spec(model=rn))
    assert code == 422 and "cannot take inputs of shape [2, 1, 8, 8]" in detail
    small_head = {"kwargs": {"width": 8, "num_classes": 3}}
    code, detail = _submit(server, tiny_spec(model=small_head))
    assert code == 422 and "outputs 3 classes but the dataset has 10" in detail

    data = _safetensors(
        {"inputs": torch.rand(20, 3, 16, 16), "labels": torch.arange(20) % 4}, tmp_path
    )
    up = _upload(server, "rgb16.safetensors", data)
    assert up["kind"] == "safetensors"
    code, detail = _submit(server, tiny_spec(dataset={"source": f"upload:{up['id']}"}))
    assert code == 422 and "[3, 16, 16]" in detail and "[1, 8, 8]" in detail
    # the same upload is no model-weights file
    code, detail = _submit(server, tiny_spec(model={"weights": up["id"]}))
    assert code == 422 and "does not fit the model" in detail

    wide = _safetensors(digits_cnn(width=16).state_dict(), tmp_path)
    up = _upload(server, "w16.safetensors", wide)
    code, detail = _submit(server, tiny_spec(model={"weights": up["id"]}))
    assert code == 422 and "shape mismatches" in detail and "stem.0.weight" in detail


def test_a_runtime_failure_marks_the_job_failed_with_its_message(server: Server) -> None:
    # feasible to submit, but no model in the search space meets 1% of the FLOPs
    spec = tiny_spec(name="infeasible", constraints={"flops": "1%"})
    with server.client() as c:
        r = c.post("/jobs", json=spec)
        assert r.status_code == 201, r.text
        job = wait_for(c, r.json()["id"], timeout=120)
        assert job["status"] == "FAILED"
        assert "cannot be met" in job["error"] and "min_keep" in job["error"]
        logs = c.get(f"/jobs/{job['id']}/logs").text
        assert "cannot be met" in logs and "STATUS FAILED" in logs
        # the server still serves
        assert c.get("/healthz").json() == {"status": "ok"}
        assert c.get("/readyz").status_code == 200
        assert c.get("/jobs").status_code == 200
