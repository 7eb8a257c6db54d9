"""``python -m prunepilot.demo``: the library-only demo (see `prunepilot.demo._library`)."""

from __future__ import annotations

from ._library import main

if __name__ == "__main__":
    main()
