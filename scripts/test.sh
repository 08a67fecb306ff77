#!/usr/bin/env bash
# Set up, then lint and run the default test suite (heavier tests: add `-m slow`).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
exec .venv/bin/pytest "$@"
