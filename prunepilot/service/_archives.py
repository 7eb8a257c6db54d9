"""Safe reading of uploaded zip/tar ImageFolder archives.

Archives come from users, so nothing in them is trusted: absolute paths, ``..``
components, symbolic and hard links, device files, too many members and too many bytes
(declared or actual: a zip bomb may lie about its sizes) are refused with a message that
names the offending member. Members are copied by hand, never with ``extractall``.

A zip's central directory is counted, record by record, before `zipfile` reads it:
`zipfile` builds an object per record first, so a 1 GiB zip of empty entries (12 million
records, about 7 GB of objects) would exhaust the process before any limit could apply.
"""

from __future__ import annotations

import os
import stat
import struct
import tarfile
import zipfile
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from .errors import ArchiveError

__all__ = [
    "IMAGE_SUFFIXES",
    "ArchiveSummary",
    "extract",
    "open_member",
    "open_zip",
    "scan",
    "zip_entries",
]

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".ppm", ".pgm", ".tif", ".tiff"}
)
_CHUNK = 1 << 20
_END = b"PK\x05\x06"  # end of central directory record (22 bytes + a comment)
_END64 = b"PK\x06\x06"  # zip64 end record (56 bytes), then its locator (20 bytes)
_END64_LOCATOR = b"PK\x06\x07"
_RECORD = b"PK\x01\x02"  # central directory record (46 bytes + name, extra, comment)
_TAIL = 22 + 0xFFFF  # the end record with the longest comment


@dataclass(frozen=True)
class ArchiveSummary:
    """What an archive holds.

    Attributes:
        files: regular files (path inside the archive, size).
        total_bytes: declared uncompressed size of all files.
    """

    files: tuple[tuple[str, int], ...]
    total_bytes: int


def _safe_name(name: str) -> str:
    """The member's normalised relative path; raises on anything that could escape."""
    raw = name.replace("\\", "/")
    if raw.startswith("/") or (len(raw) > 1 and raw[1] == ":"):
        raise ArchiveError(f"archive member {name!r} has an absolute path; refusing the archive")
    parts = [p for p in PurePosixPath(raw).parts if p not in ("", ".")]
    if any(p == ".." for p in parts):
        raise ArchiveError(f"archive member {name!r} escapes the archive with '..'; refusing it")
    if "\x00" in raw:
        raise ArchiveError(f"archive member {name!r} contains a NUL byte")
    return "/".join(parts)


def zip_entries(path: Path, stop: int) -> int:
    """Records in a zip's central directory, counted without loading it (at most ``stop + 1``).

    Raises:
        ArchiveError: no end record, or a central directory that does not parse.
    """
    with path.open("rb") as f:
        size = f.seek(0, os.SEEK_END)
        n = min(size, _TAIL)
        f.seek(size - n)
        tail = f.read(n)
        at = tail.rfind(_END)
        if at < 0 or n - at < 22:
            raise ArchiveError(f"{path.name} is not a zip archive (no end record)")
        cd_size = int.from_bytes(tail[at + 12 : at + 16], "little")
        end = size - n + at
        loc = at - 20
        if loc >= 56 and tail[loc : loc + 4] == _END64_LOCATOR:
            rec = tail[loc - 56 : loc]
            if rec[:4] == _END64:
                cd_size = int.from_bytes(rec[40:48], "little")
                end -= 76
        start = end - cd_size
        if start < 0:
            raise ArchiveError("the zip's central directory claims more bytes than the file has")
        count = pos = 0
        while pos < cd_size and count <= stop:
            f.seek(start + pos)
            head = f.read(46)
            if len(head) < 46 or head[:4] != _RECORD:
                raise ArchiveError("cannot read the archive: a broken zip central directory")
            pos += 46 + sum(struct.unpack("<HHH", head[28:34]))
            count += 1
        return count


def open_zip(path: Path, max_files: int) -> zipfile.ZipFile:
    """A zip opened only once its directory holds at most ``2 * max_files`` records (files,
    and as many directories).

    Raises:
        ArchiveError: more records than that, or as `zip_entries`.
    """
    if zip_entries(path, 2 * max_files) > 2 * max_files:
        raise ArchiveError(f"the archive holds more than {max_files} files")
    return zipfile.ZipFile(path)


def _zip_members(zf: zipfile.ZipFile) -> Iterator[tuple[str, int, zipfile.ZipInfo]]:
    for info in zf.infolist():
        name = _safe_name(info.filename)
        mode = info.external_attr >> 16
        if mode and stat.S_ISLNK(mode):
            raise ArchiveError(f"archive member {info.filename!r} is a symbolic link; refusing it")
        if info.is_dir() or not name:
            continue
        yield name, info.file_size, info


