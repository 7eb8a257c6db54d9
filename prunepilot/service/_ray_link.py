"""The scheduler's connection to Ray: connect with backoff, and say why it fails.

``ray.init`` on an address where no Ray answers retries for many minutes, so a cluster
address is first probed with a plain TCP connect (a few seconds at most): a refused or
unreachable address fails at once with the socket's reason. A failed attempt is retried
after 1, 2, 4, ... s (at most `_MAX_BACKOFF_S`), logged once per distinct reason; the
state (`RayLink.check`) is what ``/readyz`` shows and `RayLink.waiting` what queued jobs
carry. The summary of a connected cluster (nodes, CPUs, GPUs) is refreshed by the
scheduler's thread, so a probe never waits on Ray.
"""

from __future__ import annotations

import logging
import socket
import time
from urllib.parse import urlsplit

from ._redact import clean
from ._settings import Settings

__all__ = ["RayLink"]

log = logging.getLogger("prunepilot.service")

_PROBE_TIMEOUT_S = 5.0
_FIRST_BACKOFF_S = 1.0
_MAX_BACKOFF_S = 60.0
_REFRESH_S = 5.0
_AUTH_HINT = (
    "; a cluster with token authentication refuses a driver without the right token "
    "(check PRUNEPILOT_RAY_AUTH_MODE=token and PRUNEPILOT_RAY_AUTH_TOKEN_FILE)"
)


class RayLink:
    """Whether and how this process reaches Ray.

    Args:
        settings: the operator's settings (``ray_address``, ``ray_auth_*``, local Ray).
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.connected = False
        self.error: str | None = None
        self.summary = "ok"
        self._failures = 0
        self._next_try = 0.0
        self._next_refresh = 0.0

    @property
    def where(self) -> str:
        """The cluster's address, or that Ray is local."""
        return self.settings.ray_address or "a local Ray"

    @property
    def waiting(self) -> str | None:
        """What a queued job waits for while Ray cannot be reached (``None``: connected)."""
        if self.error is None:
            return None
        return f"waiting: cannot connect to Ray at {self.where}: {self.error}"

    def check(self) -> tuple[bool, str]:
        """``(ready, text)`` for ``/readyz``: ``ok (N nodes, ...)``, ``not connected yet``
        or ``error: ...`` (not ready). The probe needs no token, so it does not name the
        cluster's address (a job's owner sees it in `waiting`; the server log has it)."""
        if self.connected:
            return True, self.summary
        if self.error is not None:
            return False, f"error: cannot connect to Ray: {self.error}"
        return True, "not connected yet"

    def connect(self) -> bool:
        """Connect unless connected or backing off; whether Ray can be used now."""
        if self.connected:
            self.refresh()
            return True
        if time.monotonic() < self._next_try:
            return False
        from prunepilot.worker import ensure_ray

        s = self.settings
        try:
            if s.ray_address is not None:
                _probe(s.ray_address)
            ensure_ray(
                s.ray_address,
                num_cpus=s.ray_num_cpus,
                worker_niceness=s.worker_niceness,
                auth_mode=s.ray_auth_mode,
                auth_token_file=s.ray_auth_token_file,
            )
        except Exception as e:  # any failure to connect: shown, retried with backoff
            self._failed(_reason(e, probed=s.ray_address is not None))
            return False
        self.refresh()  # the counts first: /readyz reads them once connected is set
        self.connected, self.error = True, None
        log.info("connected to Ray at %s", self.where)
        return True

    def refresh(self) -> None:
        """Re-count the cluster's live nodes, CPUs and GPUs (at most every few seconds)."""
        now = time.monotonic()
        if now < self._next_refresh:
            return
        self._next_refresh = now + _REFRESH_S
        import ray

        from prunepilot.worker import cluster_devices

        try:
            nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
            cpus, gpus = cluster_devices()
        except Exception:  # a transient GCS error: keep the last summary
            log.debug("counting the Ray cluster's resources failed", exc_info=True)
            return
        self.summary = f"ok ({_count(nodes, 'node')}, {_count(cpus, 'CPU')}, {_count(gpus, 'GPU')})"

    def _failed(self, reason: str) -> None:
        self._failures += 1
        delay = min(_MAX_BACKOFF_S, _FIRST_BACKOFF_S * 2 ** (self._failures - 1))
        self._next_try = time.monotonic() + delay
        if reason != self.error:
            log.warning(
                "cannot connect to Ray at %s: %s (retrying, at most every %g s)",
                self.where,
                reason,
                _MAX_BACKOFF_S,
            )
        self.error = reason


def _probe(address: str) -> None:
    """Fail fast when nothing accepts TCP connections at a ``host:port`` address.

    ``auto`` and addresses without a port are left to Ray.
    """
    parts = urlsplit(address if "://" in address else f"//{address}")
    try:
        host, port = parts.hostname, parts.port
    except ValueError:  # a port that is not a number: Ray says what is wrong
        return
    if not host or port is None:
        return
    try:
        socket.create_connection((host, port), timeout=_PROBE_TIMEOUT_S).close()
    except OSError as e:
        raise ConnectionError(e.strerror or str(e) or type(e).__name__) from None


def _reason(e: Exception, *, probed: bool) -> str:
    """One plain line: the exception's message (no traceback, no colours), with a hint on
    token authentication when a cluster answered but refused the driver."""
    text = clean(str(e)).splitlines()
    reason = text[0] if text else type(e).__name__
    if probed and isinstance(e, ConnectionError) and "Failed to connect to Ray cluster" in reason:
        reason += _AUTH_HINT
    return reason


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"
