#!/usr/bin/env bash
# Sets up .venv, then runs ruff, mypy and the test suite. Extra arguments go to pytest.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash scripts/setup.sh

echo "test: ruff check"
.venv/bin/ruff check .

echo "test: mypy"
.venv/bin/mypy

echo "test: pytest"
rc=0
.venv/bin/python -m pytest "$@" || rc=$?
if [ "$rc" -eq 5 ]; then
    echo "test: error: pytest collected no tests" >&2
    exit 1
fi
exit "$rc"
