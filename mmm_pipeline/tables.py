"""Every table of the working DuckDB database: one module of DDL, one ``ensure_*`` per schema.

Schemas: ``raw`` (landing deliveries), ``models`` (the registry), ``optimization`` (budget
recommendations) and ``monitoring`` (tracking, drift, optimization history); ``staging``,
``intermediate`` and ``marts`` are built by the SQL models. Each ``ensure_*`` is idempotent and
upgrades a warehouse made by an older version in place (``CREATE ... IF NOT EXISTS`` and ``ALTER TABLE
... ADD COLUMN IF NOT EXISTS`` for columns added since), so an existing database keeps its rows.
"""

from __future__ import annotations

import duckdb

RAW_DDL = """
CREATE SCHEMA IF NOT EXISTS raw;
CREATE SCHEMA IF NOT EXISTS staging;
CREATE SCHEMA IF NOT EXISTS intermediate;
CREATE SCHEMA IF NOT EXISTS marts;
CREATE TABLE IF NOT EXISTS raw.landing_files (
    delivery_id BIGINT PRIMARY KEY,   -- one row per delivery of a file's content
    kind VARCHAR NOT NULL,            -- media | kpi | controls | lift_tests
    path VARCHAR NOT NULL,            -- relative to the landing folder
    sha256 VARCHAR NOT NULL,
    size BIGINT NOT NULL,
    mtime_ns BIGINT NOT NULL,
    delivered_at TIMESTAMP NOT NULL,
    status VARCHAR NOT NULL,          -- active | superseded (same path re-delivered) | duplicate
    n_rows BIGINT,
    min_week DATE,
    max_week DATE,
    note VARCHAR
);
CREATE TABLE IF NOT EXISTS raw.landed_media (
    delivery_id BIGINT, row_number INTEGER, date DATE, week DATE, market VARCHAR, channel VARCHAR,
    spend DOUBLE, impressions DOUBLE
);
CREATE TABLE IF NOT EXISTS raw.landed_kpi (
    delivery_id BIGINT, row_number INTEGER, date DATE, week DATE, market VARCHAR, kpi DOUBLE
);
CREATE TABLE IF NOT EXISTS raw.landed_controls (
    delivery_id BIGINT, row_number INTEGER, date DATE, week DATE, market VARCHAR, control VARCHAR,
    value DOUBLE, label VARCHAR
);
-- A categorical control's label (its value is then NULL); added to warehouses made before it existed.
ALTER TABLE raw.landed_controls ADD COLUMN IF NOT EXISTS label VARCHAR;
CREATE TABLE IF NOT EXISTS raw.landed_lift_tests (
    delivery_id BIGINT, row_number INTEGER, week DATE, market VARCHAR, channel VARCHAR,
    start_date DATE, end_date DATE, spend DOUBLE, delta_spend DOUBLE, lift DOUBLE, lift_se DOUBLE
);
-- The queue of weeks to rebuild, gone (Dagster's stale status of the weekly partitions decides now).
DROP TABLE IF EXISTS raw.pending_weeks;
CREATE TABLE IF NOT EXISTS raw.quarantined_files (
    path VARCHAR, kind VARCHAR, sha256 VARCHAR, quarantined_at TIMESTAMP, moved_to VARCHAR,
    rules VARCHAR, message VARCHAR
);
CREATE TABLE IF NOT EXISTS raw.holidays (date DATE, name VARCHAR, country VARCHAR);
"""


