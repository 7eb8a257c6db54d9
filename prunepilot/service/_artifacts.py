"""The artifact store: one directory per job, each file with its sha256 and size.

Runners write files atomically (a temporary name, then a rename) and record their
checksums in the database; the API streams them back with the checksum as ``ETag``.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

from prunepilot.schemas import ArtifactInfo

__all__ = ["ArtifactStore", "sha256_file"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_MEDIA = {
    ".safetensors": "application/octet-stream",
    ".onnx": "application/octet-stream",
    ".json": "application/json",
    ".html": "text/html",
    ".txt": "text/plain",
}
_CHUNK = 1 << 20


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


class ArtifactStore:
    """Files of finished jobs under ``root/JOB_ID/NAME``.

    Args:
        root: the artifact directory.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def job_dir(self, job_id: str) -> Path:
        """The job's directory (not created)."""
        return self.root / job_id

    def path(self, job_id: str, name: str) -> Path | None:
        """The file ``name`` of a job, or ``None`` if the name is not a plain file name."""
        if not _NAME.match(name) or ".." in name:
            return None
        return self.job_dir(job_id) / name

    def put(self, job_id: str, name: str, src: Path) -> ArtifactInfo:
        """Move ``src`` into the store as ``name``; its checksum and size."""
        dest = self.path(job_id, name)
        if dest is None:
            raise ValueError(f"invalid artifact name {name!r}")
        dest.parent.mkdir(parents=True, exist_ok=True)
        digest = sha256_file(src)
        size = src.stat().st_size
        os.replace(src, dest)
        media = _MEDIA.get(dest.suffix, "application/octet-stream")
        return ArtifactInfo(name=name, size=size, sha256=digest, media_type=media)

    def staging(self, job_id: str) -> Path:
        """A scratch directory on the same filesystem, for files about to be put."""
        d = self.job_dir(job_id) / ".staging"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def remove(self, job_id: str) -> None:
        """Delete every file of a job."""
        shutil.rmtree(self.job_dir(job_id), ignore_errors=True)
