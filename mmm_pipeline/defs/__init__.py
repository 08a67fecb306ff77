"""Dagster wiring: assets, checks, jobs and resources built from a project config."""

import warnings

import dagster as dg

# Two parameters the wiring relies on are marked beta in Dagster 1.13; each use warned on the user's
# console (three times per market run for ``data_version``). ``backfill_policy``: single-run
# backfills keep a historical load one run. ``data_version`` on ``Output``: what makes Dagster's stale
# status follow a new model or recommendation (``staleness.py``).
warnings.filterwarnings(
    "ignore", message="Parameter `(backfill_policy|data_version)`", category=dg.BetaWarning
)