#: The registry's tables; every insight table is keyed by ``model_id`` and ``market``.
MODELS_DDL = """
CREATE SCHEMA IF NOT EXISTS models;
CREATE TABLE IF NOT EXISTS models.model_runs (
    model_id VARCHAR PRIMARY KEY,
    market VARCHAR NOT NULL,
    status VARCHAR NOT NULL,          -- champion | retired (was champion) | rejected (failed the gate)
    created_at TIMESTAMP NOT NULL,    -- when the fit finished (UTC)
    registered_at TIMESTAMP,
    promoted_at TIMESTAMP,
    retired_at TIMESTAMP,
    train_start DATE, train_end DATE, n_weeks INTEGER,
    config_hash VARCHAR,              -- sha256 of the model config, channels and controls
    code_version VARCHAR,             -- package version (+ git commit when run from a checkout)
    model_spec VARCHAR,               -- ModelSpec JSON (structure, priors, sampler)
    scaling VARCHAR,                  -- ScalingSpec JSON (frozen scaling constants)
    scaling_source VARCHAR,           -- model_id whose scaling was reused, or 'fresh'
    previous_champion VARCHAR,        -- the market's champion when this run was fitted
    sampler VARCHAR, chains INTEGER, draws INTEGER, tune INTEGER, target_accept DOUBLE, seed BIGINT,
    max_r_hat DOUBLE, min_ess_bulk DOUBLE, min_ess_tail DOUBLE, divergences INTEGER,
    r2 DOUBLE, mape DOUBLE, nrmse DOUBLE,
    build_seconds DOUBLE, compile_seconds DOUBLE, sample_seconds DOUBLE, total_seconds DOUBLE,
    reused_graph BOOLEAN,
    gate_passed BOOLEAN, gate_failures VARCHAR,
    artifact_path VARCHAR, dagster_run_id VARCHAR
);
ALTER TABLE models.model_runs ADD COLUMN IF NOT EXISTS cv_status VARCHAR;  -- ok | partial | failed | skipped
ALTER TABLE models.model_runs ADD COLUMN IF NOT EXISTS cv_note VARCHAR;
ALTER TABLE models.model_runs ADD COLUMN IF NOT EXISTS cv_n_folds INTEGER;      -- folds where the MMM ran
ALTER TABLE models.model_runs ADD COLUMN IF NOT EXISTS cv_folds_failed INTEGER;
ALTER TABLE models.model_runs ADD COLUMN IF NOT EXISTS cv_crps DOUBLE;          -- pooled over test weeks
ALTER TABLE models.model_runs ADD COLUMN IF NOT EXISTS cv_crps_skill DOUBLE;    -- 1 - crps / seasonal-naive's
ALTER TABLE models.model_runs ADD COLUMN IF NOT EXISTS cv_mape DOUBLE;
ALTER TABLE models.model_runs ADD COLUMN IF NOT EXISTS cv_coverage_50 DOUBLE;
ALTER TABLE models.model_runs ADD COLUMN IF NOT EXISTS cv_coverage_94 DOUBLE;
ALTER TABLE models.model_runs ADD COLUMN IF NOT EXISTS cv_unstable_channels VARCHAR;
ALTER TABLE models.model_runs ADD COLUMN IF NOT EXISTS promotion_blocked_by VARCHAR;  -- why not promoted
ALTER TABLE models.model_runs ADD COLUMN IF NOT EXISTS n_lift_tests INTEGER;  -- lift tests in the fit
ALTER TABLE models.model_runs ADD COLUMN IF NOT EXISTS fit_attempts INTEGER;  -- fits tried (model.remedies)
ALTER TABLE models.model_runs ADD COLUMN IF NOT EXISTS data_fingerprint VARCHAR;  -- of the training rows
-- pooling: partial: the pooled fit this run is a market's view of (its group is promoted as one unit);
-- the national roll-up rows (market 'national') of channel_summary, decomposition and response_curves
-- carry it as their model_id. NULL for a market fitted alone.
ALTER TABLE models.model_runs ADD COLUMN IF NOT EXISTS pooled_fit_id VARCHAR;
-- model.refresh: importance: the sampled run whose draws this run reweighted (NULL: this run sampled)
ALTER TABLE models.model_runs ADD COLUMN IF NOT EXISTS refresh_anchor VARCHAR;
ALTER TABLE models.model_runs ADD COLUMN IF NOT EXISTS pareto_k DOUBLE;  -- PSIS reliability of the weights
CREATE TABLE IF NOT EXISTS models.cv_folds (
    model_id VARCHAR, market VARCHAR, fold INTEGER, status VARCHAR, error VARCHAR,
    train_start DATE, train_end DATE, test_start DATE, test_end DATE, n_train INTEGER, n_test INTEGER,
    kpi_scale DOUBLE, n_time INTEGER, fit_seconds DOUBLE, compile_seconds DOUBLE, sample_seconds DOUBLE,
    reused_graph BOOLEAN, divergences INTEGER, max_r_hat DOUBLE, min_ess_bulk DOUBLE, seconds DOUBLE
);
CREATE TABLE IF NOT EXISTS models.cv_predictions (
    model_id VARCHAR, market VARCHAR, fold INTEGER,
    model VARCHAR,                    -- mmm | seasonal_naive | ridge
    week DATE, horizon INTEGER, observed DOUBLE, mean DOUBLE, sd DOUBLE,
    lower_94 DOUBLE, lower_50 DOUBLE, median DOUBLE, upper_50 DOUBLE, upper_94 DOUBLE, crps DOUBLE
);
CREATE TABLE IF NOT EXISTS models.cv_metrics (
    model_id VARCHAR, market VARCHAR,
    scope VARCHAR,                    -- fold | overall (pooled over the folds where the model ran)
    fold INTEGER, model VARCHAR, status VARCHAR, error VARCHAR, method VARCHAR,
    n_folds INTEGER, n_folds_failed INTEGER, folds VARCHAR, n_weeks INTEGER,
    crps DOUBLE, mape DOUBLE, rmse DOUBLE,
    bias DOUBLE, bias_pct DOUBLE,     -- mean(predicted - observed): positive = over-forecast
    coverage_50 DOUBLE, coverage_94 DOUBLE,
    crps_skill DOUBLE                 -- 1 - crps / seasonal-naive crps on the same weeks
);
CREATE TABLE IF NOT EXISTS models.cv_fold_parameters (
    model_id VARCHAR, market VARCHAR, fold INTEGER, channel VARCHAR,
    parameter VARCHAR,                -- roas | share | alpha | theta | lam | half_sat | slope | beta
    mean DOUBLE, hdi_low DOUBLE, hdi_high DOUBLE
);
CREATE TABLE IF NOT EXISTS models.cv_stability (
    model_id VARCHAR, market VARCHAR, channel VARCHAR, parameter VARCHAR, n_folds INTEGER,
    mean DOUBLE, sd DOUBLE, cv DOUBLE, min DOUBLE, max DOUBLE, spread DOUBLE, hdi_overlap BOOLEAN
);
CREATE TABLE IF NOT EXISTS models.cv_parameter_stability (
    model_id VARCHAR, market VARCHAR, channel VARCHAR, n_folds INTEGER,
    roas_mean DOUBLE, roas_sd DOUBLE, roas_cv DOUBLE, roas_min DOUBLE, roas_max DOUBLE,
    roas_hdi_overlap BOOLEAN, share_mean DOUBLE, share_min DOUBLE, share_max DOUBLE, share_spread DOUBLE,
    roas_unstable BOOLEAN,            -- coefficient of variation of fold-mean ROAS > roas_cv_threshold
    roas_cv_threshold DOUBLE
);
CREATE TABLE IF NOT EXISTS models.fit_attempts (     -- one row per sampling attempt of the run
    model_id VARCHAR, market VARCHAR, attempt INTEGER,
    sampler VARCHAR, chains INTEGER, draws INTEGER, tune INTEGER, target_accept DOUBLE, seed BIGINT,
    max_r_hat DOUBLE, min_ess_bulk DOUBLE, min_ess_tail DOUBLE, divergences INTEGER,
    gate_passed BOOLEAN, gate_failures VARCHAR,
    worst_parameters VARCHAR,         -- parameters with the worst R-hat/ESS, when convergence failed
    remedy VARCHAR,                   -- what this attempt changed against the previous one, and why
    seconds DOUBLE
);
CREATE TABLE IF NOT EXISTS models.parameter_summary (
    model_id VARCHAR, market VARCHAR, parameter VARCHAR,
    mean DOUBLE, sd DOUBLE, hdi_low DOUBLE, hdi_high DOUBLE, r_hat DOUBLE, ess_bulk DOUBLE, ess_tail DOUBLE
);
CREATE TABLE IF NOT EXISTS models.decomposition (
    model_id VARCHAR, market VARCHAR, week DATE, component VARCHAR,
    mean DOUBLE, hdi_low DOUBLE, hdi_high DOUBLE
);
CREATE TABLE IF NOT EXISTS models.channel_summary (
    model_id VARCHAR, market VARCHAR, channel VARCHAR, spend DOUBLE,
    contribution_mean DOUBLE, contribution_hdi_low DOUBLE, contribution_hdi_high DOUBLE,
    share_mean DOUBLE, share_hdi_low DOUBLE, share_hdi_high DOUBLE,
    roas_mean DOUBLE, roas_hdi_low DOUBLE, roas_hdi_high DOUBLE,
    mroas_mean DOUBLE, mroas_hdi_low DOUBLE, mroas_hdi_high DOUBLE
);
CREATE TABLE IF NOT EXISTS models.channel_period_summary (   -- from the posterior draws of each period's sum
    model_id VARCHAR, market VARCHAR,
    period_type VARCHAR,              -- quarter | year (calendar periods of the week start dates)
    period VARCHAR,                   -- 2018-Q2 | 2018
    period_start DATE, period_end DATE, first_week DATE, last_week DATE, n_weeks INTEGER,
    complete BOOLEAN,                 -- the training window holds every week starting in the period
    channel VARCHAR, spend DOUBLE,
    contribution_mean DOUBLE, contribution_hdi_low DOUBLE, contribution_hdi_high DOUBLE,
    share_mean DOUBLE, share_hdi_low DOUBLE, share_hdi_high DOUBLE,
    roas_mean DOUBLE, roas_hdi_low DOUBLE, roas_hdi_high DOUBLE
);
CREATE TABLE IF NOT EXISTS models.response_curves (
    model_id VARCHAR, market VARCHAR, channel VARCHAR, weekly_spend DOUBLE,
    mean DOUBLE, hdi_low DOUBLE, hdi_high DOUBLE
);
CREATE TABLE IF NOT EXISTS models.adstock_weights (
    model_id VARCHAR, market VARCHAR, channel VARCHAR, lag INTEGER,
    mean DOUBLE, hdi_low DOUBLE, hdi_high DOUBLE
);
CREATE TABLE IF NOT EXISTS models.fit_weekly (
    model_id VARCHAR, market VARCHAR, week DATE, actual DOUBLE,
    predicted_mean DOUBLE, predicted_hdi_low DOUBLE, predicted_hdi_high DOUBLE
);
CREATE TABLE IF NOT EXISTS models.roas_drift (
    model_id VARCHAR, market VARCHAR, champion_model_id VARCHAR, channel VARCHAR,
    roas_mean DOUBLE, roas_hdi_low DOUBLE, roas_hdi_high DOUBLE,
    champion_roas_mean DOUBLE, champion_roas_hdi_low DOUBLE, champion_roas_hdi_high DOUBLE,
    change DOUBLE, relative_change DOUBLE,
    within_champion_hdi BOOLEAN        -- the new mean lies inside the champion's 94% HDI
);
CREATE TABLE IF NOT EXISTS models.prior_sensitivity (
    -- one row per computation x channel (model/sensitivity.py): a champion refitted under an
    -- alternative prior set, on a schedule (model.sensitivity.every_weeks), not on every refit
    market VARCHAR NOT NULL, model_id VARCHAR NOT NULL,   -- the champion it was computed on
    computed_at TIMESTAMP NOT NULL, train_end DATE,       -- the champion's last training week
    alternative VARCHAR,              -- the alternative prior set, in words
    settings_hash VARCHAR,            -- model structure and priors + the alternative (a change recomputes)
    chains INTEGER, draws INTEGER, tune INTEGER,          -- the alternative fit's sampler settings
    alt_max_r_hat DOUBLE, alt_divergences INTEGER,        -- the alternative fit's convergence
    channel VARCHAR,
    roas_mean DOUBLE, roas_hdi_low DOUBLE, roas_hdi_high DOUBLE,              -- the champion's
    alt_roas_mean DOUBLE, alt_roas_hdi_low DOUBLE, alt_roas_hdi_high DOUBLE,  -- under the alternative
    relative_difference DOUBLE,       -- alt_roas_mean / roas_mean - 1
    material BOOLEAN                  -- |relative_difference| above model.sensitivity.material_change
);
"""

