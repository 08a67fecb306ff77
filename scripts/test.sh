#!/usr/bin/env bash
# Set up, then lint and run the default test suite on both cores (heavier tests: add `-m slow`;
# one process: PYTEST_WORKERS=0).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/ruff check .
exec .venv/bin/pytest -n "${PYTEST_WORKERS:-2}" --dist loadgroup --no-loadscope-reorder "$@"
