"""`Client` and `Job`: the prunepilot service's HTTP API as Python objects.

The client speaks the API in `prunepilot.schemas` and returns the same pydantic
models the server sends. Requests that are safe to repeat (reads, cancel, delete, and job
submission, which always carries an idempotency key) are retried with exponential backoff
on connection errors and 5xx answers; 4xx answers raise at once as the `ApiError`
subclass for the status, carrying the server's message.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, TypeAdapter, ValidationError

from prunepilot.schemas import (
    ArtifactInfo,
    JobInfo,
    JobPage,
    JobSpec,
    JobStatus,
    TrialsPage,
    UploadInfo,
    UploadPage,
)

from ._progress import JobProgress
from ._spec_file import local_files, read_spec, validate, with_uploads
from .errors import (
    ApiError,
    ChecksumMismatch,
    ClientError,
    JobTimeout,
    ServerUnavailable,
    error_for_status,
)

__all__ = ["DEFAULT_URL", "Client", "Event", "Job"]

log = logging.getLogger("prunepilot.client")

DEFAULT_URL = "http://127.0.0.1:8000"
_CHUNK = 1 << 20
_UNAVAILABLE = (502, 503, 504)
_ARTIFACTS = TypeAdapter(list[ArtifactInfo])

RequestArgs = Callable[[], dict[str, Any]]
M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")


class _Page(Protocol[T]):
    """A page of a listing: its items and the cursor of the next page."""

    @property
    def items(self) -> list[T]: ...

    @property
    def next_cursor(self) -> str | None: ...


def _follow(
    fetch: Callable[[int, str | None], _Page[T]], limit: int | None, page_size: int
) -> Iterator[T]:
    """Items of every page ``fetch(size, cursor)`` returns, lazily, at most ``limit``."""
    seen = 0
    cursor: str | None = None
    while True:
        size = page_size if limit is None else min(page_size, limit - seen)
        if size <= 0:
            return
        page = fetch(size, cursor)
        for item in page.items:
            yield item
            seen += 1
            if limit is not None and seen >= limit:
                return
        if not page.next_cursor or not page.items:
            return
        cursor = page.next_cursor


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("prunepilot")
    except Exception:  # metadata missing in a source checkout: any version string will do
        return "0"


def local_token(url: str) -> str | None:
    """The token a local ``prunepilot serve`` generated, for a loopback ``url`` only.

    A server started without configured tokens writes one to ``DATA_DIR/token``
    (``$PRUNEPILOT_DATA_DIR``, default ``~/.prunepilot``); reading it lets a local user
    skip ``--token``. It is never sent to other hosts.
    """
    host = httpx.URL(url).host
    if host not in ("127.0.0.1", "localhost", "::1"):
        return None
    data_dir = os.environ.get("PRUNEPILOT_DATA_DIR") or str(Path.home() / ".prunepilot")
    path = Path(data_dir).expanduser() / "token"
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def _detail(resp: httpx.Response) -> str:
    """The server's explanation in an error response (``{"detail": ...}`` or raw text)."""
    try:
        body = resp.json()
    except (ValueError, UnicodeDecodeError):
        text = resp.text.strip()
        return text[:1000] if text else resp.reason_phrase
    if isinstance(body, dict) and "detail" in body:
        detail = body["detail"]
        if isinstance(detail, str):
            return detail
        if isinstance(detail, list):  # FastAPI's request validation errors
            parts = []
            for item in detail:
                if isinstance(item, dict):
                    loc = [str(p) for p in item.get("loc", ()) if p != "body"]
                    parts.append(f"{'.'.join(loc) or 'body'}: {item.get('msg', item)}")
                else:
                    parts.append(str(item))
            return "; ".join(parts)
        return json.dumps(detail)
    return json.dumps(body)[:1000]


@dataclass(frozen=True)
class Event:
    """One server-sent event from ``GET /jobs/{id}/events``.

    Attributes:
        event: the event type (``message`` when the server names none).
        data: the payload, parsed as JSON when it is JSON, else the raw text.
        id: the event id, if the server sent one.
    """

    event: str
    data: Any
    id: str | None = None


