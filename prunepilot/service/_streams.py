"""Open event streams per token: a bound, so one token cannot hold the server's threads.

Each ``GET /jobs/{id}/events`` stream polls the database from the thread pool for as long
as its job runs; without a bound, a token opening thousands of streams would starve every
other request. A slot is taken before the response starts (over the limit: 429) and given
back when the stream ends, is cancelled (client gone), or is dropped without ever having
started: `Slot.release` is idempotent and also runs when the stream's generator is
garbage-collected.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import AsyncIterator

from .errors import TooManyError

__all__ = ["Slot", "StreamSlots"]


class Slot:
    """One open stream of one owner; `release` gives it back (once)."""

    def __init__(self, slots: StreamSlots, owner: str) -> None:
        self._slots, self._owner = slots, owner
        self._released = False

    def release(self) -> None:
        """Give the slot back; later calls do nothing."""
        if not self._released:
            self._released = True
            self._slots._give_back(self._owner)

    def guard(self, stream: AsyncIterator[str]) -> AsyncIterator[str]:
        """``stream``, releasing this slot when it ends, fails, is closed or collected."""

        async def guarded() -> AsyncIterator[str]:
            try:
                async for chunk in stream:
                    yield chunk
            finally:
                self.release()

        gen = guarded()
        weakref.finalize(gen, self.release)
        return gen


class StreamSlots:
    """Counts open event streams per owner in this process."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._open: dict[str, int] = {}

    def open(self, owner: str) -> int:
        """Streams ``owner`` has open now."""
        with self._lock:
            return self._open.get(owner, 0)

    def acquire(self, owner: str, limit: int) -> Slot:
        """A slot for one more stream of ``owner``.

        Raises:
            TooManyError: the owner already has ``limit`` streams open (429).
        """
        with self._lock:
            n = self._open.get(owner, 0)
            if n >= limit:
                raise TooManyError(
                    f"this token has {n} event streams open (limit {limit}, "
                    "PRUNEPILOT_MAX_EVENT_STREAMS_PER_TOKEN); close one, or poll GET /jobs/{id}"
                )
            self._open[owner] = n + 1
        return Slot(self, owner)

    def _give_back(self, owner: str) -> None:
        with self._lock:
            left = self._open.get(owner, 0) - 1
            if left > 0:
                self._open[owner] = left
            else:
                self._open.pop(owner, None)
