"""The job store: reads and conditional writes of the service's rows (`_rows`) in one database.

One database holds everything durable, next to the Optuna studies of the jobs (Optuna's own
tables; ours are prefixed ``pp_``); its schema is brought up to date by the migrations
(`prunepilot.service._migrations`) at start-up. SQLite (the default) runs in WAL mode so the
API process reads while job runners in Ray workers write; transactions that write begin
``IMMEDIATE`` so a read-then-write never fails on a lock upgrade. PostgreSQL works by URL.

State changes are conditional updates (``WHERE status = ...``, ``AND attempt = ...``), so the
API, the scheduler and a runner can race without a lost update: a stale runner (one whose
job was re-queued after a restart) simply stops matching.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from sqlalchemy import (
    and_,
    create_engine,
    delete,
    event,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from prunepilot.schemas import ArtifactInfo, JobInfo, JobSpec, JobStatus, UploadInfo

from ._migrations import upgrade
from ._redact import clean
from ._rows import ArtifactRow, EventRow, IdempotencyRow, JobRow, UploadRow, utcnow
from .errors import UploadInUse, UploadMissing

__all__ = [
    "ACTIVE",
    "Database",
    "IntegrityError",
    "job_info",
    "stored_spec",
    "upload_info",
]

log = logging.getLogger("prunepilot.service")

ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.CANCELLING)
_LIKE_BATCH = 100  # upload ids per "spec LIKE" query (SQLite's expression depth is 1000)


def _sqlite_pragmas(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # transactions are begun by the listener below
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA busy_timeout=30000")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("pp_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")


class Database:
    """The job store behind the API, the scheduler and the job runners.

    Args:
        url: SQLAlchemy database URL.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.sqlite = url.startswith("sqlite")
        kwargs: dict[str, Any] = {}
        if self.sqlite:
            kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
            path = url.split("///", 1)[-1] if "///" in url else ""
            if path and path != ":memory:" and "mode=memory" not in url:
                Path(path.split("?", 1)[0]).parent.mkdir(parents=True, exist_ok=True)
                # a local file: no stale connections to ping; room for the API's threads
                kwargs.update(pool_size=20, max_overflow=40)
        else:
            kwargs["pool_pre_ping"] = True
        self.engine = create_engine(url, **kwargs)
        if self.sqlite:
            _sqlite_pragmas(self.engine)
        self._read = sessionmaker(self.engine, expire_on_commit=False)
        self._write = sessionmaker(
            self.engine.execution_options(pp_immediate=True), expire_on_commit=False
        )

    def migrate(self) -> None:
        """Bring the schema to the newest revision (creating it in an empty database).

        A database made before migrations existed is recognised and stamped at the
        baseline first (see `prunepilot.service._migrations`).
        """
        upgrade(self.engine)

    def dispose(self) -> None:
        """Close pooled connections."""
        self.engine.dispose()

    @contextmanager
    def read(self) -> Iterator[Session]:
        """A read-only session."""
        with self._read() as s:
            yield s

    @contextmanager
    def write(self) -> Iterator[Session]:
        """A session that commits on success (SQLite: ``BEGIN IMMEDIATE``)."""
        with self._write() as s, s.begin():
            yield s

    def ping(self) -> None:
        """Raise if the database cannot be reached."""
        with self.read() as s:
            s.execute(text("SELECT 1"))

    # ------------------------------------------------------------------ jobs

    def add_job(
        self,
        job_id: str,
        owner: str,
        spec: JobSpec,
        *,
        idempotency: tuple[str, str] | None = None,
    ) -> JobRow:
        """Insert a queued job (and its idempotency key, atomically), if the uploads its
        spec names still exist: checked under the owner's upload lock, so a concurrent
        delete or expiry cannot take them between the check and the insert.

        Raises:
            IntegrityError: the idempotency key was taken concurrently.
            UploadMissing: an upload the spec names is gone.
        """
        now = utcnow()
        row = JobRow(
            id=job_id,
            owner=owner,
            name=spec.name,
            status=JobStatus.QUEUED.value,
            phase="queued",
            trials_done=0,
            trials_planned=spec.search.trials,
            created_at=now,
            spec=spec.model_dump_json(),
            attempt=0,
        )
        with self.write() as s:
            self._lock_uploads(s, owner)
            named = _spec_uploads(row.spec)
            if named:
                found = set(
                    s.scalars(
                        select(UploadRow.id).where(
                            UploadRow.owner == owner, UploadRow.id.in_(sorted(named))
                        )
                    )
                )
                if named - found:
                    raise UploadMissing(sorted(named - found))
            s.add(row)
            if idempotency is not None:
                key, fingerprint = idempotency
                s.add(
                    IdempotencyRow(
                        owner=owner,
                        key=key,
                        job_id=job_id,
                        fingerprint=fingerprint,
                        created_at=now,
                    )
                )
            s.add(EventRow(job_id=job_id, at=now, kind="status", message="QUEUED", data=None))
        return row

    def idempotent_job(self, owner: str, key: str) -> tuple[str, str] | None:
        """``(job id, fingerprint)`` an owner's idempotency key maps to, if any."""
        with self.read() as s:
            row = s.get(IdempotencyRow, (owner, key))
            return (row.job_id, row.fingerprint) if row else None

    def get_job(self, job_id: str, owner: str | None = None) -> JobRow | None:
        """The job (``None`` when missing or owned by someone else)."""
        # Core, not a session: this is the API's hottest query (clients poll it)
        with self.engine.connect() as conn:
            found = conn.execute(select(JobRow.__table__).where(JobRow.id == job_id)).first()
        if found is None or (owner is not None and found.owner != owner):
            return None
        return JobRow(**found._asdict())

    def list_jobs(
        self, owner: str, status: JobStatus | None, limit: int, before: int | None
    ) -> list[JobRow]:
        """An owner's jobs, newest first, older than sequence number ``before``."""
        q = select(JobRow).where(JobRow.owner == owner)
        if status is not None:
            q = q.where(JobRow.status == status.value)
        if before is not None:
            q = q.where(JobRow.seq < before)
        q = q.order_by(JobRow.seq.desc()).limit(limit)
        with self.read() as s:
            return list(s.scalars(q))

    def count_active(self, owner: str) -> int:
        """The owner's jobs that are not finished."""
        with self.read() as s:
            n = s.scalar(
                select(func.count())
                .select_from(JobRow)
                .where(JobRow.owner == owner, JobRow.status.in_([a.value for a in ACTIVE]))
            )
            return int(n or 0)

    def count_by_status(self) -> dict[str, int]:
        """Jobs per status (for metrics)."""
        with self.read() as s:
            rows = s.execute(select(JobRow.status, func.count()).group_by(JobRow.status))
            return {str(st): int(n) for st, n in rows}

    def trials_total(self) -> int:
        """Trials evaluated over all jobs (for metrics)."""
        with self.read() as s:
            return int(s.scalar(select(func.coalesce(func.sum(JobRow.trials_done), 0))) or 0)

    def queued(self, limit: int) -> list[str]:
        """Ids of the oldest queued jobs."""
        with self.read() as s:
            q = (
                select(JobRow.id)
                .where(JobRow.status == JobStatus.QUEUED.value)
                .order_by(JobRow.seq)
                .limit(limit)
            )
            return list(s.scalars(q))

    def jobs_in(self, statuses: Sequence[JobStatus]) -> list[JobRow]:
        """Every job in one of ``statuses``."""
        with self.read() as s:
            q = select(JobRow).where(JobRow.status.in_([st.value for st in statuses]))
            return list(s.scalars(q))

    def claim(self, job_id: str) -> int | None:
        """Move a queued job to RUNNING; its new attempt number, or ``None`` if not queued."""
        now = utcnow()
        with self.write() as s:
            res = s.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.status == JobStatus.QUEUED.value)
                .values(
                    status=JobStatus.RUNNING.value,
                    attempt=JobRow.attempt + 1,
                    phase="starting",
                    started_at=func.coalesce(JobRow.started_at, now),
                )
            )
            if res.rowcount != 1:  # type: ignore[attr-defined]
                return None
            attempt = s.scalar(select(JobRow.attempt).where(JobRow.id == job_id))
            s.add(EventRow(job_id=job_id, at=now, kind="status", message="RUNNING", data=None))
        return int(attempt or 0)

    def progress(
        self,
        job_id: str,
        attempt: int,
        *,
        phase: str | None = None,
        trials_done: int | None = None,
        trials_planned: int | None = None,
        best_score: float | None = None,
        event_data: dict[str, Any] | None = None,
    ) -> bool:
        """Record a runner's progress; ``False`` when the runner is stale or cancelled."""
        values: dict[str, Any] = {}
        if phase is not None:
            values["phase"] = phase
        if trials_done is not None:
            values["trials_done"] = trials_done
        if trials_planned is not None:
            values["trials_planned"] = trials_planned
        if best_score is not None:
            values["best_score"] = best_score
        with self.write() as s:
            res = s.execute(
                update(JobRow)
                .where(
                    JobRow.id == job_id,
                    JobRow.attempt == attempt,
                    JobRow.status == JobStatus.RUNNING.value,
                )
                .values(**values)
            )
            ok = bool(res.rowcount == 1)  # type: ignore[attr-defined]
            if ok and event_data is not None:
                if event_data.get("message"):
                    event_data = {**event_data, "message": clean(str(event_data["message"]))}
                s.add(
                    EventRow(
                        job_id=job_id,
                        at=utcnow(),
                        kind="progress",
                        message=str(event_data.get("message", "")),
                        data=json.dumps(event_data),
                    )
                )
        return ok

    def runner_state(self, job_id: str) -> tuple[str, int] | None:
        """``(status, attempt)`` of a job, for a runner's cancellation poll."""
        with self.read() as s:
            row = s.execute(
                select(JobRow.status, JobRow.attempt).where(JobRow.id == job_id)
            ).first()
            return (str(row[0]), int(row[1])) if row else None

    def finish(
        self,
        job_id: str,
        status: JobStatus,
        *,
        attempt: int | None = None,
        from_status: Sequence[JobStatus] = (JobStatus.RUNNING, JobStatus.CANCELLING),
        error: str | None = None,
        result: dict[str, Any] | None = None,
        phase: str | None = None,
    ) -> bool:
        """Move a job to a terminal status if it is in ``from_status`` (and ``attempt``)."""
        now = utcnow()
        values: dict[str, Any] = {"status": status.value, "finished_at": now}
        if error is not None:
            error = values["error"] = clean(error)
        if result is not None:
            values["result"] = json.dumps(result)
        values["phase"] = phase or status.value.lower()
        q = update(JobRow).where(
            JobRow.id == job_id, JobRow.status.in_([f.value for f in from_status])
        )
        if attempt is not None:
            q = q.where(JobRow.attempt == attempt)
        with self.write() as s:
            res = s.execute(q.values(**values))
            ok = bool(res.rowcount == 1)  # type: ignore[attr-defined]
            if ok:
                s.add(
                    EventRow(
                        job_id=job_id,
                        at=now,
                        kind="status",
                        message=status.value,
                        data=json.dumps({"error": error}) if error else None,
                    )
                )
        return ok

    def request_cancel(self, job_id: str) -> JobStatus | None:
        """Cancel: a queued job becomes CANCELLED, a running one CANCELLING.

        Returns:
            The new status, or ``None`` when the job was already finishing or finished.
        """
        if self.finish(job_id, JobStatus.CANCELLED, from_status=(JobStatus.QUEUED,)):
            return JobStatus.CANCELLED
        now = utcnow()
        with self.write() as s:
            res = s.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.status == JobStatus.RUNNING.value)
                .values(status=JobStatus.CANCELLING.value, cancel_requested_at=now)
            )
            if res.rowcount == 1:  # type: ignore[attr-defined]
                s.add(
                    EventRow(job_id=job_id, at=now, kind="status", message="CANCELLING", data=None)
                )
                return JobStatus.CANCELLING
        row = self.get_job(job_id)
        if row is not None and row.status == JobStatus.CANCELLING.value:
            return JobStatus.CANCELLING
        return None

    def requeue(self, job_id: str, note: str) -> bool:
        """Put a RUNNING job back in the queue (after a restart); it resumes its study."""
        with self.write() as s:
            res = s.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.status == JobStatus.RUNNING.value)
                .values(status=JobStatus.QUEUED.value, phase="queued (resuming)")
            )
            ok = bool(res.rowcount == 1)  # type: ignore[attr-defined]
            if ok:
                now = utcnow()
                s.add(EventRow(job_id=job_id, at=now, kind="status", message="QUEUED", data=None))
                s.add(EventRow(job_id=job_id, at=now, kind="log", level="WARNING", message=note))
        return ok

    def note_queued(self, job_id: str, phase: str, level: str, message: str) -> bool:
        """Set a QUEUED job's phase and log why (what it waits for); ``False`` if it is not
        queued any more."""
        message = clean(message)
        with self.write() as s:
            res = s.execute(
                update(JobRow)
                .where(JobRow.id == job_id, JobRow.status == JobStatus.QUEUED.value)
                .values(phase=phase)
            )
            ok = bool(res.rowcount == 1)  # type: ignore[attr-defined]
            if ok:
                s.add(
                    EventRow(job_id=job_id, at=utcnow(), kind="log", level=level, message=message)
                )
        return ok

    def delete_job(self, job_id: str) -> None:
        """Remove a job's rows (its events, artifacts and idempotency keys too)."""
        with self.write() as s:
            s.execute(delete(EventRow).where(EventRow.job_id == job_id))
            s.execute(delete(ArtifactRow).where(ArtifactRow.job_id == job_id))
            s.execute(delete(IdempotencyRow).where(IdempotencyRow.job_id == job_id))
            s.execute(delete(JobRow).where(JobRow.id == job_id))

    # ------------------------------------------------------------------ events

    def log(self, job_id: str, level: str, message: str) -> None:
        """Append a log line to a job (cleaned: users read it; see `_redact.clean`)."""
        message = clean(message)
        with self.write() as s:
            s.add(EventRow(job_id=job_id, at=utcnow(), kind="log", level=level, message=message))

    def events(
        self, job_id: str, *, after: int = 0, kinds: Sequence[str] = (), limit: int = 1000
    ) -> list[EventRow]:
        """A job's events with id above ``after``, oldest first."""
        q = select(EventRow).where(EventRow.job_id == job_id, EventRow.id > after)
        if kinds:
            q = q.where(EventRow.kind.in_(list(kinds)))
        with self.read() as s:
            return list(s.scalars(q.order_by(EventRow.id).limit(limit)))

    # ------------------------------------------------------------------ uploads

    def get_upload(self, upload_id: str, owner: str | None = None) -> UploadRow | None:
        """The upload (``None`` when missing or owned by someone else)."""
        with self.read() as s:
            row = s.get(UploadRow, upload_id)
            if row is None or (owner is not None and row.owner != owner):
                return None
            return row

    def list_uploads(
        self, owner: str, limit: int, before: tuple[datetime, str] | None
    ) -> list[UploadRow]:
        """An owner's uploads, newest first, after ``before`` (created_at, id) in that order."""
        q = select(UploadRow).where(UploadRow.owner == owner)
        if before is not None:
            at, last = before
            q = q.where(
                or_(
                    UploadRow.created_at < at,
                    and_(UploadRow.created_at == at, UploadRow.id < last),
                )
            )
        q = q.order_by(UploadRow.created_at.desc(), UploadRow.id.desc()).limit(limit)
        with self.read() as s:
            return list(s.scalars(q))

    def upload_usage(self, owner: str) -> tuple[int, int]:
        """How many uploads an owner keeps, and their bytes."""
        with self.read() as s:
            return _usage(s, owner)

    def add_upload_within(
        self, row: UploadRow, max_count: int, max_bytes: int
    ) -> tuple[int, int] | None:
        """Record a stored upload if its owner's uploads still fit the quotas with it.

        The usage is counted in the inserting transaction (SQLite: ``BEGIN IMMEDIATE``
        serialises writers; PostgreSQL: an advisory lock per owner), so uploads racing
        past the quota cannot all be recorded.

        Returns:
            ``None`` when recorded; else the owner's ``(count, bytes)`` that refused it.
        """
        with self.write() as s:
            self._lock_uploads(s, row.owner)
            count, used = _usage(s, row.owner)
            if count + 1 > max_count or used + row.size > max_bytes:
                return count, used
            s.add(row)
        return None

    def _lock_uploads(self, s: Session, owner: str) -> None:
        """Serialise the transactions that add, remove or rely on an owner's uploads.

        SQLite's ``BEGIN IMMEDIATE`` already serialises every writer; PostgreSQL takes a
        transaction-scoped advisory lock per owner.
        """
        if self.engine.dialect.name == "postgresql":
            s.execute(
                text("SELECT pg_advisory_xact_lock(hashtext(:key))"),
                {"key": f"pp_uploads:{owner}"},
            )

    def upload_jobs(
        self, owner: str, upload_ids: Sequence[str]
    ) -> dict[str, list[tuple[str, JobStatus]]]:
        """The owner's jobs (id, status), oldest first, that name each of ``upload_ids``."""
        with self.read() as s:
            return _jobs_naming(s, owner, upload_ids)

    def delete_upload(self, upload_id: str, owner: str) -> UploadRow | None:
        """Remove an owner's upload record unless an unfinished job uses it.

        Returns:
            The removed row (deleting its file is the caller's job), or ``None`` when the
            owner has no such upload.

        Raises:
            UploadInUse: unfinished jobs of the owner name it.
        """
        with self.write() as s:
            self._lock_uploads(s, owner)
            row = s.get(UploadRow, upload_id)
            if row is None or row.owner != owner:
                return None
            jobs = _jobs_naming(s, owner, [upload_id]).get(upload_id, [])
            live = [job_id for job_id, status in jobs if status in ACTIVE]
            if live:
                raise UploadInUse(live)
            s.delete(row)
        return row

    def expire_uploads(self, created_before: datetime, batch: int = 200) -> list[UploadRow]:
        """Remove the records of uploads made before ``created_before`` that no job names.

        A job of any status keeps its uploads; deleting the job lets them expire. Works
        through the candidates in batches, one short transaction each.

        Returns:
            The removed rows (deleting their files is the caller's job).
        """
        removed: list[UploadRow] = []
        after: tuple[datetime, str] | None = None
        while True:
            q = select(UploadRow).where(UploadRow.created_at < created_before)
            if after is not None:
                at, last = after
                q = q.where(
                    or_(
                        UploadRow.created_at > at,
                        and_(UploadRow.created_at == at, UploadRow.id > last),
                    )
                )
            q = q.order_by(UploadRow.created_at, UploadRow.id).limit(batch)
            with self.write() as s:
                rows = list(s.scalars(q))
                by_owner: dict[str, list[UploadRow]] = {}
                for r in rows:
                    by_owner.setdefault(r.owner, []).append(r)
                for owner, group in by_owner.items():
                    self._lock_uploads(s, owner)
                    used = _jobs_naming(s, owner, [r.id for r in group])
                    for r in group:
                        if r.id not in used:
                            s.delete(r)
                            removed.append(r)
            if len(rows) < batch:
                return removed
            after = (rows[-1].created_at, rows[-1].id)

    # ------------------------------------------------------------------ artifacts

    def set_artifacts(self, job_id: str, items: Sequence[ArtifactInfo]) -> None:
        """Replace a job's artifact list."""
        with self.write() as s:
            s.execute(delete(ArtifactRow).where(ArtifactRow.job_id == job_id))
            for a in items:
                s.add(
                    ArtifactRow(
                        job_id=job_id,
                        name=a.name,
                        size=a.size,
                        sha256=a.sha256,
                        media_type=a.media_type,
                    )
                )

    def artifacts(self, job_id: str) -> list[ArtifactInfo]:
        """A job's artifacts by name."""
        with self.read() as s:
            rows = s.scalars(
                select(ArtifactRow).where(ArtifactRow.job_id == job_id).order_by(ArtifactRow.name)
            )
            return [
                ArtifactInfo(name=r.name, size=r.size, sha256=r.sha256, media_type=r.media_type)
                for r in rows
            ]


