"""Running the service: `serve` (for ``prunepilot serve``) and ``python -m prunepilot.service``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from ._app import create_app
from ._settings import Settings

__all__ = ["main", "serve"]

log = logging.getLogger("prunepilot.service")


def serve(
    settings: Settings | None = None,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    log_level: str = "info",
) -> None:
    """Run the API with uvicorn until interrupted (one process; it also schedules jobs).

    Args:
        settings: the operator's settings (default: `Settings.from_env`).
        host: interface to bind (``0.0.0.0`` to accept remote clients).
        port: TCP port.
        log_level: uvicorn's and prunepilot's log level.
    """
    import uvicorn

    settings = settings or Settings.from_env()
    logging.basicConfig(
        level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    app = create_app(settings)
    if settings.auth and not settings.tokens:
        settings.local_token()  # created now, so clients find it; never logged (a secret)
        log.info(
            "API token in %s (the client reads it for local URLs)", settings.data_dir / "token"
        )
    try:
        uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_graceful_shutdown=15)
    finally:
        ray = sys.modules.get("ray")
        if ray is not None and ray.is_initialized():
            ray.shutdown()  # a local Ray started for the jobs goes with the server


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m prunepilot.service",
        description="Run the prunepilot service. Flags override PRUNEPILOT_* variables.",
    )
    add_server_arguments(p)
    return p


def add_server_arguments(p: argparse.ArgumentParser, token_dest: str = "token") -> None:
    """The server's flags (shared by ``python -m prunepilot.service`` and ``prunepilot serve``).

    Args:
        p: the parser to extend.
        token_dest: the attribute ``--token`` is stored in (the CLI keeps ``--token`` for
            its client-side option elsewhere).
    """
    p.add_argument("--host", default="127.0.0.1", help="bind address (0.0.0.0: all)")
    p.add_argument("--port", type=int, default=8000, help="TCP port")
    p.add_argument("--data-dir", help="state directory (default ~/.prunepilot)")
    p.add_argument("--database-url", help="SQLAlchemy URL (default: SQLite in the data dir)")
    p.add_argument("--artifact-dir", help="where artifacts go (default: DATA_DIR/artifacts)")
    p.add_argument("--data-root", help="the directory dir: datasets may name")
    p.add_argument(
        "--token",
        dest=token_dest,
        action="append",
        metavar="TOKEN=OWNER",
        help="accept this bearer token for OWNER (repeatable; default: one generated local "
        "token in DATA_DIR/token, which the client reads for local URLs)",
    )
    p.add_argument("--no-auth", action="store_true", help="no tokens (single-user demo only)")
    p.add_argument(
        "--allow",
        action="append",
        metavar="PATTERN",
        help="allow package.module:NAME factories matching this fnmatch pattern",
    )
    p.add_argument("--allow-untrusted-models", action="store_true", help="accept pickles")
    p.add_argument("--max-upload-bytes", type=int)
    p.add_argument("--max-jobs-per-token", type=int)
    p.add_argument("--concurrent-jobs", type=int)
    p.add_argument("--ray-address", help="Ray cluster (default: start a local Ray)")
    p.add_argument("--ray-num-cpus", type=int, help="CPUs of the local Ray")
    p.add_argument(
        "--ray-auth-mode", choices=["token", "disabled"], help="Ray token authentication"
    )
    p.add_argument("--ray-auth-token-file", help="file holding the Ray cluster's token")
    p.add_argument("--workers-per-job", type=int)
    p.add_argument("--worker-device", choices=["auto", "cpu", "cuda"])
    p.add_argument("--log-level", default="info")


def settings_from_args(args: argparse.Namespace, token_dest: str = "token") -> Settings:
    """Settings from ``PRUNEPILOT_*`` variables overridden by parsed flags.

    Raises:
        ValueError: a malformed ``--token`` or an invalid setting.
    """
    tokens = None
    if getattr(args, token_dest):
        tokens = {}
        for item in getattr(args, token_dest):
            token, sep, owner = item.partition("=")
            if not sep or not token or not owner:
                # never echo the item: it holds (part of) a secret
                raise ValueError("--token expects TOKEN=OWNER")
            tokens[token] = owner
    return Settings.from_env(
        data_dir=args.data_dir,
        database_url=args.database_url,
        artifact_dir=args.artifact_dir,
        data_root=args.data_root,
        tokens=tokens,
        auth=False if args.no_auth else None,
        model_allowlist=tuple(args.allow) if args.allow else None,
        allow_untrusted_models=True if args.allow_untrusted_models else None,
        max_upload_bytes=args.max_upload_bytes,
        max_jobs_per_token=args.max_jobs_per_token,
        concurrent_jobs=args.concurrent_jobs,
        ray_address=args.ray_address,
        ray_num_cpus=args.ray_num_cpus,
        ray_auth_mode=args.ray_auth_mode,
        ray_auth_token_file=args.ray_auth_token_file,
        workers_per_job=args.workers_per_job,
        worker_device=args.worker_device,
    )


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m prunepilot.service``."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ValueError as e:
        parser.error(str(e))
    serve(settings, args.host, args.port, log_level=args.log_level)
