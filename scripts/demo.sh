#!/usr/bin/env bash
# Sets up .venv, then traces and prunes a torchvision ResNet-50 (see prunepilot.demo).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

bash scripts/setup.sh
exec .venv/bin/python -m prunepilot.demo "$@"