def _usage(s: Session, owner: str) -> tuple[int, int]:
    count, used = s.execute(
        select(func.count(), func.coalesce(func.sum(UploadRow.size), 0)).where(
            UploadRow.owner == owner
        )
    ).one()
    return int(count), int(used)


def _spec_uploads(spec_json: str) -> set[str]:
    """The upload ids a stored job spec names (model source and weights, dataset source)."""
    spec = json.loads(spec_json)
    model, dataset = spec.get("model") or {}, spec.get("dataset") or {}
    found = {model.get("weights")}
    for source in (model.get("source"), dataset.get("source")):
        if isinstance(source, str) and source.startswith("upload:"):
            found.add(source.removeprefix("upload:"))
    return {f for f in found if isinstance(f, str)}


def _jobs_naming(
    s: Session, owner: str, upload_ids: Sequence[str]
) -> dict[str, list[tuple[str, JobStatus]]]:
    """Upload id -> the owner's jobs (id, status) whose spec names it, oldest first.

    Jobs can only name their owner's uploads (submission checks), so only the owner's
    jobs are read; ``LIKE`` picks the candidates, the parsed spec decides.
    """
    found: dict[str, list[tuple[str, JobStatus]]] = {}
    ids = list(dict.fromkeys(upload_ids))
    for start in range(0, len(ids), _LIKE_BATCH):
        chunk = ids[start : start + _LIKE_BATCH]
        wanted = set(chunk)
        q = (
            select(JobRow.id, JobRow.status, JobRow.spec)
            .where(
                JobRow.owner == owner,
                or_(*(JobRow.spec.contains(i, autoescape=True) for i in chunk)),
            )
            .order_by(JobRow.seq)
        )
        for job_id, status, spec in s.execute(q):
            for upload_id in _spec_uploads(spec) & wanted:
                found.setdefault(upload_id, []).append((job_id, JobStatus(status)))
    return found