#: Insight tables a fit writes (``tables/<name>.parquet``) and registration copies into ``models``.
INSIGHT_TABLES = (
    "fit_attempts",
    "parameter_summary",
    "decomposition",
    "channel_summary",
    "channel_period_summary",
    "response_curves",
    "adstock_weights",
    "fit_weekly",
)
#: Cross-validation tables a CV run writes (``<model_id>.cv/<name>.parquet``), keyed like the insights.
CV_TABLES = (
    "cv_folds",
    "cv_predictions",
    "cv_metrics",
    "cv_fold_parameters",
    "cv_stability",
    "cv_parameter_stability",
)
#: Per-run tables, for BI: each also gets a ``champion_<name>`` view of the current champions' rows.
RUN_TABLES = (*INSIGHT_TABLES, "roas_drift", *CV_TABLES)

CHAMPION = "champion"
RETIRED = "retired"
REJECTED = "rejected"


#: Views of ``models.model_runs`` with one row per market, for BI: the serving model and the newest fit.
RUN_VIEWS = {
    "champion_model_runs": f"SELECT * FROM models.model_runs WHERE status = '{CHAMPION}'",
    "latest_model_runs": "SELECT * FROM models.model_runs "
    "QUALIFY row_number() OVER (PARTITION BY market ORDER BY created_at DESC, model_id DESC) = 1",
}


