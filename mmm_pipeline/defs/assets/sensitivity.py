"""Prior sensitivity, one partition per market: the champion's ROAS under an alternative prior set.

A thin wrapper around :mod:`mmm_pipeline.model.sensitivity`: after registration it decides whether the
market's champion is due (``model.sensitivity.every_weeks``; a first champion or a changed prior set
always is), fits the alternative on the champion's window outside any DuckDB connection (reusing the
compiled graph of the refit in the same process), and records the comparison in
``models.prior_sensitivity`` in one transaction. The report shows the latest computation; a champion
that is not due keeps the last one, with its age.
"""

import datetime as dt
import hashlib

import dagster as dg
import pandas as pd

from mmm_pipeline.model.refit import RefitError, market_lift_tests, training_data
from mmm_pipeline.model.registry import champion, load_model
from mmm_pipeline.model.sensitivity import (
    LastComputation,
    due,
    run_sensitivity,
    settings_hash,
    unsupported,
)
from mmm_pipeline.tables import ensure_models
from mmm_pipeline.warehouse import transaction

from ...config import ProjectConfig
from ..metadata import markdown_table
from ..resources import WarehouseResource
from .model import MARKETS


def _last_computation(conn, market: str) -> LastComputation | None:  # noqa: ANN001 - DuckDB
    row = conn.execute(
        "SELECT model_id, train_end, settings_hash FROM models.prior_sensitivity WHERE market = ? "
        "ORDER BY computed_at DESC LIMIT 1",
        [market],
    ).fetchone()
    return None if row is None else LastComputation(str(row[0]), row[1], str(row[2]))


def build_sensitivity_assets(cfg: ProjectConfig) -> list[dg.AssetsDefinition]:
    settings = cfg.model.sensitivity

    @dg.asset(
        group_name="model",
        kinds={"pymc", "duckdb"},
        partitions_def=MARKETS,
        deps=["model_registry"],
        code_version=hashlib.sha256(settings.model_dump_json().encode()).hexdigest()[:16],
        description=(
            "Each channel's ROAS under an alternative prior set (model.sensitivity: by default the "
            "channel-effect prior equal for every channel instead of scaled by spend share), next to the "
            "champion's, with a flag where they differ by more than "
            f"{settings.material_change:.0%}. Refitted on the champion's window with short draws "
            f"({settings.chains} x {settings.draws}) on the compiled graph, only when due: a first "
            f"champion, a changed prior set, or every {settings.every_weeks} weeks of new data. "
            "Writes models.prior_sensitivity."
        ),
    )
    def prior_sensitivity(
        context: dg.AssetExecutionContext, warehouse: WarehouseResource
    ) -> dg.MaterializeResult:
        market = context.partition_key
        if not settings.enabled:
            return dg.MaterializeResult(metadata={"status": "off (model.sensitivity.enabled: false)"})
        with warehouse.get_connection() as conn:
            ensure_models(conn)
            current = champion(conn, market)
            last = _last_computation(conn, market)
            if current is not None:
                frame = conn.execute(
                    "SELECT * FROM marts.fct_modeling_weekly WHERE market = ? AND week <= ? ORDER BY week",
                    [market, current["train_end"]],
                ).df()
                lift_tests = market_lift_tests(conn, market)
                channels = conn.execute(
                    "SELECT channel, roas_mean, roas_hdi_low, roas_hdi_high FROM models.channel_summary "
                    "WHERE model_id = ? ORDER BY channel",
                    [current["model_id"]],
                ).df()
        if current is None:
            return dg.MaterializeResult(metadata={"status": "no champion yet: nothing to compare"})
        model_id = str(current["model_id"])
        train_end = pd.Timestamp(current["train_end"]).date()
        stored = load_model(current["artifact_path"])
        fingerprint = settings_hash(stored.spec, settings)
        now, why = due(last, model_id, train_end, fingerprint, settings.every_weeks)
        skipped = None if now else why
        if now:
            skipped = unsupported(stored.spec)
        if skipped:
            context.log.info(f"market {market}: prior sensitivity not computed: {skipped}")
            return dg.MaterializeResult(metadata={"status": "not computed", "reason": skipped})
        context.log.info(f"market {market}: prior sensitivity on champion {model_id}: {why}")
        try:
            data = training_data(frame, market, cfg, cfg.model)
            result = run_sensitivity(
                data, stored.spec, stored.scaling, channels, settings, lift_tests=lift_tests,
                progress=context.log.info,
            )  # fmt: skip
        except (RefitError, ValueError) as exc:
            # e.g. channels or controls changed since the champion was fitted: the next champion's turn
            context.log.warning(f"market {market}: prior sensitivity not computed: {exc}")
            return dg.MaterializeResult(metadata={"status": "not computed", "reason": str(exc)})
        rows = result.table.assign(
            market=market, model_id=model_id,
            computed_at=dt.datetime.now(dt.UTC).replace(tzinfo=None, microsecond=0),
            train_end=train_end, alternative=result.alternative, settings_hash=fingerprint,
            chains=result.chains, draws=result.draws, tune=result.tune,
            alt_max_r_hat=result.max_r_hat, alt_divergences=result.divergences,
        )  # fmt: skip
        with warehouse.get_connection() as conn:
            ensure_models(conn)
            with transaction(conn):
                conn.execute(
                    "DELETE FROM models.prior_sensitivity WHERE model_id = ? AND settings_hash = ?",
                    [model_id, fingerprint],
                )
                conn.register("sensitivity_rows", rows)
                conn.execute("INSERT INTO models.prior_sensitivity BY NAME SELECT * FROM sensitivity_rows")
                conn.unregister("sensitivity_rows")
        material = result.table[result.table["material"]]
        context.log.info(
            f"market {market}: prior sensitivity ({result.alternative}) in {result.seconds:.1f} s; "
            f"prior-sensitive channels: {', '.join(material['channel']) or 'none'}"
        )
        shown = result.table[["channel", "roas_mean", "alt_roas_mean", "relative_difference", "material"]]
        return dg.MaterializeResult(
            metadata={
                "status": "computed",
                "reason": why,
                "model_id": model_id,
                "alternative": result.alternative,
                "sampler": f"{result.chains} x {result.draws} draws ({result.tune} tune)",
                "reused_compiled_graph": result.reused_graph,
                "alt_max_r_hat": round(result.max_r_hat, 4),
                "alt_divergences": result.divergences,
                "seconds": round(result.seconds, 1),
                "prior_sensitive_channels": ", ".join(material["channel"]) or "none",
                "roas": dg.MetadataValue.md(markdown_table(shown, {"relative_difference": "+.0%"})),
            }
        )

    return [prior_sensitivity]
