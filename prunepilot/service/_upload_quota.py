"""Per-token upload quotas: this process's bytes in flight, and the refusals' messages.

The authority is the database: an upload is recorded only if the token's uploads, counted
in the inserting transaction, still fit (`Database.add_upload_within`). Bytes in flight
bound what parallel uploads of one token write to disk before that check: each chunk is
taken from what is left of the quota, so N uploads at once stop at the quota together
rather than at N times it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["InFlight", "Reservation", "over_bytes", "over_count"]

_HOW_TO_FREE = "delete unused ones with DELETE /uploads/{id} (GET /uploads lists them)"


class InFlight:
    """Bytes of uploads in progress in this process, per owner."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._bytes: dict[str, int] = {}

    def held(self, owner: str) -> int:
        """Bytes the owner's uploads in progress have written so far."""
        with self._lock:
            return self._bytes.get(owner, 0)

    def take(self, owner: str, n: int, available: int) -> bool:
        """Count ``n`` more bytes for ``owner`` unless its total would pass ``available``."""
        with self._lock:
            now = self._bytes.get(owner, 0)
            if now + n > available:
                return False
            self._bytes[owner] = now + n
            return True

    def release(self, owner: str, n: int) -> None:
        """Forget ``n`` bytes of ``owner`` (its upload ended: recorded or refused)."""
        with self._lock:
            left = self._bytes.get(owner, 0) - n
            if left > 0:
                self._bytes[owner] = left
            else:
                self._bytes.pop(owner, None)

    @contextmanager
    def reserve(self, owner: str, available: int) -> Iterator[Reservation]:
        """A `Reservation` for one upload of ``owner``; what it took is released on exit."""
        res = Reservation(self, owner, available)
        try:
            yield res
        finally:
            self.release(owner, res.taken)


class Reservation:
    """Takes one upload's chunks from what is left of its owner's quota.

    Args:
        flight: the process's bytes in flight.
        owner: the uploading owner.
        available: the owner's quota minus the bytes of its recorded uploads.

    Attributes:
        taken: the bytes this upload took so far.
    """

    def __init__(self, flight: InFlight, owner: str, available: int) -> None:
        self.flight, self.owner, self.available = flight, owner, available
        self.taken = 0

    def __call__(self, n: int) -> bool:
        """Take ``n`` more bytes; ``False`` (nothing taken) when the owner's uploads in
        progress would together pass ``available``."""
        if not self.flight.take(self.owner, n, self.available):
            return False
        self.taken += n
        return True


def over_bytes(
    quota: int, used: int, count: int, size: int, *, partial: bool = False, in_flight: int = 0
) -> str:
    """Why an upload of ``size`` bytes (more when ``partial``) is refused (413)."""
    busy = f", and uploads in progress {in_flight:,} more" if in_flight else ""
    more = " or more" if partial else ""
    return (
        f"this upload ({size:,} bytes{more}) would take this token over its upload quota "
        f"of {quota:,} bytes: its {count} uploads hold {used:,} bytes{busy}; free space: "
        f"{_HOW_TO_FREE}"
    )


def over_count(quota: int, count: int) -> str:
    """Why another upload is refused for the count quota (429)."""
    return f"this token has {count} uploads, its quota is {quota}; {_HOW_TO_FREE}"