def stored_spec(row: JobRow) -> JobSpec | str:
    """The row's spec, or why it no longer parses (a row written under older rules)."""
    try:
        return JobSpec.model_validate_json(row.spec)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "spec"
        return f"{where}: {first['msg']}"


def job_info(row: JobRow) -> JobInfo:
    """The API's view of a job row.

    A row whose stored spec no longer parses shows as FAILED with ``spec`` ``None`` and an
    error saying so, so that one bad row never breaks listing and its owner can delete it.
    """
    spec = stored_spec(row)
    status, phase, error = JobStatus(row.status), row.phase, row.error
    if isinstance(spec, str):
        status, phase = JobStatus.FAILED, "failed"
        error = f"the stored job spec is unreadable ({spec}); delete this job and submit it again"
    return JobInfo(
        id=row.id,
        name=row.name,
        status=status,
        phase=phase,
        trials_done=row.trials_done,
        trials_planned=row.trials_planned,
        best_score=row.best_score,
        created_at=row.created_at,
        started_at=row.started_at,
        finished_at=row.finished_at,
        error=error,
        spec=spec if isinstance(spec, JobSpec) else None,
        result=json.loads(row.result) if row.result else None,
    )


def upload_info(
    row: UploadRow, *, live_jobs: Sequence[str] = (), expires_at: datetime | None = None
) -> UploadInfo:
    """The API's view of an upload row."""
    return UploadInfo(
        id=row.id,
        filename=row.filename,
        size=row.size,
        sha256=row.sha256,
        kind=row.kind,  # type: ignore[arg-type]
        created_at=row.created_at,
        live_jobs=list(live_jobs),
        expires_at=expires_at,
    )
