"""Features stage: model weeks and calendar features, the dbt-like SQL models and the modeling table's
data versions."""
