#!/usr/bin/env bash
# Idempotent project setup: creates .venv (Python 3.11) and installs prunepilot[server,dev,bench]
# in editable mode. The install is skipped while .venv/.prunepilot-stamp holds the sha256
# of pyproject.toml, so repeated runs are fast.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

VENV=".venv"
STAMP="$VENV/.prunepilot-stamp"

find_python() {
    local cand
    for cand in python3.11 python3; do
        if command -v "$cand" >/dev/null 2>&1 \
            && "$cand" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' \
                >/dev/null 2>&1; then
            echo "$cand"
            return 0
        fi
    done
    return 1
}

if [ ! -x "$VENV/bin/python" ]; then
    PY="$(find_python)" || { echo "setup: error: Python 3.11 not found (need python3.11 or python3 == 3.11)" >&2; exit 1; }
    echo "setup: creating $VENV with $PY"
    "$PY" -m venv "$VENV"
    rm -f "$STAMP"
fi

HASH="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$HASH" ]; then
    echo "setup: $VENV up to date"
    exit 0
fi

echo "setup: upgrading pip"
"$VENV/bin/python" -m pip install --quiet --upgrade pip
echo "setup: installing prunepilot[server,dev,bench] (editable)"
"$VENV/bin/python" -m pip install --quiet -e '.[server,dev,bench]'
echo "$HASH" > "$STAMP"
echo "setup: done"
