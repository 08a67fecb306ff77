#!/usr/bin/env bash
# Set up, then run the whole chain on the bundled case-study data in ./demo_project.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/mmm-pipeline demo --dir demo_project "$@"
