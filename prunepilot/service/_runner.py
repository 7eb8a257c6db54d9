"""Runs one job, inside a Ray task: resolve model and data, search, write artifacts.

Where each step runs:

* on the API host (the runner, a Ray task pinned there by hard node affinity, no CPUs
  reserved): reading the spec, the uploads and the database by local path, building the
  model, tracing it, planning and filling candidates, the Optuna study, exporting and
  writing artifacts. All light or I/O; it waits on its evaluators meanwhile, and never
  runs while its own job times latency (the search measures with nothing else in flight);
* in the job's evaluator actors, on any node (GPUs when the cluster has them): channel
  calibration and data-driven scoring, candidate scoring, successive-halving probes,
  fine-tuning and latency timing. They receive the model and data through Ray's object
  store, so a worker node needs Ray and the package, not the server's disk.

The scheduler passes the runner only the job id, the attempt number and the settings; the
runner reads the spec from the database and writes progress, log lines, artifacts and the
final status back. The Optuna study lives in the same database under ``job-ID``, so a job
re-run after a server restart resumes its study: finished trials are kept, interrupted
ones are evaluated again.

Every status write is conditional on the runner's attempt, so a runner whose job was
re-queued (a restart) or cancelled stops instead of overwriting newer state. Any failure
marks the job FAILED with its type and message; log lines are kept. Users read the job's
log, so it gets messages only: tracebacks go to the runner's stderr (the server's log).
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import socket
import time
import warnings
from pathlib import Path
from typing import Any

import torch

from prunepilot.core import PrunepilotError, save
from prunepilot.schemas import ArtifactInfo, JobSpec, JobStatus
from prunepilot.search import SearchCancelled, SearchData, SearchProgress, SearchResult, search

from . import _datasets, _limits, _model_source
from ._artifacts import ArtifactStore
from ._redact import clean, error_text
from ._report_html import render_report
from ._rows import UploadRow
from ._settings import Settings
from ._store import Database, stored_spec
from ._trials import study_name
from .errors import ServiceError

__all__ = ["run_job"]

log = logging.getLogger("prunepilot.service")

_CANCEL_POLL_S = 0.5


def _node_id() -> str:
    """The Ray node this process runs on (``-`` outside Ray)."""
    import ray

    return ray.get_runtime_context().get_node_id() if ray.is_initialized() else "-"


class _DBLogHandler(logging.Handler):
    """Copies ``prunepilot.*`` log records into the job's log: messages, no tracebacks."""

    def __init__(self, db: Database, job_id: str) -> None:
        super().__init__(logging.INFO)
        self.db, self.job_id = db, job_id

    def format(self, record: logging.LogRecord) -> str:
        return f"{record.name}: {record.getMessage()}"  # exc_info stays in the server log

    def emit(self, record: logging.LogRecord) -> None:
        try:
            msg = self.format(record)
            self.db.log(self.job_id, record.levelname, msg)
        except Exception:  # a log line must never break the job
            self.handleError(record)


