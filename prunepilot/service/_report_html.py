"""``report.html``: a job's report as one self-contained page (opens from disk, no server).

It draws the same charts as the web UI (``ui/charts.js`` and the vendored uPlot, inlined)
from the job's data, which travels as JSON in a ``<script type="application/json">``
block with ``<``, ``>`` and ``&`` escaped, so no string of the job (a name holding
``</script>``) can end the block or become markup. A Content-Security-Policy in the page
lets only its own inline scripts and styles run (by hash) and forbids every fetch.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from prunepilot.schemas import ArtifactInfo
from prunepilot.search import TrialRecord

from ._routes_ui import UI_DIR
from ._trials import trial_info

__all__ = ["render_report", "report_data"]

_STYLES = ("vendor/uplot/uPlot.min.css", "app.css")
_SCRIPTS = ("vendor/uplot/uPlot.iife.min.js", "charts.js", "report.js")

_BODY = """\
<header class="top"><span class="brand">prunepilot report</span></header>
<main>
<h1 id="title"></h1>
<p id="meta" class="muted"></p>
<noscript><p class="error">This report draws its charts with JavaScript; allow it to see them.
The data is in the page's <code>pp-data</code> block.</p></noscript>
<div id="summary" class="summary"></div>
<h2>Trials</h2>
<div class="charts">
<figure><figcaption>score against latency</figcaption>
<div id="scatter-latency" class="chart"></div></figure>
<figure><figcaption>score against MACs</figcaption>
<div id="scatter-macs" class="chart"></div></figure>
</div>
<h2>Keep ratio per group</h2>
<div id="ratios"></div>
<h2>Finalists</h2>
<div id="finalists"></div>
<h2>Files</h2>
<div id="artifacts"></div>
</main>
"""


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float replaced by ``None`` (JSON has no inf/NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def report_data(
    report: Mapping[str, Any], artifacts: Sequence[ArtifactInfo] = ()
) -> dict[str, Any]:
    """What the page draws, from a job's ``report.json`` content and its artifacts.

    Trials are cleaned as the API serves them (`trial_info`), so the page shows what
    ``GET /jobs/{id}/trials`` shows.
    """
    job = report.get("job") or {}
    spec = job.get("spec") or {}
    latency = report.get("latency") or {}
    trials = [
        trial_info(TrialRecord.from_dict(t)).model_dump(mode="json")
        for t in report.get("trials") or []
    ]
    keys = ("config", "macs", "params", "score", "baseline", "limits", "finalists", "chosen")
    result = {k: report.get(k) for k in keys}
    result["wall_s"] = report.get("wall_s")
    result["latency_ms"] = latency.get("median_ms")
    data = {
        "id": str(job.get("id") or ""),
        "name": spec.get("name"),
        "trials": trials,
        "pareto": [int(n) for n in report.get("pareto") or []],
        "result": result,
        "artifacts": [a.model_dump(mode="json") for a in artifacts],
    }
    return dict(_finite(data))


def _json_block(data: Any) -> str:
    """JSON that cannot close its ``<script>`` element or open a comment in it."""
    text = json.dumps(data, ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    for raw, escaped in (
        ("&", "\\u0026"),
        ("<", "\\u003c"),
        (">", "\\u003e"),
        ("\u2028", "\\u2028"),
        ("\u2029", "\\u2029"),
    ):
        text = text.replace(raw, escaped)
    return text


def _asset(name: str) -> str:
    text = (UI_DIR / name).read_text(encoding="utf-8")
    lowered = text.lower()
    if "</script" in lowered or "</style" in lowered or "<!--" in lowered:
        raise ValueError(f"{name} cannot be inlined: it holds a closing tag or comment")
    return text


def _hash(text: str) -> str:
    digest = hashlib.sha256(text.encode("utf-8")).digest()
    return f"'sha256-{base64.b64encode(digest).decode()}'"


def render_report(report: Mapping[str, Any], artifacts: Sequence[ArtifactInfo] = ()) -> str:
    """The self-contained HTML page of a finished job.

    Args:
        report: the content of the job's ``report.json``.
        artifacts: the job's other files (name, size, sha256), listed in the page.

    Returns:
        The page: one file, with the chart library, styles, scripts and data inlined.
    """
    data = report_data(report, artifacts)
    styles = [_asset(n) for n in _STYLES]
    scripts = [_asset(n) for n in _SCRIPTS]
    csp = (
        "default-src 'none'; "
        f"script-src {' '.join(_hash(s) for s in scripts)}; "
        f"style-src {' '.join(_hash(s) for s in styles)}; "
        "img-src data:; base-uri 'none'; form-action 'none'"
    )
    title = f"prunepilot report: {data['name'] or data['id']}"
    parts = [
        "<!doctype html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{html.escape(csp)}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title>",
        *(f"<style>{s}</style>" for s in styles),
        "</head>",
        "<body>",
        _BODY,
        f'<script type="application/json" id="pp-data">{_json_block(data)}</script>',
        *(f"<script>{s}</script>" for s in scripts),
        "</body>",
        "</html>",
        "",
    ]
    return "\n".join(parts)
