"""Publish stage: versioned Parquet snapshots of the warehouse for BI."""