class _Runner:
    """One attempt at one job; every write is conditional on the attempt number."""

    def __init__(self, job_id: str, attempt: int, settings: Settings, db: Database) -> None:
        self.job_id, self.attempt, self.settings, self.db = job_id, attempt, settings, db
        self.superseded = False
        self.stop = False
        self._polled = 0.0
        self._last: tuple[Any, ...] | None = None
        self.timings: dict[str, float] = {}

    # ------------------------------------------------------------------ callbacks

    def set_phase(self, phase: str, message: str = "") -> None:
        log.info("%s%s", phase, f": {message}" if message else "")
        ok = self.db.progress(
            self.job_id,
            self.attempt,
            phase=phase,
            event_data={"phase": phase, "message": message},
        )
        if not ok:
            self.stop = True

    def on_progress(self, p: SearchProgress) -> None:
        best = p.best_score if p.best_score is not None and math.isfinite(p.best_score) else None
        key = (p.phase, p.trials_done, p.trials_planned, best)
        data = None
        if key != self._last or p.message:
            data = {
                "phase": p.phase,
                "trials_done": p.trials_done,
                "trials_planned": p.trials_planned,
                "best_score": best,
                "message": p.message,
            }
        self._last = key
        ok = self.db.progress(
            self.job_id,
            self.attempt,
            phase=p.phase,
            trials_done=p.trials_done,
            trials_planned=p.trials_planned,
            best_score=best,
            event_data=data,
        )
        if not ok:
            self.stop = True

    def cancelled(self) -> bool:
        if self.stop:
            self._check_state()
            return True
        now = time.monotonic()
        if now - self._polled < _CANCEL_POLL_S:
            return False
        self._polled = now
        return self._check_state()

    def _check_state(self) -> bool:
        state = self.db.runner_state(self.job_id)
        if state is None or state[1] != self.attempt:
            self.superseded = True
            return True
        return state[0] != JobStatus.RUNNING.value

    # ------------------------------------------------------------------ the job

    def run(self) -> str:
        row = self.db.get_job(self.job_id)
        if row is None or row.attempt != self.attempt:
            return "stale"
        spec = stored_spec(row)
        if isinstance(spec, str):
            return self.fail(f"the stored job spec is unreadable ({spec})")
        owner = row.owner

        def uploads(upload_id: str) -> UploadRow | None:
            return self.db.get_upload(upload_id, owner)

        handler = _DBLogHandler(self.db, self.job_id)
        plog = logging.getLogger("prunepilot")
        plog.addHandler(handler)
        stderr = _stderr_handler()
        if stderr is not None:
            plog.addHandler(stderr)
        if plog.level == logging.NOTSET or plog.level > logging.INFO:
            plog.setLevel(logging.INFO)
        work_dir = self.settings.jobs_path / self.job_id
        work_dir.mkdir(parents=True, exist_ok=True)
        pool: Any = None
        t0 = time.perf_counter()
        try:
            torch.set_num_threads(self.settings.worker_threads)
            log.info("runner on node %s (host %s)", _node_id(), socket.gethostname())
            if self.attempt > 1:
                log.info("attempt %d: resuming study %s", self.attempt, study_name(self.job_id))
            self.set_phase("loading model", spec.model.source)
            built = _model_source.resolve(spec.model, self.settings, uploads, meta=False)
            _limits.check_params(_limits.count_params(built.model), spec, self.settings)
            self.timings["model_s"] = time.perf_counter() - t0
            t = time.perf_counter()
            self.set_phase("loading data", spec.dataset.source)
            data = _datasets.resolve(
                spec.dataset, self.settings, uploads, meta=False, work_dir=work_dir
            )
            sample = next(iter(data.val))[0][:2]
            footprint = _model_source.check_fit(built, spec.model, sample, data.num_classes)
            _limits.check_memory(footprint, spec, self.settings)
            log.info(
                "data: %s samples of shape %s, %d classes",
                data.sizes,
                list(data.sample_shape),
                data.num_classes,
            )
            self.timings["data_s"] = time.perf_counter() - t
            if self.cancelled():
                raise SearchCancelled("cancelled before the search started")
            from prunepilot.worker import RayPool, cluster_devices, plan_workers

            t = time.perf_counter()
            # unasked, a GPU job gets one actor per GPU, a CPU job `workers_per_job` (that fit)
            cpus, gpus = cluster_devices()
            default = plan_workers(
                None,
                self.settings.worker_device,
                threads=self.settings.worker_threads,
                cpus=cpus,
                gpus=gpus,
                cpu_default=self.settings.workers_per_job,
            )
            workers = min(spec.workers or default.workers, self.settings.max_workers_per_job)
            self.set_phase("starting workers", f"{workers} evaluators")
            pool = RayPool(
                workers,
                device=self.settings.worker_device,
                threads=self.settings.worker_threads,
                address=self.settings.ray_address,
                niceness=self.settings.worker_niceness,
                on_wait=lambda message: self.set_phase("waiting for workers", message),
                lost_timeout_s=self.settings.worker_lost_timeout_s,
            )
            result = search(
                built.model,
                sample[:1],
                SearchData(train=data.train, val=data.val, score=data.score),
                spec.search_spec(),
                pool=pool,
                storage=self.settings.db_url,
                study_name=study_name(self.job_id),
                callback=self.on_progress,
                cancel=self.cancelled,
            )
            pool.close()
            pool = None
            self.timings["search_s"] = time.perf_counter() - t
            t = time.perf_counter()
            self.set_phase("exporting", "writing the checkpoint, ONNX file and report")
            summary = self.write_artifacts(result, built, spec, sample, data.sizes, t0)
            self.timings["export_s"] = time.perf_counter() - t
            if self.db.finish(
                self.job_id,
                JobStatus.SUCCEEDED,
                attempt=self.attempt,
                from_status=(JobStatus.RUNNING,),
                result=summary,
                phase="done",
            ):
                log.info("job %s succeeded in %.1f s", self.job_id, time.perf_counter() - t0)
                return JobStatus.SUCCEEDED.value
            if self.db.finish(self.job_id, JobStatus.CANCELLED, attempt=self.attempt):
                return JobStatus.CANCELLED.value
            return "stale"
        except SearchCancelled:
            if self.superseded or self._terminal():  # e.g. FAILED past the wall-clock limit
                return "stale"
            log.info("job %s cancelled", self.job_id)
            self.db.finish(self.job_id, JobStatus.CANCELLED, attempt=self.attempt)
            return JobStatus.CANCELLED.value
        except ServiceError as e:
            return self.fail(e.detail)
        except PrunepilotError as e:
            return self.fail(str(e))
        except Exception as e:  # anything else still ends the job with its message
            log.error("job %s crashed", self.job_id, exc_info=True)
            return self.fail(error_text(e))
        finally:
            if pool is not None:
                try:
                    pool.close()
                except Exception:  # the pool may already be gone with its actors
                    log.debug("closing the pool failed", exc_info=True)
            plog.removeHandler(handler)
            if stderr is not None:
                plog.removeHandler(stderr)
            if self.db.runner_state(self.job_id) is None or self._terminal():
                shutil.rmtree(work_dir, ignore_errors=True)

    def _terminal(self) -> bool:
        state = self.db.runner_state(self.job_id)
        return state is not None and JobStatus(state[0]).terminal

    def fail(self, message: str) -> str:
        log.error("job %s failed: %s", self.job_id, message)
        if self.db.finish(self.job_id, JobStatus.FAILED, attempt=self.attempt, error=message):
            return JobStatus.FAILED.value
        # cancelled while failing: honour the cancellation
        self.db.finish(self.job_id, JobStatus.CANCELLED, attempt=self.attempt)
        return "stale"

    # ------------------------------------------------------------------ artifacts

    def write_artifacts(
        self,
        result: SearchResult,
        built: _model_source.BuiltModel,
        spec: JobSpec,
        sample: torch.Tensor,
        sizes: dict[str, int],
        t0: float,
    ) -> dict[str, Any]:
        store = ArtifactStore(self.settings.artifacts_path)
        staging = store.staging(self.job_id)
        items: list[ArtifactInfo] = []
        model = result.model.to("cpu").eval()
        ckpt = staging / "model.safetensors"
        save(model, ckpt, source=built.source, kwargs=built.kwargs)
        items.append(store.put(self.job_id, "model.safetensors", ckpt))
        onnx: dict[str, Any] = {"exported": False, "error": None, "exporter": None}
        if self.settings.onnx_export:
            onnx = _export_onnx(model, sample[:1], staging / "model.onnx")
            if onnx["exported"]:
                items.append(store.put(self.job_id, "model.onnx", staging / "model.onnx"))
            else:
                log.warning("ONNX export failed: %s", onnx["error"])
        report = result.report()
        for trial in report["trials"]:  # traceback frames stay on the server (in the study)
            if trial.get("error"):
                trial["error"] = clean(trial["error"])
        summary = {k: v for k, v in report.items() if k != "trials"}
        summary["latency_ms"] = result.latency.median_ms if result.latency else None
        summary["checkpoint"] = {"source": built.source, "kwargs": built.kwargs, "note": built.note}
        summary["onnx"] = onnx
        summary["data"] = sizes
        self.timings["total_s"] = time.perf_counter() - t0
        report.update(
            {
                "job": {
                    "id": self.job_id,
                    "attempt": self.attempt,
                    "spec": spec.model_dump(mode="json"),
                },
                "checkpoint": summary["checkpoint"],
                "onnx": onnx,
                "data": sizes,
                "timings": dict(self.timings),
            }
        )
        path = staging / "report.json"
        path.write_text(json.dumps(report, indent=2, default=_json_default))
        items.append(store.put(self.job_id, "report.json", path))
        page = staging / "report.html"  # the same charts as /ui, for a ticket or a PR
        page.write_text(render_report(report, items), encoding="utf-8")
        items.append(store.put(self.job_id, "report.html", page))
        shutil.rmtree(staging, ignore_errors=True)
        self.db.set_artifacts(self.job_id, items)
        summary["artifacts"] = [a.name for a in items]
        summary["timings"] = dict(self.timings)
        return json.loads(json.dumps(summary, default=_json_default))


