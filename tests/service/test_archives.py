"""Safe archive reading: escapes, links, bombs and limits are refused; good archives extract."""

from __future__ import annotations

import io
import tarfile
import zipfile
from pathlib import Path

import pytest

from prunepilot.service._archives import extract, scan
from prunepilot.service.errors import ArchiveError

LIMITS = {"max_files": 100, "max_bytes": 10_000}


def _zip(tmp: Path, members: dict[str, bytes]) -> Path:
    path = tmp / "a.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def _tar(tmp: Path, members: list[tarfile.TarInfo], data: dict[str, bytes]) -> Path:
    path = tmp / "a.tar"
    with tarfile.open(path, "w") as tf:
        for m in members:
            payload = data.get(m.name)
            if payload is not None:
                m.size = len(payload)
            tf.addfile(m, io.BytesIO(payload) if payload is not None else None)
    return path


@pytest.mark.parametrize(
    "name", ["../x.png", "a/../../x.png", "/etc/passwd", "C:/win.png", "a\\..\\..\\x.png"]
)
def test_escaping_zip_members_are_refused(tmp_path: Path, name: str) -> None:
    path = _zip(tmp_path, {"ok/1.png": b"1", name: b"2"})
    with pytest.raises(ArchiveError, match=r"absolute|escapes"):
        scan(path, **LIMITS)
    with pytest.raises(ArchiveError):
        extract(path, tmp_path / "out", **LIMITS)
    assert not (tmp_path / "x.png").exists()


def test_tar_links_and_devices_are_refused(tmp_path: Path) -> None:
    for kind in (tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.FIFOTYPE):
        m = tarfile.TarInfo("cls/thing")
        m.type, m.linkname = kind, "/etc/passwd"
        path = _tar(tmp_path, [m], {})
        with pytest.raises(ArchiveError, match=r"link|regular"):
            scan(path, **LIMITS)


def test_zip_symlink_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "l.zip"
    with zipfile.ZipFile(path, "w") as zf:
        info = zipfile.ZipInfo("cls/link.png")
        info.external_attr = (0o120777 << 16) | 0
        zf.writestr(info, "/etc/passwd")
    with pytest.raises(ArchiveError, match="symbolic link"):
        scan(path, **LIMITS)


def test_limits_on_files_and_bytes(tmp_path: Path) -> None:
    many = _zip(tmp_path, {f"c/{i}.png": b"x" for i in range(101)})
    with pytest.raises(ArchiveError, match="more than 100 files"):
        scan(many, **LIMITS)
    big = _zip(tmp_path, {"c/big.png": b"\0" * 10_001})
    with pytest.raises(ArchiveError, match="expands to 10001 bytes"):
        scan(big, **LIMITS)


def test_good_zip_and_tgz_extract(tmp_path: Path) -> None:
    z = _zip(tmp_path, {"top/cat/1.png": b"1", "top/dog/2.png": b"22", "top/": b""})
    summary = extract(z, tmp_path / "z", **LIMITS)
    assert dict(summary.files) == {"top/cat/1.png": 1, "top/dog/2.png": 2}
    assert (tmp_path / "z/top/dog/2.png").read_bytes() == b"22"

    tgz = tmp_path / "a.tgz"
    with tarfile.open(tgz, "w:gz") as tf:
        d = tarfile.TarInfo("cat")
        d.type = tarfile.DIRTYPE
        tf.addfile(d)
        f = tarfile.TarInfo("cat/1.png")
        f.size = 3
        tf.addfile(f, io.BytesIO(b"abc"))
    extract(tgz, tmp_path / "t", **LIMITS)
    assert (tmp_path / "t/cat/1.png").read_bytes() == b"abc"
    with pytest.raises(ArchiveError, match="not a zip or tar"):
        scan(tmp_path / "t/cat/1.png", **LIMITS)
