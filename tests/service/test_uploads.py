"""Upload streaming (limit, checksum, multipart) and content sniffing."""

from __future__ import annotations

import asyncio
import hashlib
import io
import pickle
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file
from torch import nn

from prunepilot.service._uploads import detect_kind, receive
from prunepilot.service.errors import UploadError, UploadTooLarge


async def _chunks(data: bytes, size: int = 7) -> AsyncIterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i : i + size]


def _multipart(payload: bytes, boundary: str = "XyZ") -> bytes:
    return (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="note"\r\n\r\nhello\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; '
            'filename="../../w.safetensors"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        + payload
        + f"\r\n--{boundary}--\r\n".encode()
    )


def test_multipart_is_streamed_with_its_checksum(tmp_path: Path) -> None:
    payload = bytes(range(256)) * 40
    stored = asyncio.run(
        receive(
            "multipart/form-data; boundary=XyZ",
            _chunks(_multipart(payload)),
            tmp_path / "u",
            limit=len(payload),
        )
    )
    assert stored.size == len(payload) and stored.filename == "w.safetensors"
    assert stored.sha256 == hashlib.sha256(payload).hexdigest()
    assert (tmp_path / "u").read_bytes() == payload


def test_over_the_limit_and_malformed_bodies(tmp_path: Path) -> None:
    with pytest.raises(UploadTooLarge):
        asyncio.run(
            receive(
                "multipart/form-data; boundary=XyZ",
                _chunks(_multipart(b"x" * 100)),
                tmp_path / "a",
                limit=99,
            )
        )
    assert not (tmp_path / "a").exists()
    with pytest.raises(UploadTooLarge):
        asyncio.run(
            receive("application/octet-stream", _chunks(b"x" * 100), tmp_path / "b", limit=50)
        )
    assert not (tmp_path / "b").exists()
    no_file = b'--B\r\nContent-Disposition: form-data; name="other"\r\n\r\nv\r\n--B--\r\n'
    with pytest.raises(UploadError, match="no 'file' part"):
        asyncio.run(
            receive("multipart/form-data; boundary=B", _chunks(no_file), tmp_path / "c", limit=99)
        )
    with pytest.raises(UploadError, match="Content-Type"):
        asyncio.run(receive("text/plain", _chunks(b"x"), tmp_path / "d", limit=99))


def test_kinds_are_sniffed_from_content(tmp_path: Path) -> None:
    st = tmp_path / "w.bin"
    save_file({"w": torch.zeros(2)}, str(st))
    assert detect_kind(st) == "safetensors"
    pt = tmp_path / "m.bin"
    torch.save(nn.Linear(2, 2), pt)
    assert detect_kind(pt) == "pickle"
    raw = tmp_path / "p.bin"
    raw.write_bytes(pickle.dumps({"a": 1}, protocol=4))
    assert detect_kind(raw) == "pickle"
    pt2 = tmp_path / "x.bin"
    torch.export.save(torch.export.export(nn.Linear(2, 2), (torch.zeros(1, 2),)), pt2)
    assert detect_kind(pt2) == "pt2"
    z = tmp_path / "z.bin"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("cat/1.png", b"1")
    z.write_bytes(buf.getvalue())
    assert detect_kind(z) == "archive"
    other = tmp_path / "o.bin"
    other.write_bytes(b"hello world, nothing special here")
    assert detect_kind(other) == "other"


def test_sniffing_never_parses_a_whole_header(tmp_path: Path) -> None:
    # a "safetensors" header of 4 MiB of nesting: json.loads would exhaust the stack
    header = b"{" + b"[" * (2 << 20) + b"]" * (2 << 20) + b"}"
    path = tmp_path / "deep.bin"
    path.write_bytes(len(header).to_bytes(8, "little") + header)
    assert detect_kind(path) == "safetensors"  # plausible; the readers refuse it later
    path.write_bytes((1 << 40).to_bytes(8, "little") + b"{}")
    assert detect_kind(path) == "other"