def _stderr_handler() -> logging.Handler | None:
    """Warnings and tracebacks to stderr when nothing else logs them (a bare Ray worker)."""
    if logging.getLogger().handlers:
        return None
    h = logging.StreamHandler()
    h.setLevel(logging.WARNING)
    h.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    return h


def _json_default(o: Any) -> Any:
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if isinstance(o, Path):
        return str(o)
    if isinstance(o, tuple):
        return list(o)
    return str(o)


def _export_onnx(model: torch.nn.Module, example: torch.Tensor, path: Path) -> dict[str, Any]:
    """Export to ONNX: the TorchScript exporter (fast), else the dynamo one; never raises."""
    errors = []
    for exporter in ("torchscript", "dynamo"):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                if exporter == "torchscript":
                    torch.onnx.export(
                        model,
                        (example,),
                        str(path),
                        dynamo=False,
                        input_names=["input"],
                        output_names=["output"],
                        dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
                    )
                else:
                    torch.onnx.export(model, (example,), str(path), dynamo=True, verbose=False)
            return {"exported": True, "error": None, "exporter": exporter}
        except Exception as e:  # exporters fail in many ways; record why, keep the job
            errors.append(f"{exporter}: {type(e).__name__}: {e}")
    return {"exported": False, "error": "; ".join(errors)[:2000], "exporter": None}


def run_job(job_id: str, attempt: int, settings: dict[str, Any]) -> str:
    """Run one job to a terminal status (the body of the scheduler's Ray task).

    Args:
        job_id: the job.
        attempt: the attempt number the scheduler claimed; a mismatch means stale.
        settings: `Settings` as JSON-able data.

    Returns:
        The final status, or ``stale`` when the job moved on without this runner.
    """
    cfg = Settings.model_validate(settings)
    db = Database(cfg.db_url)
    try:
        return _Runner(job_id, attempt, cfg, db).run()
    finally:
        db.dispose()
