"""Running the service: `serve` (for ``prunepilot serve``) and ``python -m prunepilot.service``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from ._app import create_app
from ._settings import Settings, add_flags, flag_values

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

    ``--host``, ``--port`` and ``--log-level`` are the server's own; the others are derived
    from the `Settings` fields that declare a flag.

    Args:
        p: the parser to extend.
        token_dest: the attribute ``--token`` is stored in (the CLI keeps ``--token`` for
            its client-side option elsewhere).
    """
    p.add_argument("--host", default="127.0.0.1", help="bind address (0.0.0.0: all)")
    p.add_argument("--port", type=int, default=8000, help="TCP port")
    add_flags(p, {"tokens": token_dest})
    p.add_argument("--log-level", default="info")


def settings_from_args(args: argparse.Namespace, token_dest: str = "token") -> Settings:
    """Settings from ``PRUNEPILOT_*`` variables overridden by parsed flags.

    Raises:
        ValueError: a malformed ``--token`` or an invalid setting.
    """
    return Settings.from_env(**flag_values(args, {"tokens": token_dest}))


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of ``python -m prunepilot.service``."""
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        settings = settings_from_args(args)
    except ValueError as e:
        parser.error(str(e))
    serve(settings, args.host, args.port, log_level=args.log_level)