def ensure_models(conn: duckdb.DuckDBPyConnection) -> None:
    """Create the ``models`` tables (adding columns newer runs write) and their BI views (idempotent)."""
    conn.execute(MODELS_DDL)
    for name, sql in RUN_VIEWS.items():
        conn.execute(f"CREATE OR REPLACE VIEW models.{name} AS {sql}")
    for name in RUN_TABLES:
        conn.execute(
            f"CREATE OR REPLACE VIEW models.champion_{name} AS SELECT t.* FROM models.{name} t "
            f"JOIN models.model_runs r USING (model_id) WHERE r.status = '{CHAMPION}'"
        )


OPTIMIZATION_DDL = """
CREATE SCHEMA IF NOT EXISTS optimization;
CREATE TABLE IF NOT EXISTS optimization.plan_summary (   -- one row per optimization: the base plan
    optimization_id VARCHAR PRIMARY KEY, market VARCHAR NOT NULL, model_id VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    dagster_run_id VARCHAR,
    plan VARCHAR,                     -- the base plan's name
    description VARCHAR,
    plan_source VARCHAR,              -- the plan file
    plan_hash VARCHAR,                -- sha256 of the base plan and scenarios (their content)
    scenarios VARCHAR,                -- the scenarios compared with it, comma-separated
    infeasible_scenarios VARCHAR,     -- scenarios whose rules conflict (see optimization.scenarios)
    mode VARCHAR,                     -- steady_state (a weekly run rate) | plan (weeks planned one by one)
    weeks INTEGER,                    -- the plan's horizon
    objective VARCHAR,                -- kpi | roi | profit | blend
    risk VARCHAR,                     -- how the posterior draws were summarised (mean, cvar alpha=...)
    budget DOUBLE, budget_mode VARCHAR,               -- exact | at_most
    total_current DOUBLE,             -- the current allocation over the horizon (recent weeks' average)
    total_recommended DOUBLE,
    objective_current DOUBLE, objective_recommended DOUBLE,
    contribution_current_mean DOUBLE,
    contribution_mean DOUBLE, contribution_hdi_low DOUBLE, contribution_hdi_high DOUBLE,
    roas_current DOUBLE, roas_recommended DOUBLE,
    uplift_mean DOUBLE, uplift_hdi_low DOUBLE, uplift_hdi_high DOUBLE,   -- recommended - current, per draw
    uplift_pct DOUBLE,                -- uplift_mean as % of the current media contribution
    prob_uplift_positive DOUBLE,      -- share of posterior draws where the recommendation beats current
    same_mix_uplift_mean DOUBLE, same_mix_uplift_hdi_low DOUBLE, same_mix_uplift_hdi_high DOUBLE,
    prob_same_mix_uplift_positive DOUBLE,  -- vs the current mix scaled to the recommended total
    n_flags INTEGER, flags VARCHAR,   -- recommended spend outside the historical range ('; '-separated)
    n_draws INTEGER,                  -- posterior draws used
    history_start DATE, history_end DATE,  -- the spend history (up to the champion's last training week)
    seconds DOUBLE                    -- optimization time of the base plan
);
-- The model's forecast of the base plan's weeks (the weeks after history_end; their seasonality, trend,
-- controls, and the carry-in of the real spend before them), summed over the plan weeks; added to
-- warehouses made before it existed. KPI intervals are predictive (observation noise included), 94% HDI.
ALTER TABLE optimization.plan_summary ADD COLUMN IF NOT EXISTS forecast_start DATE;  -- first plan week
ALTER TABLE optimization.plan_summary ADD COLUMN IF NOT EXISTS forecast_end DATE;    -- last plan week
ALTER TABLE optimization.plan_summary ADD COLUMN IF NOT EXISTS forecast_kpi_mean DOUBLE;  -- recommended
ALTER TABLE optimization.plan_summary ADD COLUMN IF NOT EXISTS forecast_kpi_hdi_low DOUBLE;
ALTER TABLE optimization.plan_summary ADD COLUMN IF NOT EXISTS forecast_kpi_hdi_high DOUBLE;
ALTER TABLE optimization.plan_summary ADD COLUMN IF NOT EXISTS forecast_current_kpi_mean DOUBLE;  -- current
ALTER TABLE optimization.plan_summary ADD COLUMN IF NOT EXISTS forecast_current_kpi_hdi_low DOUBLE;
ALTER TABLE optimization.plan_summary ADD COLUMN IF NOT EXISTS forecast_current_kpi_hdi_high DOUBLE;
ALTER TABLE optimization.plan_summary ADD COLUMN IF NOT EXISTS forecast_uplift_mean DOUBLE;  -- rec - current
ALTER TABLE optimization.plan_summary ADD COLUMN IF NOT EXISTS forecast_uplift_hdi_low DOUBLE;
ALTER TABLE optimization.plan_summary ADD COLUMN IF NOT EXISTS forecast_uplift_hdi_high DOUBLE;
ALTER TABLE optimization.plan_summary ADD COLUMN IF NOT EXISTS forecast_prob_uplift_positive DOUBLE;
ALTER TABLE optimization.plan_summary ADD COLUMN IF NOT EXISTS forecast_controls VARCHAR;  -- known or held
CREATE TABLE IF NOT EXISTS optimization.recommendations (   -- the base plan, one row per channel
    optimization_id VARCHAR NOT NULL, market VARCHAR NOT NULL, model_id VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    channel VARCHAR, channel_group VARCHAR,
    current DOUBLE, recommended DOUBLE, change DOUBLE, change_pct DOUBLE,
    share_current DOUBLE, share_recommended DOUBLE,
    contribution_current_mean DOUBLE,
    contribution_mean DOUBLE, contribution_hdi_low DOUBLE, contribution_hdi_high DOUBLE,
    roas_current DOUBLE, roas_recommended DOUBLE,      -- posterior means
    mroas_current DOUBLE, mroas_recommended DOUBLE,    -- extra KPI per extra unit of spend, there
    hist_weekly_min DOUBLE, hist_weekly_max DOUBLE, recommended_weekly_max DOUBLE,
    range_flag VARCHAR                -- '' | above_history | below_history | switched_off | never_spent
);
ALTER TABLE optimization.recommendations ADD COLUMN IF NOT EXISTS binding_rule VARCHAR;  -- the plan rule(s)
                                  -- holding the channel there (plan-file keys)
ALTER TABLE optimization.recommendations ADD COLUMN IF NOT EXISTS binding_kind VARCHAR;
                                  -- bound | share | ratio | history cap | total | off | none
ALTER TABLE optimization.recommendations ADD COLUMN IF NOT EXISTS binding_description VARCHAR;  -- in words
ALTER TABLE optimization.recommendations ADD COLUMN IF NOT EXISTS shadow_price DOUBLE;
                                  -- objective gained per unit the rule is loosened (KPI per unit)
CREATE TABLE IF NOT EXISTS optimization.marginal_roi (   -- base plan: each channel at multiples of its
    optimization_id VARCHAR NOT NULL, market VARCHAR NOT NULL, model_id VARCHAR NOT NULL,  -- recommendation
    created_at TIMESTAMP NOT NULL,
    channel VARCHAR, level DOUBLE,    -- spend = level x recommended
    spend DOUBLE, contribution_mean DOUBLE, roas_mean DOUBLE,
    mroas_mean DOUBLE, mroas_hdi_low DOUBLE, mroas_hdi_high DOUBLE,
    is_recommended BOOLEAN, is_current BOOLEAN
);
CREATE TABLE IF NOT EXISTS optimization.weekly_allocations (   -- base plan, week by week
    optimization_id VARCHAR NOT NULL, market VARCHAR NOT NULL, model_id VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    week_index INTEGER,               -- 0 = the first week after the history
    week DATE,                        -- that week's start
    channel VARCHAR, current DOUBLE, recommended DOUBLE
);
CREATE TABLE IF NOT EXISTS optimization.scenarios (   -- the base plan and every scenario, side by side
    optimization_id VARCHAR NOT NULL, market VARCHAR NOT NULL, model_id VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    scenario VARCHAR, is_base BOOLEAN, description VARCHAR, source VARCHAR,
    status VARCHAR,                   -- ok | infeasible (no allocation meets every rule)
    conflicts VARCHAR,                -- infeasible: the conflicting rules, as named in the plan file
    objective VARCHAR, budget DOUBLE, total_current DOUBLE, total_recommended DOUBLE,
    objective_recommended DOUBLE,
    contribution_mean DOUBLE, contribution_hdi_low DOUBLE, contribution_hdi_high DOUBLE,
    roas_recommended DOUBLE,
    uplift_mean DOUBLE, uplift_hdi_low DOUBLE, uplift_hdi_high DOUBLE, prob_uplift_positive DOUBLE,
    same_mix_uplift_mean DOUBLE, n_flags INTEGER, seconds DOUBLE
);
CREATE TABLE IF NOT EXISTS optimization.plan_forecast (   -- base plan: the model's forecast, week by week
    optimization_id VARCHAR NOT NULL, market VARCHAR NOT NULL, model_id VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    week_index INTEGER, week DATE,    -- 0 = the first week after the history
    controls_known BOOLEAN,           -- the week's controls had landed (else held at their recent mean)
    kpi_mean DOUBLE, kpi_hdi_low DOUBLE, kpi_hdi_high DOUBLE,   -- under the recommended allocation
    expected_mean DOUBLE,             -- its model mean (no observation noise)
    baseline_mean DOUBLE,             -- intercept + trend + seasonality + controls
    media_mean DOUBLE,                -- media, carry-in from the real spend before the plan included
    current_kpi_mean DOUBLE, current_kpi_hdi_low DOUBLE, current_kpi_hdi_high DOUBLE,  -- current allocation
    uplift_mean DOUBLE, uplift_hdi_low DOUBLE, uplift_hdi_high DOUBLE   -- recommended - current, per draw
);
CREATE TABLE IF NOT EXISTS optimization.scenario_allocations (   -- feasible scenarios, per channel
    optimization_id VARCHAR NOT NULL, market VARCHAR NOT NULL, model_id VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    scenario VARCHAR, channel VARCHAR, current DOUBLE, recommended DOUBLE, change_pct DOUBLE,
    share_recommended DOUBLE, contribution_mean DOUBLE, mroas_recommended DOUBLE, range_flag VARCHAR
);
"""

