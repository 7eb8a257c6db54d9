"""Uploads: streamed to disk with a size limit and a running sha256, then classified.

The request body is parsed as it arrives (``multipart/form-data`` with a ``file`` field, or
a raw ``application/octet-stream`` body), so a large upload never sits in memory and one
over the limit is refused (413) as soon as it crosses it. The kind is sniffed from the
bytes, not trusted from the name: a safetensors header, a zip or tar archive, a pickle
(protocol byte ``0x80`` or a ``torch.save`` zip with ``data.pkl``) or a ``.pt2`` program.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import secrets
import tarfile
import zipfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, MultipartState, parse_options_header

from ._archives import zip_entries
from .errors import ArchiveError, UploadError, UploadOverQuota, UploadTooLarge

__all__ = [
    "StoredFile",
    "detect_kind",
    "new_upload_id",
    "receive",
]

UploadKind = Literal["safetensors", "archive", "pickle", "pt2", "other"]

_FILENAME = re.compile(r"[^A-Za-z0-9._ -]+")
_DRAIN_CAP = 64 << 20  # bytes read and discarded past the limit before giving up
_SNIFF_ENTRIES = 100_000  # zip records listed to tell a model file from an archive
_MULTIPART_SLACK = 1 << 20  # multipart bytes besides the file (boundaries, other fields)
_SAFETENSORS_HEADER_MAX = 16 << 20  # bigger headers are not sniffed as safetensors


@dataclass(frozen=True)
class StoredFile:
    """An upload written to disk."""

    path: Path
    filename: str
    size: int
    sha256: str


def new_upload_id() -> str:
    """A fresh upload id (``[a-z0-9]{24}``)."""
    return secrets.token_hex(12)


def clean_filename(name: str | None) -> str:
    """The base name of a client-supplied file name, reduced to safe characters."""
    base = (name or "").replace("\\", "/").rsplit("/", 1)[-1]
    base = _FILENAME.sub("_", base).strip(" .")
    return base[:200] or "upload"


class _Sink:
    """Writes the file part's bytes with a size limit, a quota and a running hash."""

    def __init__(self, path: Path, limit: int, reserve: Callable[[int], bool] | None) -> None:
        self.path, self.limit, self.reserve = path, limit, reserve
        self.size = 0
        self.hash = hashlib.sha256()
        self.too_large = False
        self.over_quota = False
        self.out: IO[bytes] | None = path.open("xb")

    def write(self, data: bytes) -> None:
        if self.too_large or self.out is None:
            return
        self.size += len(data)
        if self.size <= self.limit and self.reserve is not None:
            self.over_quota = not self.reserve(len(data))
        if self.size > self.limit or self.over_quota:
            self.refuse()
            return
        self.hash.update(data)
        self.out.write(data)

    def refuse(self) -> None:
        """The upload is over the limit: drop what was written."""
        self.too_large = True
        self.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def close(self) -> None:
        if self.out is not None:
            self.out.close()
            self.out = None


class _Parts:
    """Multipart parser callbacks: the first part named ``file`` goes to the sink."""

    def __init__(self, sink: _Sink) -> None:
        self.sink = sink
        self.field = b""
        self.value = b""
        self.headers: dict[bytes, bytes] = {}
        self.in_file = False
        self.seen = False
        self.name: str | None = None

    def on_part_begin(self) -> None:
        self.headers = {}

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self.field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self.value += data[start:end]

    def on_header_end(self) -> None:
        self.headers[self.field.lower()] = self.value
        self.field, self.value = b"", b""

    def on_headers_finished(self) -> None:
        _disp, opts = parse_options_header(self.headers.get(b"content-disposition", b""))
        self.in_file = opts.get(b"name") == b"file" and not self.seen
        if self.in_file:
            self.seen = True
            raw = opts.get(b"filename")
            self.name = raw.decode("utf-8", "replace") if raw else None

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self.in_file:
            self.sink.write(data[start:end])

    def on_part_end(self) -> None:
        self.in_file = False


async def _until_refused(stream: AsyncIterator[bytes], sink: _Sink) -> AsyncIterator[bytes]:
    """The body's chunks until ``sink`` refuses the upload; then at most ``_DRAIN_CAP``
    more bytes are read and dropped, so the client gets the answer rather than a reset."""
    drained = 0
    async for chunk in stream:
        if not sink.too_large:
            yield chunk
            continue
        drained += len(chunk)
        if drained > _DRAIN_CAP:
            return


