#!/usr/bin/env bash
# Re-resolve dependencies from pyproject.toml in a scratch venv and rewrite requirements.lock.
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=$(mktemp -d)
python3 -m venv "$scratch"
"$scratch/bin/pip" install --quiet --disable-pip-version-check ".[dev]"
{
  echo "# Exact versions tested (Python 3.11). Regenerate: scripts/lock.sh. Install: scripts/setup.sh"
  "$scratch/bin/pip" freeze --exclude-editable | grep -v '^mmm-pipeline'
} > requirements.lock
rm -rf "$scratch"
