"""Dagster wiring: assets, checks, jobs and resources built from a project config."""
