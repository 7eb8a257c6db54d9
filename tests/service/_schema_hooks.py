"""Schemathesis hooks for `test_schema` (loaded by the ``schemathesis`` CLI, not by pytest).

``POST /jobs`` answers 422 to a well-formed spec that names a model, dataset or upload
this server does not have, which no schema can know; the run accepts that 422 there.
`spec_rules_in_schema` keeps it honest: such a 422 must come from those lookups, never
from the request validation whose rules the published schema states.
"""

from __future__ import annotations

import schemathesis
from schemathesis import Case, CheckContext, GenerationMode, Response

# rules of the job spec that JSON Schema cannot state (their descriptions say them)
UNSTATED_RULES = ("body.space: min_keep (", "body.model.input_shape: input_shape [")


@schemathesis.check
def spec_rules_in_schema(ctx: CheckContext, response: Response, case: Case) -> bool | None:
    """A schema-valid job spec is never refused by request validation."""
    meta = case.meta
    if (
        case.operation.label != "POST /jobs"
        or response.status_code != 422
        or meta is None
        or meta.generation.mode is not GenerationMode.POSITIVE
    ):
        return None
    detail = str(response.json().get("detail", ""))
    blamed = [
        part
        for part in detail.split("; ")
        if part.startswith(("body.", "body:", "the request"))
        and not part.startswith(UNSTATED_RULES)
    ]
    if blamed:
        raise AssertionError(
            f"the schema allows this spec but request validation refused it: {'; '.join(blamed)}"
        )
    return None
