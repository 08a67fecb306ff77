"""Assets by pipeline stage: ingestion, SQL feature models, publishing."""
