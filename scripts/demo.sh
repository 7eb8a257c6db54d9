#!/usr/bin/env bash
# Sets up .venv, then runs `prunepilot demo`: a local service (SQLite, local Ray, CPU) prunes
# a digits CNN trained on the spot to FLOPs and CPU-latency budgets, and the pruned
# checkpoint is compared with the original (accuracy, MACs, latency). Extra arguments go
# to `prunepilot demo` (see `prunepilot demo --help`).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash scripts/setup.sh
exec .venv/bin/prunepilot demo "$@"
