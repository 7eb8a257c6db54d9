"""The ``prunepilot`` command: run the service, submit and follow jobs, fetch artifacts.

``prunepilot --help`` lists the commands. ``--url`` and ``--token`` (or ``PRUNEPILOT_URL``
and ``PRUNEPILOT_TOKEN``) say which service to talk to; they may come before or after the
command. Expected failures (the server's 4xx messages, an unreachable server, a bad spec)
print one line on stderr and exit with status 1; no tracebacks.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

from prunepilot.schemas import JobInfo, JobStatus, TrialsPage, UploadInfo

from ._client import DEFAULT_URL, Client
from .errors import ApiError, ClientError

__all__ = ["build_parser", "main"]

log = logging.getLogger("prunepilot.client")

_STATUS_STYLE = {
    JobStatus.QUEUED: "cyan",
    JobStatus.RUNNING: "yellow",
    JobStatus.SUCCEEDED: "green",
    JobStatus.FAILED: "red",
    JobStatus.CANCELLING: "magenta",
    JobStatus.CANCELLED: "magenta",
}


def _out() -> Console:
    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 120  # pipes and logs: room for a table row, rather than 80 columns
    return console


def _err() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def _client(args: argparse.Namespace) -> Client:
    return Client(
        getattr(args, "url", None) or os.environ.get("PRUNEPILOT_URL") or DEFAULT_URL,
        getattr(args, "token", None) or os.environ.get("PRUNEPILOT_TOKEN"),
        timeout=args.timeout,
        retries=args.retries,
    )


def _dump(obj: Any) -> None:
    """Print a pydantic model (or a list of them) as JSON on stdout."""
    if isinstance(obj, list):
        data = [o.model_dump(mode="json") for o in obj]
    else:
        data = obj.model_dump(mode="json")
    print(json.dumps(data, indent=2))


def _status_text(status: JobStatus) -> str:
    return f"[{_STATUS_STYLE.get(status, 'white')}]{status.value}[/]"


def _when(info: JobInfo, field: str) -> str:
    value = getattr(info, field)
    return value.strftime("%Y-%m-%d %H:%M:%S") if value is not None else "-"


def _print_job(info: JobInfo) -> None:
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold", no_wrap=True)
    table.add_column(overflow="fold")
    table.add_row("id", info.id)
    if info.name:
        table.add_row("name", escape(info.name))
    table.add_row("status", _status_text(info.status))
    table.add_row("phase", escape(info.phase or "-"))
    table.add_row("trials", f"{info.trials_done}/{info.trials_planned or '?'}")
    table.add_row("best score", "-" if info.best_score is None else f"{info.best_score:.4f}")
    if info.spec is not None:  # None: a stored spec the server can no longer read
        table.add_row("model", escape(info.spec.model.source))
        table.add_row("dataset", escape(info.spec.dataset.source))
        c = info.spec.constraints
        pairs = (("MACs", c.macs), ("FLOPs", c.flops), ("params", c.params))
        budgets = [f"{k} <= {v}" for k, v in pairs if v]
        if c.latency_ms is not None:
            target = c.target
            budgets.append(f"latency <= {c.latency_ms} ms on {target.device} b{target.batch_size}")
        table.add_row("budgets", escape(", ".join(budgets)))
    for field in ("created_at", "started_at", "finished_at"):
        table.add_row(field.removesuffix("_at"), _when(info, field))
    if info.error:
        table.add_row("error", f"[red]{escape(info.error)}[/]")
    if info.result:
        for key, value in info.result.items():
            if isinstance(value, (str, int, float, bool)) or value is None:
                table.add_row(escape(key), escape(str(value)))
    _out().print(table)


def _print_trials(page: TrialsPage, pareto_only: bool) -> None:
    pareto = set(page.pareto)
    table = Table(title=f"{len(page.trials)} trials, Pareto front {sorted(pareto) or '-'}")
    for col in ("#", "state", "feasible", "MACs", "params", "pred ms", "meas ms", "score", "rungs"):
        table.add_column(col, justify="left" if col in ("state", "feasible") else "right")
    table.add_column("note")

    def ms(v: float | None) -> str:
        return "-" if v is None else f"{v:.2f}"

    for t in page.trials:
        if pareto_only and t.number not in pareto:
            continue
        table.add_row(
            f"{t.number}{'*' if t.number in pareto else ''}",
            t.state,
            "[green]yes[/]" if t.feasible else "[red]no[/]",
            f"{t.macs:,}",
            f"{t.params:,}",
            ms(t.predicted_ms),
            ms(t.measured_ms),
            "-" if t.score is None else f"{t.score:.4f}",
            " > ".join(f"{r:.4f}" for r in t.rungs) or "-",
            escape(t.reason or (f"{t.baseline} baseline" if t.baseline else "")),
        )
    _out().print(table)


# -- commands ------------------------------------------------------------------------------


@contextlib.contextmanager
def _needs_server(command: str) -> Iterator[None]:
    """Turn a missing server dependency into one line saying which extra to install."""
    try:
        yield
    except ModuleNotFoundError as e:
        if (e.name or "").startswith("prunepilot"):
            raise  # a broken install, not a missing extra
        raise ClientError(
            f"prunepilot {command} needs the server's dependencies ({e.name} is missing): "
            "pip install 'prunepilot[server]'"
        ) from None


_SERVE_HELP = "run the service (API + job scheduler on a local or remote Ray)"
_SERVE_DESCRIPTION = (
    "Run the service. Flags override PRUNEPILOT_* environment variables "
    "(every prunepilot.service.Settings field, e.g. PRUNEPILOT_DATA_DIR)."
)


def _cmd_serve(args: argparse.Namespace) -> int:
    """Parse the server's own flags and run it.

    The server's flags are parsed here, not by `build_parser`: only ``serve`` imports the
    service (and with it torch, FastAPI and SQLAlchemy), so the client stays light.
    """
    with _needs_server("serve"):
        from prunepilot.service import add_server_arguments, serve, settings_from_args

    parser = argparse.ArgumentParser(prog="prunepilot serve", description=_SERVE_DESCRIPTION)
    add_server_arguments(parser, token_dest="serve_tokens")
    server_args = parser.parse_args(args.server_args)
    try:
        settings = settings_from_args(server_args, token_dest="serve_tokens")
    except ValueError as e:  # pydantic's ValidationError is a ValueError
        raise ClientError(str(e)) from None  # names the setting, never its value
    serve(settings, server_args.host, server_args.port, log_level=server_args.log_level)
    return 0


def _cmd_submit(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = client.submit(args.spec, idempotency_key=args.idempotency_key)
        if not args.wait:
            if args.json:
                _dump(job.info)
            else:
                _out().print(f"submitted job [bold]{job.id}[/] ({_status_text(job.info.status)})")
            return 0
        _err().print(f"submitted job [bold]{job.id}[/]")
        info = job.wait(timeout=args.wait_timeout, progress=not args.no_progress)
        if args.json:
            _dump(info)
        else:
            _print_job(info)
        return 0 if info.status is JobStatus.SUCCEEDED else 1


def _cmd_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        job = client.job(args.job_id)
        if args.wait:
            job.wait(timeout=args.wait_timeout, progress=not args.no_progress)
        if args.json:
            _dump(job.info)
        else:
            _print_job(job.info)
        return 0


def _cmd_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        jobs = list(client.list_jobs(args.status, limit=args.limit))
    if args.json:
        _dump(jobs)
        return 0
    table = Table(title=f"{len(jobs)} job{'s' if len(jobs) != 1 else ''}")
    table.add_column("id", no_wrap=True, min_width=16)  # ids are what users copy: never cut
    table.add_column("name", overflow="fold")
    for col in ("status", "phase", "trials", "best", "created"):
        table.add_column(col)
    for info in jobs:
        table.add_row(
            info.id,
            escape(info.name or ""),
            _status_text(info.status),
            escape(info.phase or ""),
            f"{info.trials_done}/{info.trials_planned or '?'}",
            "-" if info.best_score is None else f"{info.best_score:.4f}",
            info.created_at.strftime("%m-%d %H:%M"),
        )
    _out().print(table)
    return 0


def _cmd_trials(args: argparse.Namespace) -> int:
    with _client(args) as client:
        page = client.job(args.job_id).trials()
    if args.json:
        _dump(page)
    else:
        _print_trials(page, args.pareto)
    return 0


def _cmd_download(args: argparse.Namespace) -> int:
    with _client(args) as client:
        paths = client.job(args.job_id).download(args.dest, names=args.name or None)
    for p in paths:
        _out().print(escape(f"{p} ({p.stat().st_size:,} bytes, sha256 verified)"))
    return 0


def _cmd_cancel(args: argparse.Namespace) -> int:
    with _client(args) as client:
        info = client.job(args.job_id).cancel()
    _out().print(f"job {info.id}: {_status_text(info.status)}")
    return 0


def _cmd_delete(args: argparse.Namespace) -> int:
    with _client(args) as client:
        client.job(args.job_id).delete()
    _out().print(f"job {args.job_id} deleted")
    return 0


def _cmd_logs(args: argparse.Namespace) -> int:
    with _client(args) as client:
        text = client.job(args.job_id).logs()
    sys.stdout.write(text if text.endswith("\n") or not text else text + "\n")
    return 0


def _cmd_upload(args: argparse.Namespace) -> int:
    with _client(args) as client:
        info = client.upload(args.path)
    if args.json:
        _dump(info)
    else:
        _out().print(
            f"uploaded {escape(args.path)} as [bold]{info.id}[/] ({info.kind}, {info.size:,} B)"
        )
    return 0


def _print_uploads(uploads: list[UploadInfo]) -> None:
    table = Table(title=f"{len(uploads)} upload{'s' if len(uploads) != 1 else ''}")
    table.add_column("id", no_wrap=True, min_width=24)  # ids are what users copy: never cut
    table.add_column("file", overflow="fold")
    table.add_column("kind")
    table.add_column("bytes", justify="right")
    for col in ("created", "expires", "live jobs"):
        table.add_column(col)
    for u in uploads:
        table.add_row(
            u.id,
            escape(u.filename),
            u.kind,
            f"{u.size:,}",
            u.created_at.strftime("%m-%d %H:%M"),
            u.expires_at.strftime("%m-%d %H:%M") if u.expires_at else "-",
            ", ".join(u.live_jobs) or "-",
        )
    _out().print(table)


def _cmd_uploads(args: argparse.Namespace) -> int:
    with _client(args) as client:
        uploads = list(client.list_uploads(limit=args.limit))
    if args.json:
        _dump(uploads)
    else:
        _print_uploads(uploads)
    return 0


def _cmd_delete_upload(args: argparse.Namespace) -> int:
    with _client(args) as client:
        client.delete_upload(args.upload_id)
    _out().print(f"upload {escape(args.upload_id)} deleted")
    return 0


def _cmd_health(args: argparse.Namespace) -> int:
    with _client(args) as client:
        body = client.health()
    print(json.dumps(body))
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    with _needs_server("demo"):
        from prunepilot.demo import run_demo

    url = getattr(args, "url", None)  # only as given here: a set PRUNEPILOT_URL is ignored
    return run_demo(
        data_dir=args.data_dir,
        train_epochs=args.train_epochs,
        trials=args.trials,
        keep=args.keep,
        url=url,
        token=(getattr(args, "token", None) or os.environ.get("PRUNEPILOT_TOKEN")) if url else None,
    )


# -- parser --------------------------------------------------------------------------------


def _common() -> argparse.ArgumentParser:
    """Options accepted before or after the command name."""
    p = argparse.ArgumentParser(add_help=False)
    s = argparse.SUPPRESS
    p.add_argument("--url", default=s, help=f"service URL (env PRUNEPILOT_URL; {DEFAULT_URL})")
    p.add_argument("--token", default=s, help="bearer token (env PRUNEPILOT_TOKEN)")
    p.add_argument("--timeout", type=float, default=s, help="seconds per request (30)")
    p.add_argument("--retries", type=int, default=s, help="retries on network errors/5xx (5)")
    p.add_argument("-v", "--verbose", action="count", default=s, help="log more (-vv: debug)")
    return p


def build_parser() -> argparse.ArgumentParser:
    """The ``prunepilot`` argument parser."""
    common = _common()
    parser = argparse.ArgumentParser(
        prog="prunepilot",
        description="Search per-layer structured pruning ratios under FLOPs/latency budgets.",
        parents=[common],
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, func: Callable[[argparse.Namespace], int], help: str) -> Any:
        p = sub.add_parser(name, help=help, description=help, parents=[common])
        p.set_defaults(func=func)
        return p

    # `serve` does not take the client options: its --token configures the server. Its
    # flags (and its --help) are the server's: `main` hands them to `_cmd_serve`.
    p = sub.add_parser("serve", help=_SERVE_HELP, description=_SERVE_DESCRIPTION, add_help=False)
    p.set_defaults(func=_cmd_serve, verbose=0, server_args=[])

    p = add("submit", _cmd_submit, "submit a job spec (YAML or JSON)")
    p.add_argument("spec", help="spec file; 'file:PATH' values are uploaded first")
    p.add_argument("--wait", action="store_true", help="follow the job until it finishes")
    p.add_argument("--wait-timeout", type=float, default=None, help="give up after S seconds")
    p.add_argument("--no-progress", action="store_true", help="no progress bar while waiting")
    p.add_argument("--idempotency-key", default=None, help="same key, same job")
    p.add_argument("--json", action="store_true", help="print the job as JSON")

    p = add("status", _cmd_status, "show a job")
    p.add_argument("job_id", metavar="ID")
    p.add_argument("--wait", action="store_true", help="wait until the job finishes")
    p.add_argument("--wait-timeout", type=float, default=None, help="give up after S seconds")
    p.add_argument("--no-progress", action="store_true", help="no progress bar while waiting")
    p.add_argument("--json", action="store_true", help="print the job as JSON")

    p = add("list", _cmd_list, "list your jobs, newest first")
    p.add_argument("--status", type=str.upper, choices=[s.value for s in JobStatus])
    p.add_argument("--limit", type=int, default=None, help="at most N jobs")
    p.add_argument("--json", action="store_true", help="print the jobs as JSON")

    p = add("trials", _cmd_trials, "show a job's trials and Pareto front")
    p.add_argument("job_id", metavar="ID")
    p.add_argument("--pareto", action="store_true", help="only the Pareto front")
    p.add_argument("--json", action="store_true", help="print the trials as JSON")

    p = add("download", _cmd_download, "download a job's artifacts (sha256 verified)")
    p.add_argument("job_id", metavar="ID")
    p.add_argument("dest", metavar="DIR")
    p.add_argument("--name", action="append", help="only this artifact (repeatable)")

    p = add("cancel", _cmd_cancel, "cancel a job")
    p.add_argument("job_id", metavar="ID")

    p = add("delete", _cmd_delete, "delete a finished job and its files")
    p.add_argument("job_id", metavar="ID")

    p = add("logs", _cmd_logs, "print a job's log")
    p.add_argument("job_id", metavar="ID")

    p = add("upload", _cmd_upload, "upload weights or a dataset; prints its id")
    p.add_argument("path")
    p.add_argument("--json", action="store_true", help="print the upload as JSON")

    p = add("uploads", _cmd_uploads, "list your uploads, newest first, with the jobs using them")
    p.add_argument("--limit", type=int, default=None, help="at most N uploads")
    p.add_argument("--json", action="store_true", help="print the uploads as JSON")

    p = add("delete-upload", _cmd_delete_upload, "delete an upload no unfinished job uses")
    p.add_argument("upload_id", metavar="ID")

    add("health", _cmd_health, "check that the service is up")

    p = add(
        "demo",
        _cmd_demo,
        "start a local service (or use --url), prune a digits CNN to MACs and latency "
        "budgets, compare",
    )
    p.add_argument("--data-dir", default=None, help="service data dir (default: a temp dir)")
    p.add_argument("--train-epochs", type=int, default=8, help="client-side training epochs")
    p.add_argument("--trials", type=int, default=16, help="search trials")
    p.add_argument("--keep", action="store_true", help="keep the temp dir and artifacts")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``prunepilot`` command; returns the exit status."""
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if args.func is _cmd_serve:
        args.server_args = rest  # the server's flags, parsed by `_cmd_serve`
    elif rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    for name, default in (("timeout", 30.0), ("retries", 5), ("verbose", 0)):
        if not hasattr(args, name):
            setattr(args, name, default)
    if args.func is not _cmd_serve:  # the server configures its own logging
        level = (logging.WARNING, logging.INFO, logging.DEBUG)[min(args.verbose, 2)]
        logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
        logging.getLogger("prunepilot.client").setLevel(level)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except ApiError as e:
        _err().print(f"[red]error[/]: {escape(e.detail)} [dim](HTTP {e.status})[/]")
        return 1
    except ClientError as e:
        _err().print(f"[red]error[/]: {escape(str(e))}")
        return 1
    except KeyboardInterrupt:
        _err().print("interrupted")
        return 130
