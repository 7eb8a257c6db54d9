"""Submit-time checks of a job spec: everything it names must exist and fit together.

Cheap by design (no data loaded, models built on the ``meta`` device), so a spec that
cannot run is refused with a 4xx saying what to fix instead of failing minutes later.
"""

from __future__ import annotations

from prunepilot.schemas import JobSpec
from prunepilot.search import available_criteria

from . import _datasets, _limits, _model_source
from ._capacity import check_capacity
from ._rows import UploadRow
from ._settings import Settings
from ._store import Database
from .errors import InvalidSpecError

__all__ = ["validate_job"]


def validate_job(spec: JobSpec, owner: str, settings: Settings, db: Database) -> None:
    """Refuse a spec that names unknown or forbidden things, or whose parts do not fit.

    Raises:
        InvalidSpecError: unknown model, dataset, upload or criterion; inputs that do not fit; a
            job over the operator's limits (`_limits`) or beyond the Ray cluster (`_capacity`).
        ForbiddenError: a factory outside the allowlist, an untrusted model upload.
    """

    def uploads(upload_id: str) -> UploadRow | None:
        return db.get_upload(upload_id, owner)

    if spec.workers is not None and spec.workers > settings.max_workers_per_job:
        raise InvalidSpecError(
            f"workers={spec.workers} is over this server's limit of "
            f"{settings.max_workers_per_job} per job"
        )
    _limits.check_spec(spec, settings)
    check_capacity(spec, settings)
    criteria = available_criteria()
    if spec.search.criterion not in criteria:
        raise InvalidSpecError(
            f"unknown criterion {spec.search.criterion!r}; available: {', '.join(criteria)}"
        )
    info = _datasets.resolve(spec.dataset, settings, uploads, meta=True)
    footprint = _model_source.check(
        spec.model, settings, uploads, info.sample_shape, info.num_classes
    )
    if footprint is not None:
        _limits.check_params(footprint.params, spec, settings)
        _limits.check_memory(footprint, spec, settings)
