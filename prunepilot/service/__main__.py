"""``python -m prunepilot.service``: run the API server (see ``--help``)."""

from __future__ import annotations

from ._server import main

if __name__ == "__main__":
    main()