def _tar_members(tf: tarfile.TarFile) -> Iterator[tuple[str, int, tarfile.TarInfo]]:
    for m in tf:
        name = _safe_name(m.name)
        if m.issym() or m.islnk():
            raise ArchiveError(f"archive member {m.name!r} is a link; refusing the archive")
        if m.isdir() or not name:
            continue
        if not m.isfile():
            raise ArchiveError(f"archive member {m.name!r} is not a regular file")
        yield name, m.size, m


def _check_limits(files: list[tuple[str, int]], max_files: int, max_bytes: int) -> int:
    if len(files) > max_files:
        raise ArchiveError(f"the archive holds more than {max_files} files")
    total = sum(size for _, size in files)
    if total > max_bytes:
        raise ArchiveError(f"the archive expands to {total} bytes, over the {max_bytes} limit")
    return total


def scan(path: Path, *, max_files: int, max_bytes: int) -> ArchiveSummary:
    """List an archive's regular files, checking every member is safe.

    Raises:
        ArchiveError: an unsafe member, too many files or bytes, or not a zip/tar file.
    """
    files: list[tuple[str, int]] = []
    try:
        if zipfile.is_zipfile(path):
            with open_zip(path, max_files) as zf:
                for name, size, _ in _zip_members(zf):
                    files.append((name, size))
                    if len(files) > max_files:
                        break
        elif tarfile.is_tarfile(path):
            with tarfile.open(path) as tf:
                for name, size, _ in _tar_members(tf):
                    files.append((name, size))
                    if len(files) > max_files:
                        break
        else:
            raise ArchiveError(f"{path.name} is not a zip or tar archive")
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as e:
        raise ArchiveError(f"cannot read the archive: {e}") from e
    total = _check_limits(files, max_files, max_bytes)
    return ArchiveSummary(tuple(files), total)


def _find(stack: ExitStack, path: Path, name: str, max_files: int) -> IO[bytes] | None:
    if zipfile.is_zipfile(path):
        zf = stack.enter_context(open_zip(path, max_files))
        for member, _size, info in _zip_members(zf):
            if member == name:
                return stack.enter_context(zf.open(info))
        return None
    tf = stack.enter_context(tarfile.open(path))  # noqa: SIM115 (the stack closes it)
    for member, _size, m in _tar_members(tf):
        if member == name:
            fobj = tf.extractfile(m)
            return None if fobj is None else stack.enter_context(fobj)
    return None


@contextmanager
def open_member(path: Path, name: str, *, max_files: int) -> Iterator[IO[bytes]]:
    """One regular member (by its normalised name, as `scan` lists it) as a seekable
    stream, decompressed as it is read, so a caller reads what it needs and no more.

    Raises:
        ArchiveError: no such member, or the archive cannot be read.
    """
    with ExitStack() as stack:
        try:
            stream = _find(stack, path, name, max_files)
        except (zipfile.BadZipFile, tarfile.TarError, EOFError, OSError) as e:
            raise ArchiveError(f"cannot read the archive: {e}") from e
        if stream is None:
            raise ArchiveError(f"the archive has no member {name!r}")
        yield stream


def _copy(src: IO[bytes], dest: Path, budget: list[int], name: str) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    with dest.open("xb") as out:
        while chunk := src.read(_CHUNK):
            budget[0] -= len(chunk)
            if budget[0] < 0:
                raise ArchiveError(
                    f"archive member {name!r} expands past the archive byte limit (zip bomb?)"
                )
            out.write(chunk)


def extract(path: Path, dest: Path, *, max_files: int, max_bytes: int) -> ArchiveSummary:
    """Extract regular files of an archive under ``dest`` (which must be empty or new).

    Raises:
        ArchiveError: as `scan`, or a member's real size exceeds the limits.
    """
    summary = scan(path, max_files=max_files, max_bytes=max_bytes)
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    budget = [max_bytes]

    def target(name: str) -> Path:
        out = (root / name).resolve()
        if not out.is_relative_to(root):
            raise ArchiveError(f"archive member {name!r} escapes the extraction directory")
        return out

    try:
        if zipfile.is_zipfile(path):
            with open_zip(path, max_files) as zf:
                for name, _size, info in _zip_members(zf):
                    with zf.open(info) as src:
                        _copy(src, target(name), budget, name)
        else:
            with tarfile.open(path) as tf:
                for name, _size, member in _tar_members(tf):
                    fobj = tf.extractfile(member)
                    if fobj is None:
                        continue
                    with fobj:
                        _copy(fobj, target(name), budget, name)
    except (zipfile.BadZipFile, tarfile.TarError, EOFError) as e:
        raise ArchiveError(f"cannot read the archive: {e}") from e
    except FileExistsError as e:
        raise ArchiveError(f"the archive holds the same file twice: {e.filename}") from e
    return summary