async def _multipart(boundary: bytes, stream: AsyncIterator[bytes], sink: _Sink) -> str | None:
    """Parse a multipart body into ``sink``; the client's file name, if it gave one.

    Raises:
        FormParserError: the body is malformed.
        UploadError: no ``file`` part, or no closing boundary.
    """
    st = _Parts(sink)
    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": st.on_part_begin,
            "on_part_data": st.on_part_data,
            "on_part_end": st.on_part_end,
            "on_header_field": st.on_header_field,
            "on_header_value": st.on_header_value,
            "on_header_end": st.on_header_end,
            "on_headers_finished": st.on_headers_finished,
        },
    )
    received = 0
    async for chunk in _until_refused(stream, sink):
        received += len(chunk)
        if received > sink.limit + _MULTIPART_SLACK:
            sink.refuse()  # the other parts and the boundaries count too
            continue
        parser.write(chunk)
    if sink.too_large:
        return None
    parser.finalize()
    if not st.seen:
        raise UploadError("the multipart body has no 'file' part; send the file as field 'file'")
    if parser.state != MultipartState.END:
        raise UploadError(
            "the multipart body ends before its closing boundary; send the whole body"
        )
    return st.name


async def receive(
    content_type: str | None,
    stream: AsyncIterator[bytes],
    dest: Path,
    *,
    limit: int,
    filename: str | None = None,
    reserve: Callable[[int], bool] | None = None,
) -> StoredFile:
    """Stream an upload body to ``dest``.

    Args:
        content_type: the request's ``Content-Type``.
        stream: the request body chunks.
        dest: the file to create.
        limit: the most bytes the file may have.
        filename: the client's file name for a raw body (multipart carries its own).
        reserve: takes each chunk's size from the owner's quota; ``False`` refuses it.

    Raises:
        UploadOverQuota: ``reserve`` refused a chunk (nothing is kept).
        UploadTooLarge: the file exceeds ``limit`` (nothing is kept).
        UploadError: not multipart with a ``file`` part nor a raw octet stream, a malformed
            multipart body, or an empty file.
    """
    ctype, params = parse_options_header(content_type or "")
    sink = _Sink(dest, limit, reserve)
    try:
        if ctype == b"multipart/form-data":
            boundary = params.get(b"boundary")
            if not boundary:
                raise UploadError("multipart body without a boundary")
            try:
                filename = await _multipart(boundary, stream, sink) or filename
            except FormParserError as e:
                raise UploadError(
                    f"malformed multipart body ({e}); send multipart/form-data with a 'file' "
                    "field, or a raw application/octet-stream body"
                ) from None
        elif ctype in (b"application/octet-stream", b""):
            async for chunk in _until_refused(stream, sink):
                sink.write(chunk)
        else:
            raise UploadError(
                f"unsupported Content-Type {ctype.decode('latin-1')!r}: send multipart/form-data "
                "with a 'file' field, or a raw application/octet-stream body"
            )
        if sink.size == 0:
            raise UploadError("the uploaded file is empty (0 bytes); send the file's content")
    except BaseException:
        sink.close()
        with contextlib.suppress(FileNotFoundError):
            dest.unlink()
        raise
    sink.close()
    if sink.over_quota:
        raise UploadOverQuota(sink.size)
    if sink.too_large:
        raise UploadTooLarge(f"the upload exceeds the server's limit of {limit} bytes")
    return StoredFile(dest, clean_filename(filename), sink.size, sink.hash.hexdigest())


def _is_safetensors(head: bytes, size: int, path: Path) -> bool:
    """A JSON-object header of a plausible length; its content is checked where it is used
    (parsing an attacker's 16 MiB of JSON here would cost memory, or the stack)."""
    if len(head) < 10 or head[8:9] != b"{":
        return False
    n = int.from_bytes(head[:8], "little")
    if n < 2 or n > size - 8 or n > _SAFETENSORS_HEADER_MAX:
        return False
    with path.open("rb") as f:
        f.seek(8 + max(0, n - 64))
        tail = f.read(min(n, 64))
    return tail.rstrip(b" ").endswith(b"}")


def detect_kind(path: Path) -> UploadKind:
    """Classify a stored upload by its content."""
    size = path.stat().st_size
    with path.open("rb") as f:
        head = f.read(16)
    if _is_safetensors(head, size, path):
        return "safetensors"
    if head[:2] == b"PK" and zipfile.is_zipfile(path):
        try:
            if zip_entries(path, _SNIFF_ENTRIES) > _SNIFF_ENTRIES:
                return "archive"  # no model file has that many; scan refuses it as a dataset
            with zipfile.ZipFile(path) as zf:
                names = zf.namelist()
        except (ArchiveError, zipfile.BadZipFile, OSError):
            return "other"
        if any(n.endswith("archive_format") for n in names):
            return "pt2"
        if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
            return "pickle"
        return "archive"
    if len(head) >= 2 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "pickle"
    try:
        if tarfile.is_tarfile(path):
            return "archive"
    except (OSError, tarfile.TarError, EOFError):
        pass
    return "other"


def remove_quietly(path: Path) -> None:
    """Delete a file if it exists."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
