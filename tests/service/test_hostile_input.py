"""Hostile input against a real server process: every probe is a clear 4xx, never a 500.

Each probe asserts the status and the message, and that the owner's job listing still
works afterwards. Archive bombs and an oversized chunked body also check the server's
peak memory (``VmHWM``) stayed far below what reading them whole would cost.
"""

from __future__ import annotations

import contextlib
import io
import json
import socket
import struct
import threading
import time
import zipfile
import zlib
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from sqlalchemy import update

from prunepilot.schemas import JobSpec
from prunepilot.service._app import _LastResort
from prunepilot.service._rows import JobRow
from prunepilot.service._store import Database

from ._process import ServerProcess
from ._server import BOB, tiny_spec

MB = 1 << 20
_PIXEL_LIMIT = 4096 * 4096  # the default max_image_pixels


@pytest.fixture(scope="module")
def proc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """The service as its own process (no scheduler: jobs stay queued, no Ray)."""
    with ServerProcess(tmp_path_factory.mktemp("hostile")) as p:
        yield p


def _listing_works(p: ServerProcess) -> list[dict[str, Any]]:
    with p.client() as c:
        r = c.get("/jobs", params={"limit": 200})
    assert r.status_code == 200, r.text
    items: list[dict[str, Any]] = r.json()["items"]
    return items


def _post_raw(p: ServerProcess, body: str) -> httpx.Response:
    with p.client() as c:
        return c.post("/jobs", content=body, headers={"content-type": "application/json"})


def _with(raw_value: str, path: tuple[str, ...], spec: dict[str, Any] | None = None) -> str:
    """The tiny spec as JSON text with ``raw_value`` (JSON text, e.g. ``1e400``) at ``path``."""
    spec = json.loads(json.dumps(spec or tiny_spec()))
    node = spec
    for key in path[:-1]:
        node = node.setdefault(key, {})
    node[path[-1]] = "@@HOLE@@"
    return json.dumps(spec).replace('"@@HOLE@@"', raw_value)


# ---------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(
    ("raw", "path", "message"),
    [
        ('"inf"', ("constraints", "flops"), "finite positive number"),
        ('"1e400"', ("constraints", "flops"), "finite positive number"),
        ('"nan"', ("constraints", "params"), "finite positive number"),
        ("1e400", ("constraints", "flops"), "finite positive number"),
        ("Infinity", ("constraints", "latency_ms"), "finite positive number"),
        ("NaN", ("constraints", "flops"), "finite positive number"),
        ("1" + "0" * 400, ("constraints", "flops"), "finite positive number"),
        ("Infinity", ("search", "latency_margin"), "finite number"),
        ("NaN", ("finetune", "lr"), "finite number"),
        ("-Infinity", ("space", "min_keep"), "finite number"),
        ("[Infinity]", ("dataset", "std"), "finite number"),
        ('{"width": 8, "scale": NaN}', ("model", "kwargs"), "scale must be a finite number"),
    ],
)
def test_non_finite_numbers_are_refused_before_anything_is_stored(
    proc: ServerProcess, raw: str, path: tuple[str, ...], message: str
) -> None:
    r = _post_raw(proc, _with(raw, path))
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert ".".join(("body", *path)) in detail and message in detail
    assert not any(j["name"] == "tiny" for j in _listing_works(proc))


def test_an_infinite_budget_is_not_dropped_beside_a_finite_one(proc: ServerProcess) -> None:
    spec = tiny_spec(constraints={"flops": "60%", "params": "@@"})
    r = _post_raw(proc, json.dumps(spec).replace('"@@"', "1e400"))
    assert r.status_code == 422 and "body.constraints.params" in r.json()["detail"]
    _listing_works(proc)


