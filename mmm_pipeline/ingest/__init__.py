"""Ingest stage: landing files read, validated against the input contract and registered in DuckDB.

Holds the landing rules (``schemas``), the reader (``landing``), the incremental registration
(``ingestion``), categorical controls and the importers that reshape other layouts into landing files.
"""