GEO_OPTIMIZATION_DDL = """
CREATE TABLE IF NOT EXISTS optimization.geo_plan_summary (   -- one row per geo optimization: one total
    geo_optimization_id VARCHAR PRIMARY KEY,                  -- split over every market x channel
    created_at TIMESTAMP NOT NULL,
    dagster_run_id VARCHAR,
    plan VARCHAR, description VARCHAR, plan_source VARCHAR,
    plan_hash VARCHAR,                -- sha256 of the geo plan's content
    markets VARCHAR,                  -- the markets optimized together, comma-separated
    model_ids VARCHAR,                -- JSON {market: champion model_id} whose posteriors were used
    n_markets INTEGER, n_cells INTEGER,   -- cells: market x channel
    mode VARCHAR, weeks INTEGER, objective VARCHAR, risk VARCHAR,
    budget DOUBLE, budget_mode VARCHAR,   -- the national total
    total_current DOUBLE, total_recommended DOUBLE,
    objective_current DOUBLE, objective_recommended DOUBLE,
    contribution_current_mean DOUBLE,
    contribution_mean DOUBLE, contribution_hdi_low DOUBLE, contribution_hdi_high DOUBLE,
    roas_current DOUBLE, roas_recommended DOUBLE,
    uplift_mean DOUBLE, uplift_hdi_low DOUBLE, uplift_hdi_high DOUBLE,   -- national, per joint draw
    uplift_pct DOUBLE, prob_uplift_positive DOUBLE,
    same_mix_uplift_mean DOUBLE, same_mix_uplift_hdi_low DOUBLE, same_mix_uplift_hdi_high DOUBLE,
    prob_same_mix_uplift_positive DOUBLE,  -- vs every cell's current spend scaled to the new total
    n_flags INTEGER, flags VARCHAR,   -- cells outside their market's historical range
    n_draws INTEGER,                  -- joint posterior draws used
    history_end DATE,                 -- the last week of the spend histories (aligned at their end)
    seconds DOUBLE
);
CREATE TABLE IF NOT EXISTS optimization.geo_market_totals (   -- one row per market of a geo optimization
    geo_optimization_id VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL,
    market VARCHAR NOT NULL, model_id VARCHAR NOT NULL,
    current DOUBLE, recommended DOUBLE, change DOUBLE, change_pct DOUBLE,
    share_current DOUBLE, share_recommended DOUBLE,   -- of the national total
    contribution_current_mean DOUBLE,
    contribution_mean DOUBLE, contribution_hdi_low DOUBLE, contribution_hdi_high DOUBLE,
    uplift_mean DOUBLE, uplift_hdi_low DOUBLE, uplift_hdi_high DOUBLE,   -- in this market, per draw
    prob_uplift_positive DOUBLE,
    roas_current DOUBLE, roas_recommended DOUBLE
);
CREATE TABLE IF NOT EXISTS optimization.geo_allocations (   -- one row per market x channel
    geo_optimization_id VARCHAR NOT NULL, created_at TIMESTAMP NOT NULL,
    market VARCHAR NOT NULL, model_id VARCHAR NOT NULL,
    channel VARCHAR, channel_group VARCHAR,
    current DOUBLE, recommended DOUBLE, change DOUBLE, change_pct DOUBLE,
    share_current DOUBLE, share_recommended DOUBLE,   -- of the national total
    contribution_current_mean DOUBLE,
    contribution_mean DOUBLE, contribution_hdi_low DOUBLE, contribution_hdi_high DOUBLE,
    roas_current DOUBLE, roas_recommended DOUBLE, mroas_current DOUBLE, mroas_recommended DOUBLE,
    hist_weekly_min DOUBLE, hist_weekly_max DOUBLE, recommended_weekly_max DOUBLE,
    range_flag VARCHAR,               -- as optimization.recommendations, against the market's history
    binding_rule VARCHAR,             -- the geo plan's rule(s) holding the cell there (plan-file keys)
    binding_kind VARCHAR, binding_description VARCHAR,
    shadow_price DOUBLE               -- objective gained per unit the rule is loosened
);
"""