@pytest.mark.parametrize(
    ("value", "path", "bound"),
    [
        (9223372036854775808, ("search", "trials"), "less than or equal to 100000"),
        (10**30, ("search", "trials"), "less than or equal to 100000"),
        (2**70, ("search", "seed"), "less than or equal to 4294967295"),
        (-1, ("search", "seed"), "greater than or equal to 0"),
        (2**64, ("dataset", "seed"), "less than or equal to 4294967295"),
        (10**12, ("dataset", "limit"), "less than or equal to 1000000000"),
        (10**8, ("finetune", "steps"), "less than or equal to 10000000"),
        (10**8, ("search", "score_steps"), "less than or equal to 10000000"),
        (10**9, ("search", "bn_batches"), "less than or equal to 100000"),
        (10**6, ("constraints", "target", "repeats"), "less than or equal to 10000"),
        (10**20, ("workers",), "less than or equal to 64"),
        (10**30, ("space", "round_to"), "less than or equal to 4096"),
    ],
)
def test_huge_integers_are_refused_by_the_schema(
    proc: ServerProcess, value: int, path: tuple[str, ...], bound: str
) -> None:
    r = _post_raw(proc, _with(str(value), path))
    assert r.status_code == 422, r.text
    detail = r.json()["detail"]
    assert ".".join(("body", *path)) in detail and bound in detail
    _listing_works(proc)


@pytest.mark.parametrize(
    ("section", "value", "message"),
    [
        ("space", {"ignore": ["*a" * 200]}, "body.space.ignore.0: String should have at most 200"),
        ("space", {"ignore": ["x"] * 257}, "body.space.ignore: Tuple should have at most 256"),
        ("finetune", {"device": "../../x"}, "body.finetune.device: device must be 'cpu' or 'cuda'"),
        ("finetune", {"device": "cuda:123456789"}, "names a GPU by its index"),
        ("model", {"input_shape": [3, 4096, 4096]}, "values per sample, over 12,582,912"),
        ("dataset", {"mean": [0.5] * 4097, "std": [1.0]}, "body.dataset.mean: Tuple should"),
    ],
    ids=["long-pattern", "many-patterns", "device-path", "device-index", "huge-sample", "mean"],
)
def test_unbounded_strings_lists_and_shapes_are_refused(
    proc: ServerProcess, section: str, value: dict[str, Any], message: str
) -> None:
    r = _post_raw(proc, json.dumps(tiny_spec(**{section: value})))
    assert r.status_code == 422 and message in r.json()["detail"], r.text
    _listing_works(proc)


def test_numeric_query_and_header_overflows(proc: ServerProcess) -> None:
    with proc.client() as c:
        for cursor in ("czEwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDAwMDA", "cy01", "czAx", "é"):
            r = c.get("/jobs", params={"cursor": cursor})
            assert r.status_code == 422, r.text  # too long for the schema, or not a cursor
            assert "invalid cursor" in r.json()["detail"] or "query.cursor" in r.json()["detail"]
        r = c.get("/jobs", params={"limit": 10**30})
        assert r.status_code == 422 and "query.limit" in r.json()["detail"]
        r = c.get("/jobs/0123456789abcdef/events", headers={"Last-Event-ID": "9" * 40})
        assert r.status_code == 422 and "last-event-id" in r.json()["detail"]
        r = c.get("/jobs/0123456789abcdef/logs", params={"tail": 10**30})
        assert r.status_code == 422 and "query.tail" in r.json()["detail"]
    _listing_works(proc)


def test_a_stored_spec_that_no_longer_parses_shows_as_failed_and_can_be_deleted(
    proc: ServerProcess,
) -> None:
    # what an older server stored for {"flops": "inf"}: every budget null
    spec = JobSpec.model_validate(tiny_spec(name="legacy"))
    stored = json.loads(spec.model_dump_json())
    stored["constraints"]["flops"] = None
    db = Database(f"sqlite:///{(proc.data_dir / 'prunepilot.db').resolve()}")
    try:
        db.add_job("1e9a0c4ffee0dead", "alice", spec)
        with db.write() as s:
            s.execute(
                update(JobRow)
                .where(JobRow.id == "1e9a0c4ffee0dead")
                .values(spec=json.dumps(stored))
            )
    finally:
        db.dispose()
    listed = {j["id"]: j for j in _listing_works(proc)}
    job = listed["1e9a0c4ffee0dead"]
    assert job["status"] == "FAILED" and job["spec"] is None
    assert "stored job spec is unreadable" in job["error"] and "constraints" in job["error"]
    with proc.client() as c:
        r = c.get("/jobs/1e9a0c4ffee0dead")
        assert r.status_code == 200 and r.json()["status"] == "FAILED"
        assert c.delete("/jobs/1e9a0c4ffee0dead").status_code == 204
        assert c.get("/jobs/1e9a0c4ffee0dead").status_code == 404
    assert "1e9a0c4ffee0dead" not in {j["id"] for j in _listing_works(proc)}


