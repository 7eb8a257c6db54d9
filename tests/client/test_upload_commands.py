"""The SDK's and the CLI's upload commands against a real server (no scheduler: jobs stay queued).

Listing follows every page, deleting answers like the server, and ``submit``'s ``file:``
shortcut takes its uploads back when the job is not created.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from prunepilot.client import Client, Conflict, NotFound, TooLarge, ValidationFailed
from prunepilot.client._cli import main

from ..service._server import ALICE, BOB, Server, settings
from .conftest import tiny_spec

MAX_UPLOAD = 64 * 1024


@pytest.fixture
def srv(tmp_path: Path) -> Iterator[Server]:
    """A fresh service for each test, so upload listings start empty."""
    with Server(settings(tmp_path / "data", scheduler=False, max_upload_bytes=MAX_UPLOAD)) as s:
        yield s


def _stored(server: Server) -> list[str]:
    return sorted(p.name for p in server.settings.uploads_path.iterdir())


def _file(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_sdk_lists_every_page_and_deletes(srv: Server, tmp_path: Path) -> None:
    with Client(srv.url, ALICE, retries=0) as alice, Client(srv.url, BOB, retries=0) as bob:
        made = [alice.upload(_file(tmp_path, f"f{i}.bin", b"x" * (i + 1))).id for i in range(3)]
        listed = list(alice.list_uploads(page_size=2))
        assert [u.id for u in listed] == made[::-1]
        assert [u.size for u in listed] == [3, 2, 1]
        assert [u.id for u in alice.list_uploads(limit=1)] == made[-1:]
        page = alice.uploads_page(limit=2)
        assert len(page.items) == 2 and page.next_cursor
        assert list(bob.list_uploads()) == []

        with pytest.raises(NotFound):
            bob.delete_upload(made[0])
        alice.delete_upload(made[0])
        with pytest.raises(NotFound, match="no upload"):
            alice.delete_upload(made[0])
        with pytest.raises(NotFound):
            alice.delete_upload("../jobs/x")  # one path segment, never another endpoint
        assert _stored(srv) == sorted(made[1:])


def test_file_shortcut_deletes_its_uploads_when_the_job_is_refused(
    srv: Server, tmp_path: Path, weights_file: Path
) -> None:
    bad = _file(tmp_path, "bad.safetensors", b"these are not weights")
    huge = _file(tmp_path, "huge.safetensors", b"\0" * (MAX_UPLOAD + 1))
    with Client(srv.url, ALICE, retries=0) as alice:
        with pytest.raises(ValidationFailed, match="weights"):  # refused by the server: 422
            alice.submit(tiny_spec(model={"weights": f"file:{bad}"}))
        assert list(alice.list_uploads()) == []
        with pytest.raises(TooLarge):  # the second upload fails: the first is taken back
            alice.submit(
                tiny_spec(
                    model={"weights": f"file:{weights_file}"},
                    dataset={"source": f"file:{huge}"},
                )
            )
        assert list(alice.list_uploads()) == []
        assert _stored(srv) == []

        job = alice.submit(tiny_spec(model={"weights": f"file:{weights_file}"}))
        (kept,) = alice.list_uploads()
        assert job.info.spec.model.weights == kept.id
        assert kept.live_jobs == [job.id]
        with pytest.raises(Conflict, match=job.id):
            alice.delete_upload(kept.id)
        assert _stored(srv) == [kept.id]


def test_cli_lists_and_deletes_uploads(
    srv: Server, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    base = ["--url", srv.url, "--token", ALICE, "--retries", "0"]
    with Client(srv.url, ALICE, retries=0) as alice:
        upload = alice.upload(_file(tmp_path, "weights.bin", b"w" * 1234))

    assert main([*base, "uploads"]) == 0
    out = capsys.readouterr().out
    assert "1 upload" in out and upload.id in out and "weights.bin" in out and "1,234" in out
    assert main([*base, "uploads", "--json"]) == 0
    (item,) = json.loads(capsys.readouterr().out)
    assert item["id"] == upload.id and item["live_jobs"] == [] and item["expires_at"]

    assert main([*base, "delete-upload", upload.id]) == 0
    assert f"upload {upload.id} deleted" in capsys.readouterr().out
    assert main([*base, "delete-upload", upload.id]) == 1
    err = capsys.readouterr().err
    assert "no upload" in err and "HTTP 404" in err and "Traceback" not in err
    assert main([*base, "uploads"]) == 0
    assert "0 uploads" in capsys.readouterr().out