#: The geo tables; each also gets a ``latest_<name>`` view (the latest geo optimization), for BI.
GEO_OPTIMIZATION_TABLES = ("geo_plan_summary", "geo_market_totals", "geo_allocations")

#: The tables above; each also gets a ``latest_<name>`` view (each market's latest optimization), for BI.
OPTIMIZATION_TABLES = (
    "plan_summary",
    "recommendations",
    "marginal_roi",
    "weekly_allocations",
    "scenarios",
    "scenario_allocations",
    "plan_forecast",
)


def ensure_optimization(conn: duckdb.DuckDBPyConnection) -> None:
    """Create the ``optimization`` tables (per market and geo) and their ``latest_<table>`` views
    (idempotent)."""
    conn.execute(OPTIMIZATION_DDL)
    conn.execute(
        "CREATE OR REPLACE VIEW optimization.latest_plan_summary AS SELECT * FROM optimization.plan_summary "
        "QUALIFY row_number() OVER (PARTITION BY market ORDER BY created_at DESC, optimization_id DESC) = 1"
    )
    for name in OPTIMIZATION_TABLES[1:]:
        conn.execute(
            f"CREATE OR REPLACE VIEW optimization.latest_{name} AS SELECT * FROM optimization.{name} "
            "WHERE optimization_id IN (SELECT optimization_id FROM optimization.latest_plan_summary)"
        )
    conn.execute(GEO_OPTIMIZATION_DDL)
    conn.execute(
        "CREATE OR REPLACE VIEW optimization.latest_geo_plan_summary AS "
        "SELECT * FROM optimization.geo_plan_summary "
        "QUALIFY row_number() OVER (ORDER BY created_at DESC, geo_optimization_id DESC) = 1"
    )
    for name in GEO_OPTIMIZATION_TABLES[1:]:
        conn.execute(
            f"CREATE OR REPLACE VIEW optimization.latest_{name} AS SELECT * FROM optimization.{name} "
            "WHERE geo_optimization_id IN "
            "(SELECT geo_optimization_id FROM optimization.latest_geo_plan_summary)"
        )