# ---------------------------------------------------------------------------- image bombs


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(width: int, height: int) -> bytes:
    """A valid 8-bit grayscale PNG of black pixels (zeros compress to almost nothing)."""
    z = zlib.compressobj(1)
    row_block = bytes((width + 1) * min(height, 1000))
    idat = []
    for start in range(0, height, 1000):
        rows = min(1000, height - start)
        idat.append(z.compress(row_block[: (width + 1) * rows]))
    idat.append(z.flush())
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", b"".join(idat))
        + _png_chunk(b"IEND", b"")
    )


def _zip_with(first: str, write: Any) -> bytes:
    """A zip ImageFolder whose first image is written by ``write(stream)``, then a real one."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as zf:
        with zf.open(first, "w", force_zip64=True) as f:
            write(f)
        zf.writestr("dogs/1.png", _png(8, 8))
    return buf.getvalue()


def _bmp_of_zeros(f: Any, side: int = 16384) -> None:
    """A 32-bit BMP of side x side zero pixels: 1 GiB for the default side."""
    size = side * side * 4
    f.write(b"BM" + struct.pack("<IHHI", 54 + size, 0, 0, 54))
    f.write(struct.pack("<IiiHHIIiiII", 40, side, side, 1, 32, 0, size, 2835, 2835, 0, 0))
    zeros = bytes(16 * MB)
    for _ in range(size // len(zeros)):
        f.write(zeros)


def _png_with_a_huge_chunk(f: Any) -> None:
    """An 8x8 PNG with 256 MiB of zeros in an ancillary chunk before its pixels."""
    f.write(
        b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", struct.pack(">IIBBBBB", 8, 8, 8, 0, 0, 0, 0))
    )
    length, zeros, crc = 256 * MB, bytes(16 * MB), zlib.crc32(b"blOb")
    f.write(struct.pack(">I", length) + b"blOb")
    for _ in range(length // len(zeros)):
        f.write(zeros)
        crc = zlib.crc32(zeros, crc)
    f.write(struct.pack(">I", crc))
    f.write(_png(8, 8)[8 + 25 :])  # its IDAT and IEND


def _submit_archive(p: ServerProcess, data: bytes) -> httpx.Response:
    with p.client() as c:
        up = c.post("/uploads", content=data, params={"filename": "data.zip"})
        assert up.status_code == 201 and up.json()["kind"] == "archive", up.text
        spec = tiny_spec(
            model={"kwargs": {"width": 8, "num_classes": 2}},
            dataset={"source": f"upload:{up.json()['id']}", "channels": 1},
        )
        return c.post("/jobs", json=spec)


@pytest.fixture(scope="module")
def archives_warm(proc: ServerProcess) -> None:
    """A good archive submitted once: every module the submit path needs is loaded."""
    good = _zip_with("cats/0.png", lambda f: f.write(_png(8, 8)))
    r = _submit_archive(proc, good)
    assert r.status_code == 201, r.text


@pytest.mark.parametrize(
    ("first", "write", "message"),
    [
        (
            "cats/0.png",
            lambda f: f.write(_png(15000, 15000)),
            f"image 'cats/0.png' (225,000,000 pixels) is over this server's limit of "
            f"{_PIXEL_LIMIT:,} pixels (max_image_pixels); use smaller images",
        ),
        (
            "cats/0.png",
            lambda f: f.write(_png(5000, 5000)),
            f"image 'cats/0.png' is 5000x5000 = 25,000,000 pixels, over this server's limit "
            f"of {_PIXEL_LIMIT:,} pixels",
        ),
        (
            "cats/0.bmp",
            _bmp_of_zeros,
            f"image 'cats/0.bmp' (268,435,456 pixels) is over this server's limit of "
            f"{_PIXEL_LIMIT:,} pixels (max_image_pixels); use smaller images",
        ),
        ("cats/0.png", _png_with_a_huge_chunk, "its header runs past 16777216 bytes"),
    ],
    ids=["png-15000x15000", "png-5000x5000", "bmp-1GiB", "png-256MiB-chunk"],
)
def test_image_bombs_are_refused_at_submit_from_their_headers(
    proc: ServerProcess, archives_warm: None, first: str, write: Any, message: str
) -> None:
    data = _zip_with(first, write)
    before, t0 = proc.peak_rss(), time.monotonic()
    r = _submit_archive(proc, data)
    took, grew = time.monotonic() - t0, proc.peak_rss() - before
    print(f"\n{first} ({len(data) / MB:.1f} MB zip): {r.status_code} in {took:.2f} s, "
          f"peak RSS {before / MB:.0f} MB -> +{grew / MB:.1f} MB")  # fmt: skip
    assert r.status_code == 422 and message in r.json()["detail"], r.text
    assert grew < 300 * MB
    _listing_works(proc)


def _zip_of_many_entries(n: int) -> bytes:
    """A zip64 whose central directory lists one empty member ``n`` times (47 bytes each)."""
    local = b"PK\x03\x04" + struct.pack("<HHHHHIIIHH", 20, 0, 0, 0, 0, 0, 0, 0, 1, 0) + b"a"
    record = b"PK\x01\x02" + struct.pack(
        "<HHHHHHIIIHHHHHII", 45, 20, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0
    )
    directory = (record + b"a") * n
    end64 = b"PK\x06\x06" + struct.pack(
        "<QHHIIQQQQ", 44, 45, 45, 0, 0, n, n, len(directory), len(local)
    )
    locator = b"PK\x06\x07" + struct.pack("<IQI", 0, len(local) + len(directory), 1)
    end = b"PK\x05\x06" + struct.pack("<HHHHIIH", 0, 0, 0xFFFF, 0xFFFF, 2**32 - 1, 2**32 - 1, 0)
    return local + directory + end64 + locator + end


def test_a_zip_of_millions_of_entries_is_counted_not_loaded(
    proc: ServerProcess, archives_warm: None
) -> None:
    # zipfile would build 2 million member objects (about 720 MB, 9 s) before any check
    data = _zip_of_many_entries(2_000_000)
    before, t0 = proc.peak_rss(), time.monotonic()
    with proc.client() as c:
        up = c.post("/uploads", content=data, params={"filename": "many.zip"})
        assert up.status_code == 201 and up.json()["kind"] == "archive", up.text
        spec = tiny_spec(dataset={"source": f"upload:{up.json()['id']}", "channels": 1})
        r = c.post("/jobs", json=spec)
    took, grew = time.monotonic() - t0, proc.peak_rss() - before
    print(f"\n2M-entry zip ({len(data) / MB:.0f} MB): {r.status_code} in {took:.2f} s, "
          f"peak RSS {before / MB:.0f} MB -> +{grew / MB:.1f} MB")  # fmt: skip
    assert r.status_code == 422, r.text
    assert "the archive holds more than 100000 files" in r.json()["detail"]
    assert grew < 100 * MB
    _listing_works(proc)


# ---------------------------------------------------------------------------- uploads


@pytest.mark.parametrize(
    ("content_type", "body", "message"),
    [
        (
            "multipart/form-data; boundary=B",
            b'--B\r\nContent Disposition: form-data; name="file"\r\n\r\nx\r\n--B--\r\n',
            "malformed multipart body (Found invalid character 32 in header",
        ),
        ("multipart/form-data; boundary=B", b"no boundary here", "malformed multipart body"),
        (
            "multipart/form-data; boundary=B",
            b'--B\r\nContent-Disposition: form-data; name="file"\r\n\r\nxyz',
            "ends before its closing boundary",
        ),
        (
            "multipart/form-data; boundary=B",
            b'--B\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\n'
            b"\r\n--B--\r\n",
            "the uploaded file is empty (0 bytes)",
        ),
        ("application/octet-stream", b"", "the uploaded file is empty (0 bytes)"),
    ],
    ids=["bad-part-header", "no-boundary", "truncated", "empty-multipart", "empty-raw"],
)
def test_malformed_and_empty_uploads_are_400(
    proc: ServerProcess, content_type: str, body: bytes, message: str
) -> None:
    stored = set((proc.data_dir / "uploads").iterdir())
    with proc.client() as c:
        r = c.post("/uploads", content=body, headers={"content-type": content_type})
    assert r.status_code == 400 and message in r.json()["detail"], r.text
    assert set((proc.data_dir / "uploads").iterdir()) == stored
    _listing_works(proc)


def test_a_chunked_json_body_is_refused_once_it_crosses_the_limit(proc: ServerProcess) -> None:
    size = 60 * MB

    def body() -> Iterator[bytes]:
        chunk = b" " * (64 << 10)
        yield b'{"name": "'
        for _ in range(size // len(chunk)):
            yield chunk
        yield b'"}'

    with proc.client() as c:
        c.get("/jobs")  # warm up
        before = proc.peak_rss()
        r = c.post("/jobs", content=body(), headers={"content-type": "application/json"})
        grew = proc.peak_rss() - before
    print(f"\nchunked {size // MB} MiB JSON body: {r.status_code}, peak RSS +{grew / MB:.1f} MB")
    assert "content-length" not in r.request.headers  # it really went chunked
    assert r.status_code == 413 and "request body over 1048576 bytes" in r.json()["detail"]
    assert grew < 16 * MB
    _listing_works(proc)


# ---------------------------------------------------------------------------- last resort


def _tiny_app() -> FastAPI:
    app = FastAPI()

    @app.get("/whoami")
    def whoami(request: Request) -> dict[str, int]:
        assert request.client is not None
        return {"port": request.client.port}

    @app.get("/boom")
    def boom() -> None:
        raise RuntimeError("a bug")

    app.add_middleware(_LastResort)
    return app


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_an_unhandled_error_is_a_json_500_and_keeps_the_connection(
    http: str, caplog: pytest.LogCaptureFixture
) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(_tiny_app(), host="127.0.0.1", port=port, http=http, log_level="error")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started:
            assert thread.is_alive()
            time.sleep(0.02)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:
            first = c.get("/whoami").json()["port"]
            r = c.get("/boom")
            assert r.status_code == 500
            assert r.json() == {
                "detail": "internal server error (RuntimeError); see the server log"
            }
            assert c.get("/whoami").json()["port"] == first  # the same TCP connection
    finally:
        server.should_exit = True
        thread.join(10)
    logged = [r for r in caplog.records if r.name == "prunepilot.service" and r.exc_info]
    assert logged and "GET /boom" in logged[0].getMessage()
    assert "a bug" in caplog.text


def test_event_streams_per_token_are_bounded_and_given_back(proc: ServerProcess) -> None:
    limit = 8  # the default max_event_streams_per_token
    with proc.client() as c, proc.client(BOB) as bob, contextlib.ExitStack() as streams:
        job = c.post("/jobs", json=tiny_spec()).json()["id"]  # stays queued: no scheduler
        url = f"/jobs/{job}/events"
        opened = [streams.enter_context(c.stream("GET", url)) for _ in range(limit)]
        assert all(r.status_code == 200 for r in opened)
        with c.stream("GET", url) as r:
            assert r.status_code == 429
            assert f"limit {limit}" in json.loads(r.read())["detail"]
        own = bob.post("/jobs", json=tiny_spec()).json()["id"]  # another token: its own slots
        with bob.stream("GET", f"/jobs/{own}/events") as r:
            assert r.status_code == 200
        opened[0].close()  # a client going away gives its slot back
        deadline = time.monotonic() + 10
        while True:
            with c.stream("GET", url) as r:
                if r.status_code == 200 or time.monotonic() > deadline:
                    break
            time.sleep(0.1)
        assert r.status_code == 200
    _listing_works(proc)
