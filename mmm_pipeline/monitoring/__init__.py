"""Continuous operation without Dagster: performance tracking, drift rules, market conditions, tables.

``tracking`` (the champion's forecast of the weeks since it was fitted against the actual KPI),
``drift`` (rules on the tracking table, event lifecycle), ``conditions`` (plan changes from market
conditions), ``store`` (the ``monitoring`` schema: DDL and writes), ``plots`` (charts for metadata).
Dagster wiring: ``mmm_pipeline/defs/assets/monitoring.py``, ``defs/sensors.py``, ``defs/schedules.py``.
"""