MONITORING_DDL = """
CREATE SCHEMA IF NOT EXISTS monitoring;
CREATE TABLE IF NOT EXISTS monitoring.performance_tracking (
    market VARCHAR NOT NULL,
    model_id VARCHAR NOT NULL,        -- the champion whose forecast this is
    train_end DATE,                   -- its last training week: every tracked week is after it
    week DATE NOT NULL,               -- the forecast week (its actual KPI has arrived)
    weeks_since_fit INTEGER,          -- 1 = the first week after train_end
    actual DOUBLE,                    -- actual KPI
    pred_mean DOUBLE,                 -- posterior predictive mean, from the spend and controls that happened
    pred_sd DOUBLE,
    pred_median DOUBLE,
    pred_50_low DOUBLE, pred_50_high DOUBLE,   -- 50% central predictive interval
    pred_94_low DOUBLE, pred_94_high DOUBLE,   -- 94% central predictive interval
    in_50 BOOLEAN, in_94 BOOLEAN,     -- actual inside the interval
    error DOUBLE,                     -- actual - pred_mean (positive: the model under-forecast)
    abs_pct_error DOUBLE,             -- |error| / |actual|
    z_score DOUBLE,                   -- error / pred_sd (what the CUSUM rule accumulates)
    rolling_mape DOUBLE,              -- mean abs_pct_error over the last monitoring.rolling_weeks weeks
    crps DOUBLE,                      -- continuous ranked probability score, KPI units (lower is better)
    n_spend_flags INTEGER,            -- channels whose spend lies outside their training-window range
    spend_flags VARCHAR,              -- JSON {channel: {spend, hist_min, hist_max}} of those channels
    n_draws INTEGER,                  -- posterior draws used
    tracked_at TIMESTAMP,             -- when this row was (re)computed (UTC)
    dagster_run_id VARCHAR,
    PRIMARY KEY (market, model_id, week)
);
CREATE TABLE IF NOT EXISTS monitoring.drift_events (
    event_id VARCHAR PRIMARY KEY,     -- drift-<market>-<detected week>-<hash>; the sensor's run key
    market VARCHAR NOT NULL,
    model_id VARCHAR NOT NULL,        -- the champion that drifted
    rule VARCHAR NOT NULL,            -- the (first) rule that fired
    rules_fired VARCHAR,              -- every rule firing at detection, comma-separated
    detected_week DATE,               -- the tracked week in which the event was opened
    first_fired_week DATE,            -- first week of the run of firing weeks that led to it
    evidence VARCHAR,                 -- JSON {rule: {kind, figures...}}
    summary VARCHAR,                  -- the evidence in words
    status VARCHAR NOT NULL,          -- open | resolved
    resolution VARCHAR,               -- recovered (quiet for monitoring.recovery_weeks) | new_champion
    detected_at TIMESTAMP,            -- UTC
    resolved_at TIMESTAMP,
    resolved_week DATE,
    dagster_run_id VARCHAR,           -- the refit + reoptimization run the drift sensor started for it
    run_status VARCHAR,               -- that run's status when last seen
    new_model_id VARCHAR              -- the champion that replaced model_id (resolution new_champion)
);
CREATE TABLE IF NOT EXISTS monitoring.optimization_history (
    -- one row per reoptimization x channel; the optimization's summary figures repeat on each row
    optimization_id VARCHAR NOT NULL, market VARCHAR NOT NULL, model_id VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    dagster_run_id VARCHAR,
    trigger VARCHAR,                  -- schedule | drift | new_data | manual (run tag mmm/trigger)
    drift_event_id VARCHAR,           -- the drift event behind it (trigger drift)
    drift_rule VARCHAR,
    tags VARCHAR,                     -- JSON of the run's mmm/* tags
    conditions_active VARCHAR,        -- names of the market conditions that held, comma-separated
    conditions VARCHAR,               -- JSON [{name, evidence, plan_changes}]
    plan VARCHAR, plan_hash VARCHAR, mode VARCHAR, weeks INTEGER,
    budget DOUBLE, total_current DOUBLE, total_recommended DOUBLE,
    expected_kpi DOUBLE,              -- the model's forecast of the KPI over the plan weeks (recommended)
    expected_kpi_hdi_low DOUBLE, expected_kpi_hdi_high DOUBLE,   -- its 94% HDI (observation noise included)
    expected_contribution DOUBLE, expected_contribution_hdi_low DOUBLE, expected_contribution_hdi_high DOUBLE,
    uplift_mean DOUBLE, prob_uplift_positive DOUBLE, roas_recommended_total DOUBLE,
    channel VARCHAR, channel_group VARCHAR,
    current_spend DOUBLE, recommended_spend DOUBLE, change_pct DOUBLE, share_recommended DOUBLE,
    contribution_mean DOUBLE, roas_recommended DOUBLE, mroas_recommended DOUBLE
);
-- expected_kpi was "baseline x weeks + contribution" until the plan forecast replaced it.
ALTER TABLE monitoring.optimization_history DROP COLUMN IF EXISTS baseline_kpi;
ALTER TABLE monitoring.optimization_history ADD COLUMN IF NOT EXISTS expected_kpi_hdi_low DOUBLE;
ALTER TABLE monitoring.optimization_history ADD COLUMN IF NOT EXISTS expected_kpi_hdi_high DOUBLE;
ALTER TABLE monitoring.optimization_history ADD COLUMN IF NOT EXISTS forecast_start DATE;
ALTER TABLE monitoring.optimization_history ADD COLUMN IF NOT EXISTS forecast_end DATE;
ALTER TABLE monitoring.optimization_history ADD COLUMN IF NOT EXISTS forecast_uplift_mean DOUBLE;
ALTER TABLE monitoring.optimization_history ADD COLUMN IF NOT EXISTS forecast_uplift_hdi_low DOUBLE;
ALTER TABLE monitoring.optimization_history ADD COLUMN IF NOT EXISTS forecast_uplift_hdi_high DOUBLE;
CREATE TABLE IF NOT EXISTS monitoring.recommendation_scorecard (
    -- one row per recorded recommendation (base plan): what it promised for its weeks, what happened
    optimization_id VARCHAR PRIMARY KEY, market VARCHAR NOT NULL, model_id VARCHAR NOT NULL,
    created_at TIMESTAMP NOT NULL,
    trigger VARCHAR,                  -- why the recommendation was made (optimization_history)
    plan VARCHAR, mode VARCHAR, weeks INTEGER,
    first_week DATE, last_week DATE,  -- the plan weeks
    status VARCHAR,                   -- pending (no plan week landed) | partial | complete | no_forecast
    weeks_landed INTEGER,
    promised_kpi_mean DOUBLE, promised_kpi_hdi_low DOUBLE, promised_kpi_hdi_high DOUBLE,   -- 94% HDI
    promised_uplift_mean DOUBLE, promised_uplift_hdi_low DOUBLE, promised_uplift_hdi_high DOUBLE,
    recommended_spend DOUBLE, previous_spend DOUBLE,   -- over the plan weeks
    actual_spend DOUBLE,              -- what was spent in the plan weeks (complete only, as below)
    spend_deviation DOUBLE,           -- sum over channels |actual - recommended| / recommended total
    followed BOOLEAN,                 -- spend_deviation <= 10%: the promise applies as made
    actual_kpi DOUBLE,                -- the KPI over the plan weeks
    kpi_error DOUBLE, kpi_pct_error DOUBLE,   -- actual - promised mean; / actual
    in_interval BOOLEAN,              -- the actual KPI inside the promised 94% HDI
    counterfactual_kpi_mean DOUBLE, counterfactual_kpi_hdi_low DOUBLE, counterfactual_kpi_hdi_high DOUBLE,
                                      -- the recommendation's model, previous allocation, controls as landed
    realized_uplift_mean DOUBLE, realized_uplift_hdi_low DOUBLE, realized_uplift_hdi_high DOUBLE,
                                      -- actual - counterfactual, per draw
    uplift_in_interval BOOLEAN,       -- promised_uplift_mean inside the realized uplift's 94% HDI
    coverage_to_date DOUBLE,          -- share of the market's complete recommendations so far in_interval
    note VARCHAR,
    scored_at TIMESTAMP, dagster_run_id VARCHAR
);
"""

#: Published for BI under these names (Parquet snapshot + view in bi.duckdb).
MONITORING_TABLES = {
    "performance_tracking": "monitoring.performance_tracking",
    "drift_events": "monitoring.drift_events",
    "optimization_history": "monitoring.optimization_history",
    "recommendation_scorecard": "monitoring.recommendation_scorecard",
}


def ensure_monitoring(conn: duckdb.DuckDBPyConnection) -> None:
    """Create the ``monitoring`` tables (idempotent)."""
    conn.execute(MONITORING_DDL)