class Client:
    """A connection to a prunepilot service.

    Args:
        url: the service's base URL (default: ``$PRUNEPILOT_URL`` or ``DEFAULT_URL``).
        token: bearer token (default: ``$PRUNEPILOT_TOKEN``, else for a loopback URL the
            token a local server generated, see `local_token`; else no header).
        timeout: seconds for connecting and for each read/write of a request.
        retries: extra attempts for a retryable failure (connection error or 5xx).
        backoff: first retry delay in seconds; doubles each retry (with jitter).
        backoff_max: the longest delay between two attempts.
        transport: an httpx transport to use instead of the network (tests, ASGI apps).

    Use it as a context manager, or call `close`, to release its connections.
    """

    def __init__(
        self,
        url: str | None = None,
        token: str | None = None,
        *,
        timeout: float = 30.0,
        retries: int = 5,
        backoff: float = 0.5,
        backoff_max: float = 8.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if retries < 0:
            raise ValueError(f"retries must be >= 0; got {retries}")
        if backoff < 0 or backoff_max < 0:
            raise ValueError("backoff and backoff_max must be >= 0")
        self.url = (url or os.environ.get("PRUNEPILOT_URL") or DEFAULT_URL).rstrip("/")
        if token is None:
            token = os.environ.get("PRUNEPILOT_TOKEN") or local_token(self.url)
        self.retries = retries
        self.backoff = backoff
        self.backoff_max = backoff_max
        headers = {"User-Agent": f"prunepilot-client/{_version()}"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(timeout),
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    # -- transport -----------------------------------------------------------------------

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        """Seconds to sleep before retry number ``attempt`` (0-based)."""
        delay = min(self.backoff * 2**attempt, self.backoff_max)
        delay *= 0.5 + random.random() / 2  # jitter so clients do not retry in lockstep
        if retry_after is not None:
            with contextlib.suppress(ValueError):
                delay = max(delay, min(float(retry_after), self.backoff_max))
        return delay

    def _send(
        self,
        method: str,
        path: str,
        *,
        idempotent: bool = True,
        retries: int | None = None,
        stream: bool = False,
        args: RequestArgs | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """Send a request with retries; the response is successful or an exception raised.

        Connection failures before anything was sent are always retried; other transport
        errors and 5xx answers only when ``idempotent``; ``retries`` overrides the client's
        number of retries for this request. ``args`` builds per-attempt request
        arguments (e.g. a rewound file); ``kwargs`` are passed to every attempt as they are.

        Raises:
            ApiError: a 4xx answer, or a 5xx one after the retries (`ServerError`).
            ServerUnavailable: no answer, or 502/503/504, after the retries.
        """
        budget = (self.retries if retries is None else retries) + 1
        attempts = budget if idempotent else 1
        problem = ""
        retry_after: str | None = None
        attempt = 0
        while True:
            if attempt:
                delay = self._delay(attempt - 1, retry_after)
                log.info(
                    "retrying %s %s in %.2f s (%d/%d): %s",
                    method,
                    path,
                    delay,
                    attempt,
                    budget - 1,
                    problem,
                )
                time.sleep(delay)
            attempt += 1
            retry_after = None
            extra = args() if args is not None else {}
            try:
                request = self._http.build_request(method, path, **kwargs, **extra)
                resp = self._http.send(request, stream=stream)
            except (httpx.ConnectError, httpx.ConnectTimeout) as e:
                # Nothing reached the server: repeating is safe for any method.
                problem = f"cannot connect to {self.url}: {e}"
                attempts = budget
            except httpx.TransportError as e:
                problem = f"{type(e).__name__} talking to {self.url}: {e}"
            else:
                if resp.status_code < 400:
                    return resp
                if stream:
                    resp.read()
                detail = _detail(resp)
                resp.close()
                url = str(request.url)
                if resp.status_code < 500:
                    raise error_for_status(resp.status_code, detail, method=method, url=url)
                problem = f"{resp.status_code} {resp.reason_phrase}: {detail}"
                retry_after = resp.headers.get("Retry-After")
                if attempt >= attempts:
                    if resp.status_code in _UNAVAILABLE:
                        raise ServerUnavailable(
                            f"{method} {path}: {problem} (after {attempt} attempts)",
                            attempts=attempt,
                        )
                    raise error_for_status(resp.status_code, detail, method=method, url=url)
                continue
            if attempt >= attempts:
                raise ServerUnavailable(
                    f"{method} {path}: {problem} (after {attempt} attempt"
                    f"{'s' if attempt > 1 else ''})",
                    attempts=attempt,
                )

    def _get_model(self, model: type[M], path: str, **kwargs: Any) -> M:
        resp = self._send("GET", path, **kwargs)
        return _parse(model, resp)

    # -- API -----------------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """``GET /healthz``: the server's liveness answer (raises when it is down)."""
        body = self._send("GET", "/healthz").json()
        return body if isinstance(body, dict) else {"status": body}

    def ready(self) -> bool:
        """``GET /readyz``, tried once: whether the server is ready for jobs now."""
        try:
            self._send("GET", "/readyz", retries=0)
        except (ApiError, ServerUnavailable):
            return False
        return True

    def submit(
        self,
        spec: JobSpec | Mapping[str, Any] | str | Path,
        *,
        idempotency_key: str | None = None,
    ) -> Job:
        """Submit a job and return a handle to it.

        Args:
            spec: a `JobSpec`, a mapping, or a YAML/JSON spec file. ``file:PATH`` values in
                ``model.weights``, ``model.source`` or ``dataset.source`` are uploaded first
                and replaced by their upload ids; when the job is not created (refused or
                failed), those uploads are deleted again.
            idempotency_key: the same key returns the same job. One is generated when not
                given, so the request can be retried safely after a lost answer.

        Raises:
            SpecError: the spec cannot be read or is invalid (nothing was sent).
            ValidationFailed: the server rejected the spec.
        """
        raw, base = read_spec(spec)
        files = local_files(raw, base)
        created: list[str] = []
        try:
            if files:
                validate(with_uploads(raw, {k: "0" * 8 for k in files}))  # fail before uploading
                ids: dict[tuple[str, str], str] = {}
                for field, path in files.items():
                    ids[field] = self.upload(path).id
                    created.append(ids[field])
                raw = with_uploads(raw, ids)
            job_spec = validate(raw)
            key = idempotency_key or uuid.uuid4().hex
            body = job_spec.model_dump(mode="json", exclude_none=True)
            resp = self._send("POST", "/jobs", json=body, headers={"Idempotency-Key": key})
        except Exception:
            self._discard_uploads(created)
            raise
        info = _parse(JobInfo, resp)
        log.info("submitted job %s (%s)", info.id, info.status)
        return Job(self, info)

    def _discard_uploads(self, upload_ids: Sequence[str]) -> None:
        """Delete the uploads of a submit that created no job (best effort, logged).

        Safe after a lost answer too: the server refuses (409) to delete an upload a
        created, unfinished job uses, so such an upload stays.
        """
        for upload_id in upload_ids:
            try:
                self.delete_upload(upload_id, retries=1)
            except ClientError as e:
                log.warning("left upload %s on the server: %s", upload_id, e)
            else:
                log.info("deleted upload %s: the job was not created", upload_id)

    def job(self, job_id: str) -> Job:
        """A handle to an existing job (fetched now; raises `NotFound` if unknown)."""
        return Job(self, self._get_model(JobInfo, f"/jobs/{job_id}"))

    def jobs_page(
        self,
        status: JobStatus | str | None = None,
        *,
        limit: int = 50,
        cursor: str | None = None,
    ) -> JobPage:
        """One page of jobs, newest first; pass ``next_cursor`` back for the next page."""
        params: dict[str, Any] = {"limit": limit}
        if status is not None:
            params["status"] = JobStatus(str(status).upper()).value
        if cursor:
            params["cursor"] = cursor
        return self._get_model(JobPage, "/jobs", params=params)

    def list_jobs(
        self,
        status: JobStatus | str | None = None,
        *,
        limit: int | None = None,
        page_size: int = 50,
    ) -> Iterator[JobInfo]:
        """Every job of this token, newest first, following the pages lazily.

        Args:
            status: only jobs in this status.
            limit: stop after this many jobs (default: all).
            page_size: jobs per request.
        """
        return _follow(
            lambda size, cursor: self.jobs_page(status, limit=size, cursor=cursor),
            limit,
            page_size,
        )

    def upload(self, path: str | Path, *, filename: str | None = None) -> UploadInfo:
        """Upload a file (streamed from disk) and return its record.

        Job specs reference it as ``upload:ID`` (``model.weights`` takes the bare id).

        Raises:
            TooLarge: the file exceeds the server's upload limit.
        """
        path = Path(path)
        if not path.is_file():
            raise ClientError(f"no file at {path}")
        name = filename or path.name
        with path.open("rb") as fh:

            def args() -> dict[str, Any]:
                fh.seek(0)
                return {"files": {"file": (name, fh, "application/octet-stream")}}

            # A repeated upload only leaves an unused copy on the server: safe to retry.
            resp = self._send("POST", "/uploads", args=args)
        info = _parse(UploadInfo, resp)
        log.info("uploaded %s as %s (%d bytes)", path, info.id, info.size)
        return info

    def uploads_page(self, *, limit: int = 50, cursor: str | None = None) -> UploadPage:
        """One page of this token's uploads, newest first; pass ``next_cursor`` back."""
        params: dict[str, Any] = {"limit": limit}
        if cursor:
            params["cursor"] = cursor
        return self._get_model(UploadPage, "/uploads", params=params)

    def list_uploads(
        self, *, limit: int | None = None, page_size: int = 50
    ) -> Iterator[UploadInfo]:
        """Every upload of this token, newest first, following the pages lazily.

        Each carries ``live_jobs`` (unfinished jobs using it) and ``expires_at``.

        Args:
            limit: stop after this many uploads (default: all).
            page_size: uploads per request.
        """
        return _follow(
            lambda size, cursor: self.uploads_page(limit=size, cursor=cursor), limit, page_size
        )

    def delete_upload(self, upload_id: str, *, retries: int | None = None) -> None:
        """Delete one of this token's uploads (file and record).

        Args:
            upload_id: the upload's id.
            retries: override the client's retries for this request.

        Raises:
            Conflict: an unfinished job uses it (cancel the job, or wait, first).
            NotFound: no such upload for this token.
        """
        self._send("DELETE", f"/uploads/{quote(upload_id, safe='')}", retries=retries)

    def _download(
        self, path: str, dest: Path, *, sha256: str | None, size: int | None = None
    ) -> Path:
        """Stream ``path`` into ``dest`` atomically, checking its sha256 and size."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        part = dest.with_name(dest.name + ".part")
        for attempt in range(self.retries + 1):
            resp = self._send("GET", path, stream=True)
            digest = hashlib.sha256()
            written = 0
            try:
                with part.open("wb") as fh:
                    for chunk in resp.iter_bytes(_CHUNK):
                        fh.write(chunk)
                        digest.update(chunk)
                        written += len(chunk)
            except httpx.TransportError as e:
                part.unlink(missing_ok=True)
                if attempt == self.retries:
                    raise ServerUnavailable(
                        f"download of {path} kept failing: {e}", attempts=attempt + 1
                    ) from e
                log.info("download of %s interrupted (%s); retrying", path, e)
                time.sleep(self._delay(attempt, None))
                continue
            finally:
                resp.close()
            got = digest.hexdigest()
            header = resp.headers.get("X-Checksum-Sha256")
            for what, want in (("announced", sha256), ("X-Checksum-Sha256", header)):
                if want and want.lower() != got:
                    part.unlink(missing_ok=True)
                    raise ChecksumMismatch(
                        f"{dest.name}: sha256 {got} does not match the {what} {want.lower()}"
                    )
            if size is not None and written != size:
                part.unlink(missing_ok=True)
                raise ChecksumMismatch(f"{dest.name}: got {written} bytes, expected {size}")
            os.replace(part, dest)
            return dest
        raise AssertionError("unreachable")  # pragma: no cover

    def _stream_lines(self, path: str) -> Iterator[str]:
        resp = self._send("GET", path, stream=True, timeout=httpx.Timeout(None, connect=10.0))
        try:
            yield from resp.iter_lines()
        finally:
            resp.close()


def _parse(model: type[M], resp: httpx.Response) -> M:
    try:
        return model.model_validate_json(resp.content)
    except ValidationError as e:
        raise ClientError(
            f"{resp.request.method} {resp.request.url.path}: unexpected response for "
            f"{model.__name__}: {e}"
        ) from e


class Job:
    """A handle to one job on the service.

    Attributes:
        id: the job's id.
        info: the job as last fetched (`status` and `wait` refresh it).
    """

    def __init__(self, client: Client, info: JobInfo) -> None:
        self.client = client
        self.id = info.id
        self.info = info

    def __repr__(self) -> str:
        return f"Job({self.id!r}, status={self.info.status.value})"

    @property
    def path(self) -> str:
        """The job's URL path on the service."""
        return f"/jobs/{self.id}"

    def status(self) -> JobInfo:
        """Fetch the job now (status, phase, trials, best score, error) and remember it."""
        self.info = self.client._get_model(JobInfo, self.path)
        return self.info

    def wait(
        self,
        timeout: float | None = None,
        *,
        progress: bool = True,
        poll: float = 1.0,
        console: Any = None,
    ) -> JobInfo:
        """Poll until the job is terminal (succeeded, failed or cancelled).

        Args:
            timeout: give up after this many seconds (default: wait for ever).
            progress: show a progress bar (phase, trials done/planned, best score) on
                stderr; without a terminal, one line per change of status or phase.
            poll: seconds between two status requests.
            console: a ``rich.console.Console`` to draw on (default: stderr).

        Returns:
            The final `JobInfo`. A failed job is returned, not raised: check ``status``
            and ``error``.

        Raises:
            JobTimeout: the job was still running after ``timeout`` seconds.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        bar = JobProgress(self.id, console=console) if progress else None
        try:
            info = self.info
            while True:
                info = self.status()
                if bar is not None:
                    bar.update(info)
                if info.status.terminal:
                    return info
                if deadline is not None and time.monotonic() >= deadline:
                    raise JobTimeout(f"job {self.id} still {info.status.value} after {timeout:g} s")
                pause = poll if deadline is None else min(poll, deadline - time.monotonic())
                time.sleep(max(pause, 0.0))
        finally:
            if bar is not None:
                bar.close()

    def trials(self) -> TrialsPage:
        """Every trial of the search so far and the Pareto front's trial numbers."""
        return self.client._get_model(TrialsPage, f"{self.path}/trials")

    def artifacts(self) -> list[ArtifactInfo]:
        """The files the job produced (name, size, sha256, media type)."""
        resp = self.client._send("GET", f"{self.path}/artifacts")
        try:
            return _ARTIFACTS.validate_json(resp.content)
        except ValidationError as e:
            raise ClientError(f"unexpected artifact list from the server: {e}") from e

    def download(self, dest: str | Path, names: Sequence[str] | None = None) -> list[Path]:
        """Download artifacts into directory ``dest``, verifying each file's sha256.

        Args:
            dest: the directory (created if missing); files keep their artifact names.
            names: which artifacts (default: all of them).

        Returns:
            The paths written, in artifact order.

        Raises:
            NotFound: a requested name is not among the job's artifacts.
            ChecksumMismatch: a file arrived corrupted (it is not kept).
        """
        dest = Path(dest)
        available = self.artifacts()
        if names is not None:
            by_name = {a.name: a for a in available}
            missing = [n for n in names if n not in by_name]
            if missing:
                raise ClientError(
                    f"job {self.id} has no artifact {', '.join(map(repr, missing))}; it has "
                    f"{', '.join(sorted(by_name)) or 'none'}"
                )
            available = [by_name[n] for n in names]
        out = []
        for art in available:
            if Path(art.name).name != art.name or art.name in ("", ".", ".."):
                raise ClientError(f"refusing artifact name {art.name!r} (not a plain file name)")
            target = dest / art.name
            self.client._download(
                f"{self.path}/artifacts/{art.name}", target, sha256=art.sha256, size=art.size
            )
            log.info("downloaded %s (%d bytes)", target, art.size)
            out.append(target)
        return out

    def logs(self) -> str:
        """The job's log text so far."""
        return self.client._send("GET", f"{self.path}/logs").text

    def events(self) -> Iterator[Event]:
        """Server-sent progress events until the server closes the stream."""
        fields: dict[str, list[str]] = {}
        for line in self.client._stream_lines(f"{self.path}/events"):
            if not line:
                if "data" in fields:
                    yield _event(fields)
                fields = {}
                continue
            if line.startswith(":"):
                continue
            name, _, value = line.partition(":")
            fields.setdefault(name, []).append(value.removeprefix(" "))
        if "data" in fields:
            yield _event(fields)

    def cancel(self) -> JobInfo:
        """Ask the job to stop; running trials stop within seconds."""
        self.info = _parse(JobInfo, self.client._send("POST", f"{self.path}/cancel"))
        return self.info

    def delete(self) -> None:
        """Delete a terminal job and its files (`Conflict` while it still runs)."""
        self.client._send("DELETE", self.path)


def _event(fields: Mapping[str, list[str]]) -> Event:
    text = "\n".join(fields.get("data", []))
    try:
        data: Any = json.loads(text)
    except ValueError:
        data = text
    ids = fields.get("id")
    return Event(
        event=(fields.get("event") or ["message"])[-1], data=data, id=ids[-1] if ids else None
    )
