"""Continuous Marketing Mix Modeling pipeline: Dagster assets over DuckDB, PyMC and SciPy."""
