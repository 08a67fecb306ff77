"""What the report says: headline, actions, channel tables, trust checks, warnings and next steps.

Pure functions from :class:`~mmm_pipeline.report.data.ReportData` to plain dicts and lists the Jinja
templates lay out (HTML and Markdown from the same context, so the two versions say the same thing).
Figures are passed through unrounded; the templates' filters format them, and the tests format the BI
catalog's values with the same filters to check that the report shows exactly the catalog's numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .data import ReportData
from .monitoring import alarm_statement, scorecard_summary


@dataclass(frozen=True)
class Thresholds:
    """When a figure earns a plain-language warning (the model gate's values and rules of thumb)."""

    max_r_hat: float = 1.01
    min_ess: float = 400.0
    max_divergences: int = 0
    #: ROAS interval wider than this multiple of its estimate: too uncertain to act on alone.
    wide_interval: float = 1.0
    #: P(uplift > 0) below this: the plan may not beat the current allocation.
    min_prob_uplift: float = 0.8
    #: Channel changes beyond this (%) are phased in steps.
    phase_change_pct: float = 30.0
    #: 94% interval coverage in CV below this: the model's intervals are too narrow out of sample.
    min_coverage_94: float = 0.8
    #: |relative ROAS change| against the previous champion above this is worth a note.
    max_roas_change: float = 0.3
    #: Share of the effect that defines "how long it lasts".
    effect_share: float = 0.9
    #: The drift alarms' stated false-alarm rate per stable year (``monitoring``; None: monitoring off).
    false_alarm_rate_per_year: float | None = None
    #: Tracked weeks since the last drift event before an alarm may open an event.
    min_weeks_before_event: int | None = None


#: Report sections, in reading order: (anchor, title). Templates and the completeness check use them.
SECTIONS = (
    ("headline", "Headline"),
    ("actions", "Recommended actions"),
    ("channels", "Channel performance"),
    ("decomposition", "Where sales came from"),
    ("trust", "Can we trust it"),
    ("tracking", "Tracked performance and optimization history"),
    ("scorecard", "Did the last recommendations deliver?"),
    ("scenarios", "Scenarios"),
    ("next-steps", "Risks and next steps"),
)


def headline(data: ReportData) -> dict | None:
    """The recommended plan's uplift (absolute, %, 94% HDI, P>0), ROI before/after and budget."""
    plan = data.plan
    if plan is None:
        return None
    return {
        "plan": plan["plan"],
        "description": plan["description"],
        "optimization_id": plan["optimization_id"],
        "model_id": plan["model_id"],
        "horizon": "per week (steady state)"
        if plan["mode"] == "steady_state"
        else f"over {plan['weeks']} weeks",
        "uplift": plan["uplift_mean"],
        "uplift_pct": plan["uplift_pct"],
        "uplift_low": plan["uplift_hdi_low"],
        "uplift_high": plan["uplift_hdi_high"],
        "prob": plan["prob_uplift_positive"],
        "roas_current": plan["roas_current"],
        "roas_recommended": plan["roas_recommended"],
        "budget": plan["budget"],
        "budget_mode": plan["budget_mode"],
        "total_current": plan["total_current"],
        "total_recommended": plan["total_recommended"],
        "contribution_current": plan["contribution_current_mean"],
        "contribution": plan["contribution_mean"],
    }


#: A change smaller than this (% of current spend) is "keep as is", not an action.
MIN_ACTION_PCT = 0.5


def recommendation_order(data: ReportData) -> pd.DataFrame:
    """The recommendations in the one order section 2 uses everywhere (action list, chart, table): the
    largest increase first, the largest cut last."""
    return data.recommendations.sort_values(["change", "channel"], ascending=[False, True])


def shadow_unit(data: ReportData) -> str:
    """What a shadow price counts: KPI for a KPI objective, else the objective's own units."""
    kind = None if data.plan is None else data.plan.get("objective")
    return data.kpi if kind in (None, "kpi") else f"{kind} objective units"


def binding_text(r: pd.Series | dict, data: ReportData) -> str:
    """Why a channel's recommendation stops where it does, in words: the binding rule and its worth."""
    kind = r.get("binding_kind")
    if not isinstance(kind, str) or not kind:
        return ""
    price, unit = r.get("shadow_price"), shadow_unit(data)
    if kind == "off":
        return (
            f"switched off: its first unit would return {r['mroas_recommended']:.2f} {data.kpi}, "
            "less than the budget earns elsewhere"
        )
    if kind == "none":
        return "more spend would add nothing here"
    if kind == "total":
        return (
            f"held by the total budget: its next unit returns {price:.2f} {unit}, as much as the budget "
            "earns anywhere else"
        )
    return (
        f"held by the plan's {kind} rule {r['binding_rule']} ({r['binding_description']}); "
        f"loosening it would add {price:.2f} {unit} per extra unit of budget"
    )


def actions(data: ReportData) -> dict[str, list[dict]]:
    """Every recommended change (in :func:`recommendation_order`), each with its marginal-ROAS reason and
    the rule that holds it; channels kept within :data:`MIN_ACTION_PCT` are listed as unchanged."""
    rec = recommendation_order(data)
    if rec.empty:
        return {"changes": [], "unchanged": []}
    rank = rec["mroas_current"].rank(ascending=False, method="min").astype(int)

    def row(i: int, r: pd.Series) -> dict:
        why = (
            f"the next unit of spend returns {r['mroas_current']:.2f} {data.kpi} here now "
            f"(rank {rank[i]} of {len(rec)} channels), {r['mroas_recommended']:.2f} at the recommended level"
        )
        if r["recommended"] == 0 and r["current"] > 0:
            verb = "Stop"
        elif r["current"] == 0:
            verb = "Start"
        else:
            verb = "Increase" if r["change"] > 0 else "Decrease"
        return {**r.to_dict(), "why": why, "verb": verb, "held_by": binding_text(r, data)}

    def changed(r: pd.Series) -> bool:
        if r["current"] > 0:
            return abs(r["recommended"] / r["current"] - 1) * 100 >= MIN_ACTION_PCT
        return r["recommended"] > 0

    return {
        "changes": [row(i, r) for i, r in rec.iterrows() if changed(r)],
        "unchanged": [str(r["channel"]) for _, r in rec.iterrows() if not changed(r)],
    }


def recommendation_rows(data: ReportData) -> list[dict]:
    """Section 2's table rows (same order as the action list), each with its binding rule in words."""
    return [
        {**r.to_dict(), "held_by": binding_text(r, data)} for _, r in recommendation_order(data).iterrows()
    ]


def adstock_lengths(data: ReportData, share: float) -> pd.DataFrame:
    """Per channel: mean lag of the effect and weeks until ``share`` of it has acted (posterior means)."""
    rows = []
    for channel, frame in data.adstock.groupby("channel", sort=False):
        lags, weights = frame.sort_values("lag")[["lag", "mean"]].to_numpy().T
        cumulative = weights.cumsum() / weights.sum()
        rows.append(
            {
                "channel": channel,
                "immediate": float(weights[0]),
                "mean_lag": float((lags * weights).sum() / weights.sum()),
                "weeks_to_share": int(lags[np.argmax(cumulative >= share - 1e-9)]) + 1,
            }
        )
    return pd.DataFrame(rows)


def last_quarter(data: ReportData) -> pd.DataFrame:
    """ROAS by channel in the last complete quarter of the champion's window (from the draws)."""
    periods = data.periods
    if periods.empty:
        return periods
    quarters = periods[(periods["period_type"] == "quarter") & periods["complete"]]
    if quarters.empty:
        return quarters
    last = quarters["period_start"].max()
    return quarters[quarters["period_start"] == last].sort_values("roas_mean", ascending=False)


def waterfall_totals(data: ReportData) -> pd.DataFrame:
    """Each component's total over the window (sum of weekly means: a sum of means is the mean of sums)."""
    totals = data.decomposition.groupby("component", sort=False)["mean"].sum()
    base = ["intercept", "trend", "seasonality", "controls"]
    labels = {"intercept": "baseline"}
    order = [c for c in base if c in totals.index] + list(
        data.channels.sort_values("contribution_mean", ascending=False)["channel"]
    )
    return pd.DataFrame(
        {"component": order, "label": [labels.get(c, c) for c in order], "total": [totals[c] for c in order]}
    )


def scenario_rows(data: ReportData) -> dict:
    """The scenarios, and whether a spend column is worth showing (only when some scenario spends less
    than its budget: otherwise it repeats the budget) and whether a budget cut with a gain needs saying."""
    rows = data.scenarios.to_dict("records")
    spends_less = any(
        abs(r["total_recommended"] - r["budget"]) > 0.005 * r["budget"]
        for r in rows
        if pd.notna(r.get("budget")) and pd.notna(r.get("total_recommended"))
    )
    cut_with_gain = [
        r["scenario"]
        for r in rows
        if pd.notna(r.get("uplift_mean")) and pd.notna(r.get("total_current"))
        and r["budget"] < r["total_current"] and r["uplift_mean"] > 0
    ]  # fmt: skip
    return {"rows": rows, "show_spend": spends_less, "cut_with_gain": cut_with_gain}


def geo_budget(data: ReportData) -> dict | None:
    """The latest geo budget (one total across markets), by market, this market marked; None without one."""
    if data.geo_plan is None or data.geo_markets.empty:
        return None
    rows = [{**r, "is_this": r["market"] == data.market} for r in data.geo_markets.to_dict("records")]
    return {"plan": data.geo_plan.to_dict(), "rows": rows}


def cv_overall(data: ReportData) -> pd.DataFrame:
    metrics = data.cv_metrics
    if metrics.empty:
        return metrics
    return metrics[metrics["scope"] == "overall"].sort_values("crps")


def data_quality(data: ReportData) -> dict:
    checks = data.checks
    return {
        "n_checks": len(checks),
        "passed": sum(c.status == "SUCCEEDED" for c in checks),
        "failed": [c for c in checks if c.status == "FAILED"],
        "not_run": [c for c in checks if c.status not in ("SUCCEEDED", "FAILED")],
        "deliveries": data.deliveries.to_dict("records"),
        "quarantined": int(data.deliveries.loc[data.deliveries["outcome"] == "quarantined", "files"].sum())
        if not data.deliveries.empty
        else 0,
    }


def tracking_summary(data: ReportData) -> dict | None:
    """Weeks tracked since go-live, interval hit rates, the latest rolling MAPE and mean CRPS."""
    tracked = data.tracking
    if tracked.empty:
        return None

    def mean(column: str) -> float | None:
        return float(tracked[column].astype(float).mean()) if column in tracked else None

    latest = tracked.sort_values("week").iloc[-1]
    return {
        "weeks": len(tracked),
        "first_week": tracked["week"].min(),
        "last_week": tracked["week"].max(),
        "in_interval_50": mean("in_50"),
        "in_interval_94": mean("in_94"),
        "rolling_mape": latest.get("rolling_mape"),
        "crps": mean("crps"),
        "mean_error": mean("error"),
    }


def history_summary(data: ReportData) -> dict | None:
    """How many recommendations were made, since when, and why (triggers); None below two, where there
    is no trend to show yet."""
    runs = data.history.drop_duplicates("optimization_id") if not data.history.empty else data.history
    if len(runs) < 2:
        return None
    return {
        "optimizations": len(runs),
        "first": runs["created_at"].min(),
        "last": runs["created_at"].max(),
        "triggers": runs["trigger"].fillna("manual").value_counts().to_dict(),
        "drift_events": len(data.drift_events),
    }


def _percent(share: object) -> float | None:
    """A share (0.125) in percent (12.5), as the ``signed_pct`` filter takes it; None when missing."""
    return None if share is None or pd.isna(share) else float(share) * 100


def what_changed(data: ReportData) -> dict:
    """What changed since the previous champion and why: new data weeks, restated data, a drift event,
    a config or code change, lift tests; and each channel's ROAS before and after, flagging a move out of
    the previous 94% interval that nothing on that list explains."""
    run, previous = data.run, data.previous_run
    if previous is None:
        return {"first": True, "reasons": [], "channels": [], "unexplained": []}
    reasons = []
    before, after = pd.Timestamp(previous["train_end"]), pd.Timestamp(run["train_end"])
    weeks = (after - before).days // 7
    if weeks > 0:
        reasons.append(
            f"{weeks} new week{'s' if weeks != 1 else ''} of data "
            f"({(before + pd.Timedelta(weeks=1)).date()} to {after.date()})"
        )
    elif weeks < 0:
        reasons.append(f"a shorter window: the data now end {after.date()}, before {before.date()}")
    prints = run.get("data_fingerprint"), previous.get("data_fingerprint")
    if weeks == 0 and all(isinstance(f, str) for f in prints) and prints[0] != prints[1]:
        reasons.append(f"restated data in the same window (weeks up to {after.date()}: a corrected delivery)")
    events = data.drift_events
    if not events.empty:  # opened on the previous champion, or resolved by this one
        events = events[
            (events["new_model_id"] == run["model_id"]) | (events["model_id"] == previous["model_id"])
        ]
    for e in events.itertuples():
        detected = pd.Timestamp(e.detected_week).date()
        reasons.append(f"drift event {e.event_id} ({e.rule}, detected in the week of {detected})")
    config_changed = run.get("config_hash") != previous.get("config_hash")
    if config_changed:
        reasons.append("the model configuration changed (spec, priors, sampler, channels or controls)")
    code = previous.get("code_version"), run.get("code_version")
    if code[0] != code[1]:
        reasons.append(f"the pipeline code changed ({code[0]} → {code[1]})")
    tests = previous.get("n_lift_tests"), run.get("n_lift_tests")
    if tests[0] != tests[1]:
        reasons.append(f"lift tests in the fit: {tests[0]} → {tests[1]}")
    if run.get("scaling_source") == "fresh":
        reasons.append("the scaling was recomputed (channels or controls changed, or keep_scaling is off)")
    anchor = run.get("refresh_anchor")
    if isinstance(anchor, str):
        reasons.append(
            f"taken in by reweighting the draws of {anchor} (model.refresh; Pareto k "
            f"{float(run['pareto_k']):.2f}): ROAS moved by what the new weeks say, not by new sampling noise"
        )
    drift = data.roas_drift.to_dict("records")
    channels = [{**r, "change_pct": _percent(r["relative_change"])} for r in drift]
    # A move out of the previous interval is explained by a drift event or a new configuration; new
    # weeks alone should not do it (benchmarks/bench_refresh.py).
    explained = config_changed or not events.empty
    unexplained = [] if explained else [r["channel"] for r in channels if not r["within_champion_hdi"]]
    return {
        "first": False,
        "previous_id": previous["model_id"],
        "previous_end": before,
        "reasons": reasons or ["nothing recorded changed: the same data and configuration were refitted"],
        "channels": channels,
        "unexplained": unexplained,
    }


def prior_sensitivity(data: ReportData) -> dict | None:
    """The latest prior-sensitivity computation: the alternative prior set, on which champion and how
    long ago, each channel's ROAS under both with the material flag; None before any."""
    table = data.sensitivity
    if table.empty:
        return None
    first = table.iloc[0]
    age = (pd.Timestamp(data.run["train_end"]) - pd.Timestamp(first["train_end"])).days // 7
    return {
        "alternative": first["alternative"],
        "model_id": first["model_id"],
        "on_champion": first["model_id"] == data.model_id,
        "weeks_old": age,
        "computed_at": first["computed_at"],
        "sampler": f"{int(first['chains'])} × {int(first['draws'])}",
        "alt_max_r_hat": first["alt_max_r_hat"],
        "alt_divergences": int(first["alt_divergences"]),
        "rows": [
            {**r, "difference_pct": _percent(r["relative_difference"])} for r in table.to_dict("records")
        ],
        "material": [str(c) for c in table.loc[table["material"].astype(bool), "channel"]],
    }


def warnings(data: ReportData, t: Thresholds) -> list[str]:
    """Plain-language warnings wherever a figure the reader relies on is weak."""
    out: list[str] = []
    run = data.run
    newest = data.latest_run
    if newest is not None and newest["model_id"] != data.model_id:
        reason = newest["promotion_blocked_by"] or newest["gate_failures"] or "not promoted"
        out.append(
            f"The newest refit ({newest['model_id']}, trained to {pd.Timestamp(newest['train_end']).date()}) "
            f"was {newest['status']}: {reason}. This report shows the last champion."
        )
    if run["max_r_hat"] > t.max_r_hat or run["divergences"] > t.max_divergences:
        out.append(
            f"The sampler's convergence is borderline (max R-hat {run['max_r_hat']:.3f}, "
            f"{int(run['divergences'])} divergences): treat small differences between channels with care."
        )
    if min(run["min_ess_bulk"], run["min_ess_tail"]) < t.min_ess:
        out.append(
            f"Few effective posterior draws (min ESS {min(run['min_ess_bulk'], run['min_ess_tail']):.0f}): "
            "intervals are themselves uncertain."
        )
    wide = [
        f"{r.channel} ({r.roas_hdi_low:.2f} to {r.roas_hdi_high:.2f} around {r.roas_mean:.2f})"
        for r in data.channels.itertuples()
        if r.roas_mean > 0 and r.roas_hdi_high - r.roas_hdi_low > t.wide_interval * r.roas_mean
    ]
    if wide:
        out.append(
            f"The ROAS of {len(wide)} of {len(data.channels)} channels is very uncertain (94% interval wider "
            "than the estimate itself): "
            + "; ".join(wide)
            + ". Rank channels with care."
            + (
                " (That they count as stable in section 5 is no contradiction: the cross-validation folds "
                "agree on each estimate, but the data leave each one a wide range.)"
                if not data.cv_stability.empty and not data.cv_stability["roas_unstable"].any()
                else ""
            )
        )
    for r in data.recommendations.itertuples():
        if r.range_flag:
            out.append(
                f"{r.channel}: the recommended weekly spend ({r.recommended_weekly_max:,.0f}) lies outside "
                f"its historical range ({r.hist_weekly_min:,.0f} to {r.hist_weekly_max:,.0f}, "
                f"{r.range_flag.replace('_', ' ')}): the model extrapolates there."
            )
    if data.plan is not None:
        if data.plan["prob_uplift_positive"] < t.min_prob_uplift:
            out.append(
                f"The plan beats the current allocation in only {data.plan['prob_uplift_positive']:.0%} of "
                "posterior draws: the expected gain is not assured."
            )
        if data.plan["model_id"] != data.model_id:
            out.append(
                f"The latest recommendation ({data.plan['optimization_id']}) was made with model "
                f"{data.plan['model_id']}, not the current champion {data.model_id}."
            )
    overall = cv_overall(data)
    if not overall.empty:
        mmm = overall[overall["model"] == "mmm"]
        if not mmm.empty:
            m = mmm.iloc[0]
            for b in overall[(overall["model"] != "mmm") & (overall["crps"] <= m["crps"])].itertuples():
                out.append(
                    f"Out of sample (weeks held back in cross-validation), the simple "
                    f"{b.model.replace('_', '-')} baseline forecast {data.kpi} as well as or better than the "
                    f"media model: its forecast error (CRPS, in {data.kpi} per week; lower is better) was "
                    f"{b.crps:,.0f} against the model's {m['crps']:,.0f}. The model's forecasts add little; "
                    "its channel estimates rest on the fit, not on a forecasting edge."
                )
            if pd.notna(m["coverage_94"]) and m["coverage_94"] < t.min_coverage_94:
                out.append(
                    f"Only {m['coverage_94']:.0%} of held-out weeks fell inside the model's 94% interval: "
                    "its intervals are too narrow out of sample."
                )
    elif run.get("cv_status") in ("skipped", "failed"):
        out.append(
            f"The model was not cross-validated ({run['cv_status']}: {run.get('cv_note') or 'no folds'})."
        )
    for r in data.cv_stability.itertuples():
        if r.roas_unstable:
            out.append(
                f"{r.channel}: ROAS moves a lot between CV folds (coefficient of variation {r.roas_cv:.0%}, "
                f"{r.roas_min:.2f} to {r.roas_max:.2f}): its estimate depends on which weeks are seen."
            )
    for r in data.roas_drift.itertuples():
        if pd.notna(r.relative_change) and abs(r.relative_change) > t.max_roas_change:
            out.append(
                f"{r.channel}: ROAS moved {r.relative_change:+.0%} against the previous champion "
                f"({r.champion_roas_mean:.2f} to {r.roas_mean:.2f})."
            )
    dq = data_quality(data)
    if dq["failed"]:
        out.append(
            "Data-quality checks failed: "
            + ", ".join(f"{c.check} on {c.asset}" for c in dq["failed"])
            + " (the previous good tables were kept)."
        )
    if dq["quarantined"]:
        out.append(f"{dq['quarantined']} landing file(s) were quarantined and are not in the model's data.")
    return out


def next_steps(data: ReportData, t: Thresholds, n_experiments: int = 2) -> dict[str, list[str]]:
    """Phasing of large changes, and experiments where the ROAS is least certain."""
    phasing = []
    big = [
        f"{r.channel} ({r.current:,.0f} → {r.recommended:,.0f}, {r.change_pct:+.0f}%)"
        for r in data.recommendations.itertuples()
        if pd.notna(r.change_pct) and abs(r.change_pct) > t.phase_change_pct
    ]
    if big:
        phasing.append(
            f"Changes above {t.phase_change_pct:.0f}% — "
            + ", ".join(big)
            + " — are best made in steps: e.g. "
            "half now, the rest after four weeks in which the tracked forecast stays within its interval."
        )
    flagged = [r.channel for r in data.recommendations.itertuples() if r.range_flag]
    if flagged:
        phasing.append(
            "Spend outside the historical range ("
            + ", ".join(flagged)
            + ") is where the model extrapolates: "
            "go there last and watch the tracked forecast error."
        )
    channels = data.channels.assign(
        relative_width=lambda f: (f["roas_hdi_high"] - f["roas_hdi_low"]) / f["roas_mean"].abs()
    ).sort_values("relative_width", ascending=False)
    experiments = [
        f"{r.channel}: ROAS {r.roas_mean:.2f} with 94% interval {r.roas_hdi_low:.2f} to "
        f"{r.roas_hdi_high:.2f} (spend share {r.spend / channels['spend'].sum():.0%}): a geo holdout or "
        "go-dark test would narrow it most; feed the result back as a prior."
        for r in channels.head(n_experiments).itertuples()
    ]
    return {"phasing": phasing, "experiments": experiments}


def context(data: ReportData, t: Thresholds) -> dict:
    """Everything the templates need, in reading order."""
    return {
        "data": data,
        "run": data.run,
        "kpi": data.kpi,
        "market": data.market,
        "sections": SECTIONS,
        "headline": headline(data),
        "actions": actions(data),
        "recommendation_rows": recommendation_rows(data),
        "shadow_unit": shadow_unit(data),
        "channels": data.channels.to_dict("records"),
        "last_quarter": last_quarter(data).to_dict("records"),
        "adstock": adstock_lengths(data, t.effect_share).to_dict("records"),
        "effect_share": t.effect_share,
        "waterfall": waterfall_totals(data).to_dict("records"),
        "cv": cv_overall(data).to_dict("records"),
        "stability": data.cv_stability.to_dict("records"),
        "dq": data_quality(data),
        "tracking": tracking_summary(data),
        "history": history_summary(data),
        "alarms": alarm_statement(t.false_alarm_rate_per_year, t.min_weeks_before_event),
        "scorecard": scorecard_summary(data),
        "scenarios": scenario_rows(data),
        "geo": geo_budget(data),
        "warnings": warnings(data, t),
        "next_steps": next_steps(data, t),
        "changes": what_changed(data),
        "sensitivity": prior_sensitivity(data),
        "thresholds": t,
    }
