"""One Dagster asset per SQL model in ``dbt_like_sql/``, with lineage read from its ref()/source() calls.

Each model is built into a temporary table, validated with pandera, and only then swapped into place,
so a model whose output breaks a rule leaves the last good table untouched (and its blocking asset check
fails, which stops everything downstream of it in the run).
"""

import hashlib
from collections.abc import Callable

import dagster as dg
import pandas as pd
import pandera.pandas as pa

from mmm_pipeline.features.sql_models import SqlModel, Window, build_model, commit_model
from mmm_pipeline.ingest.schemas import MODELING_RULES, modeling_rule_of, modeling_schema

from ...config import ProjectConfig
from ..metadata import table_metadata
from ..resources import WRITER_POOL, WarehouseResource

MODELING_TABLE = "fct_modeling_weekly"
MAX_CASES_SHOWN = 20


def _rules_for(
    model: SqlModel, cfg: ProjectConfig
) -> tuple[pa.DataFrameSchema | None, dict[str, str], Callable]:
    """The pandera schema a model's output must pass, its rules (check names) and how cases map to them."""
    if model.name == MODELING_TABLE:
        return modeling_schema(cfg), MODELING_RULES, modeling_rule_of
    if model.unique_key:
        keys = list(model.unique_key)
        schema = pa.DataFrameSchema(unique=keys, name=model.name)
        return schema, {"unique_key": f"one row per ({', '.join(keys)})"}, lambda _check: "unique_key"
    return None, {}, str


def _failures(
    schema: pa.DataFrameSchema | None, frame: pd.DataFrame, rule_of: Callable
) -> dict[str, pd.DataFrame]:
    if schema is None:
        return {}
    try:
        schema.validate(frame, lazy=True)
    except pa.errors.SchemaErrors as errors:
        cases = errors.failure_cases.copy()
        cases["rule"] = cases["check"].astype(str).map(rule_of)
        return {rule: group for rule, group in cases.groupby("rule")}
    return {}


def _case_table(frame: pd.DataFrame, cases: pd.DataFrame) -> str:
    """The offending rows themselves (market, week and the failing column), as a markdown table."""
    index = pd.to_numeric(cases["index"], errors="coerce").dropna().astype(int).unique()[:MAX_CASES_SHOWN]
    keys = [c for c in ("market", "week", "channel", "control") if c in frame.columns]
    cols = list(dict.fromkeys(keys + [c for c in cases["column"].dropna().unique() if c in frame.columns]))
    shown = frame.loc[frame.index.intersection(index), cols] if len(index) else cases.head(MAX_CASES_SHOWN)
    return f"{len(cases)} failing value(s):\n\n" + shown.to_markdown(index=False)


def _sql_asset(
    model: SqlModel, cfg: ProjectConfig, models: dict[str, SqlModel], weeks: dg.PartitionsDefinition
) -> dg.AssetsDefinition:
    schema, rules, rule_of = _rules_for(model, cfg)
    partitions = weeks if model.incremental else None

    @dg.asset(
        name=model.name,
        key_prefix=None,
        group_name=model.layer,
        deps=[*model.refs, *model.source_assets],
        kinds={"duckdb", "sql"},
        description=model.description,
        partitions_def=partitions,
        backfill_policy=dg.BackfillPolicy.single_run() if partitions else None,
        pool=WRITER_POOL,
        check_specs=[
            dg.AssetCheckSpec(rule, asset=model.name, description=text, blocking=True)
            for rule, text in rules.items()
        ],
        metadata={"sql_model": model.path.name, "materialized": model.materialized},
        code_version=hashlib.sha256(model.path.read_bytes()).hexdigest()[:12],
    )
    def _asset(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
        window = None
        if model.incremental:
            span = context.partition_time_window
            window = Window(start=span.start.date(), end=span.end.date())
            context.log.info(
                f"rebuilding {model.relation} for weeks {window.start} .. {window.end} (exclusive)"
            )
        with warehouse.get_connection() as conn:
            frame = build_model(conn, model, cfg, models, window)
            failures = _failures(schema, frame, rule_of)
            if failures:
                conn.execute("DROP TABLE IF EXISTS __model_build")
                context.log.error(
                    f"{model.relation} not updated: rule(s) {sorted(failures)} failed; "
                    "the previous table is kept"
                )
            else:
                commit_model(conn, model, window)
        checks = [
            dg.AssetCheckResult(
                check_name=rule,
                passed=rule not in failures,
                metadata={"failing_rows": dg.MetadataValue.md(_case_table(frame, failures[rule]))}
                if rule in failures
                else {},
            )
            for rule in rules
        ]
        metadata = {**table_metadata(frame, model.relation), "committed": not failures}
        if window:
            metadata["window"] = f"{window.start} .. {window.end}"
        return dg.MaterializeResult(metadata=metadata, check_results=checks)

    return _asset


def build_feature_assets(
    cfg: ProjectConfig, models: dict[str, SqlModel], weeks: dg.PartitionsDefinition
) -> list[dg.AssetsDefinition]:
    """One asset per SQL model; the incremental ones are partitioned by ``weeks``
    (:func:`mmm_pipeline.defs.partitions.weekly_partitions`, read once per code location build)."""
    return [_sql_asset(model, cfg, models, weeks) for model in models.values()]
