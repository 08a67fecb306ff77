"""Break simulation: when does drift fire after a known structural break, what runs start, where ROAS goes.

A synthetic world (seed 3, one market) whose search effect is multiplied by 0.5 from week 113 on. A
champion is fitted on the first 104 weeks (2 chains x 200 draws, CV 2 folds); then weeks 105.. arrive one
by one as landing files through the real sensors and runs on a temporary Dagster instance (new-data
sensor -> ingestion run -> follow-up sensor -> feature run with tracking and drift events -> drift
sensor). The drift run (refit, CV, optimization) is executed, two more weeks are delivered, then it stops.

At the end it prints the recommendation scorecard (``monitoring.recommendation_scorecard``: what each
recorded recommendation promised for its plan weeks against what happened) and, since one champion
issues only one or two recommendations here, a weekly replay: the first champion promising every
delivered week as a one-week plan (made after the week before it, controls held, carry-in from the
real spend, the spend that then happened as the plan), scored by the product's scorecard code
(:func:`mmm_pipeline.monitoring.scorecard.build_scorecard`). The coverage of the promised 94% intervals
before the break should sit near 94%; from the break on the actuals leave the promises.

    .venv/bin/python benchmarks/break_simulation.py [--seed 3] [--stable-weeks 8] [--post-weeks 10]
        [--multiplier 0.5] [--channel search] [--dir DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import duckdb


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--history-weeks", type=int, default=104)
    parser.add_argument("--stable-weeks", type=int, default=8)
    parser.add_argument("--post-weeks", type=int, default=10)
    parser.add_argument("--multiplier", type=float, default=0.5)
    parser.add_argument("--channel", default="search")
    parser.add_argument("--no-cv", action="store_true")
    parser.add_argument("--dir", help="project folder (default: a new temporary folder)")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    directory = Path(args.dir or tempfile.mkdtemp(prefix="break_sim_")).resolve()
    os.environ["DAGSTER_HOME"] = str(directory / "dagster_home")  # a private, temporary instance

    from mmm_testkit.simulation import SimulationSettings, run_simulation

    settings = SimulationSettings(
        seed=args.seed, history_weeks=args.history_weeks, stable_weeks=args.stable_weeks,
        post_weeks=args.post_weeks, channel=args.channel, multiplier=args.multiplier, cv=not args.no_cv,
    )  # fmt: skip
    started = time.perf_counter()
    result = run_simulation(
        directory / "project", settings, log=lambda m: print(f"[{time.perf_counter() - started:6.1f}s] {m}")
    )
    w = {x.week: x for x in result.weeks}
    print("\n=== break simulation ===")
    print(f"project: {directory / 'project'}  ({result.seconds:.0f} s)")
    print(f"break: {settings.channel} effect x{settings.multiplier} from week {result.break_week} "
          f"(week index {settings.history_weeks + settings.stable_weeks})")  # fmt: skip
    fired = result.fired_week
    if fired is None:
        print("drift: did not fire")
    else:
        lag = (fired - result.break_week).days // 7
        print(f"drift fired in week {fired} ({lag} week(s) after the break week; the break week is week 0)")
    false_alarms = [x.week for x in result.weeks if not x.post_break and x.drift_requests]
    print(f"false alarms on the {settings.stable_weeks} stable weeks: {len(false_alarms)}")
    print("\nweek         phase  actual       forecast     94% interval                 z      in94  drift")
    for x in result.weeks:
        t = x.tracked
        if not t:
            print(f"{x.week}  {'post' if x.post_break else 'pre':<5}  (new champion: no tracked week yet)")
            continue
        phase = "post" if x.post_break else "pre"
        print(
            f"{x.week}  {phase:<5}  {t['actual']:>11,.0f}  {t['pred_mean']:>11,.0f}  "
            f"[{t['pred_94_low']:>11,.0f}, {t['pred_94_high']:>11,.0f}]  {t['z_score']:+5.2f}  "
            f"{'yes' if t['in_94'] else 'NO ':<4}  {x.drift_requests} request(s), repeat {x.repeat_requests}"
        )
    print("\nruns started (after the initial load):")
    for job, run_id, why, ok in result.runs:
        if why != "initial load":
            print(f"  {run_id[:8]}  {job:<15} {why:<28} {'ok' if ok else 'FAILED'}")
    for request in result.drift_requests:
        tags = {k: v for k, v in request.tags.items() if k.startswith("mmm/")}
        print(f"drift run request: run_key={request.run_key} partition={request.partition_key}")
        for k, v in tags.items():
            print(f"    {k} = {v}")
    with duckdb.connect(str(result.cfg.warehouse_path), read_only=True) as conn:
        events = conn.execute(
            "SELECT event_id, rule, rules_fired, detected_week, status, resolution, dagster_run_id, "
            "run_status, summary FROM monitoring.drift_events"
        ).fetchall()
        history = conn.execute(
            "SELECT DISTINCT optimization_id, model_id, trigger, drift_event_id, expected_kpi "
            "FROM monitoring.optimization_history ORDER BY optimization_id"
        ).fetchall()
    print("\nmonitoring.drift_events:")
    for e in events:
        print(f"  {e}")
    print("monitoring.optimization_history (one line per optimization):")
    for h in history:
        print(f"  {h}")
    print(f"\n{settings.channel} ROAS (estimated: posterior mean [94% HDI] over each champion's window):")
    for row in result.roas.itertuples():
        print(f"  {row.model_id} (trained to {row.train_end.date()}, {row.status}): "
              f"{row.roas_mean:.3f} [{row.roas_hdi_low:.3f}, {row.roas_hdi_high:.3f}]")  # fmt: skip
    t = result.truth
    print(
        f"true ROAS: before the break {t['before_break']:.3f}, after it {t['after_break']:.3f}; "
        f"pooled over the first champion's window {t['first_fit_window']:.3f}, "
        f"over the refit's window {t['last_fit_window']:.3f}"
    )
    print_scorecard(result)
    return 0 if w else 1


def print_scorecard(result) -> None:  # noqa: ANN001 - a mmm_testkit.simulation.SimulationResult
    """The product's scorecard, then the first champion's weekly promises replayed and scored."""
    import numpy as np
    import pandas as pd

    from mmm_pipeline.ingest.categorical import with_indicators
    from mmm_pipeline.model.build import ModelData
    from mmm_pipeline.model.predict import PosteriorDraws, forecast_plan, thin
    from mmm_pipeline.model.registry import load_model
    from mmm_pipeline.monitoring.scorecard import build_scorecard, coverage
    from mmm_pipeline.optimize.recommendations import forecast_summary

    cfg = result.cfg
    with duckdb.connect(str(cfg.warehouse_path), read_only=True) as conn:
        card = conn.execute(
            "SELECT optimization_id, trigger, first_week, status, promised_kpi_mean, promised_kpi_hdi_low, "
            "promised_kpi_hdi_high, actual_kpi, in_interval, counterfactual_kpi_mean, promised_uplift_mean, "
            "realized_uplift_mean, followed FROM monitoring.recommendation_scorecard ORDER BY created_at"
        ).df()
        first = conn.execute(
            "SELECT model_id, artifact_path, train_end FROM models.model_runs WHERE market = 'all' "
            "AND status IN ('champion', 'retired') ORDER BY created_at LIMIT 1"
        ).fetchone()
        rows = conn.execute("SELECT * FROM marts.fct_modeling_weekly WHERE market = 'all' ORDER BY week").df()
    print("\nmonitoring.recommendation_scorecard (the recommendations recorded):")
    with pd.option_context("display.width", 200, "display.max_columns", 20):
        print(card.to_string(index=False) if len(card) else "  (none)")
    model = load_model(first[1])
    frame = with_indicators(rows, model.scaling.controls)
    data = ModelData.from_frame(
        frame, "all", channels=model.scaling.channels, controls=model.scaling.controls
    )
    draws = thin(PosteriorDraws.from_idata(model.idata, model.spec), 1000)
    promises, allocations = [], []
    for t in np.flatnonzero(data.dates > pd.Timestamp(first[2])):
        spent = data.spend[t : t + 1]
        pf = forecast_plan(draws, model.scaling, model.spec, data.window(0, t), data.dates[t - 1],
                           {"recommended": spent, "current": spent}, hold_weeks=13)  # fmt: skip
        opt_id = f"replay-{data.dates[t]:%Y%m%d}"
        promises.append({"optimization_id": opt_id, "market": "all", "model_id": model.model_id,
                         "created_at": data.dates[t - 1], "trigger": "replay", "plan": "one week",
                         "mode": "steady_state", "weeks": 1, **forecast_summary(pf)})  # fmt: skip
        allocations += [
            {"optimization_id": opt_id, "week_index": 0, "channel": c, "current": s, "recommended": s}
            for c, s in zip(model.scaling.channels, spent[0], strict=True)
        ]
    replay = build_scorecard(pd.DataFrame(promises), pd.DataFrame(allocations), {"all": rows},
                             lambda _id: model, max_draws=1000)  # fmt: skip
    replay["phase"] = np.where(
        pd.to_datetime(replay["first_week"]) >= pd.Timestamp(result.break_week), "post", "pre"
    )
    print(f"\nweekly promises of the first champion {model.model_id} (trained to {first[2]}), replayed:")
    print(
        "week         phase  promised     94% interval                 actual       inside  coverage so far"
    )
    for r in replay.itertuples():
        print(f"{pd.Timestamp(r.first_week).date()}  {r.phase:<5}  {r.promised_kpi_mean:>11,.0f}  "
              f"[{r.promised_kpi_hdi_low:>11,.0f}, {r.promised_kpi_hdi_high:>11,.0f}]  "
              f"{r.actual_kpi:>11,.0f}  "
              f"{'yes' if r.in_interval else 'NO ':<6}  {r.coverage_to_date:.0%}")  # fmt: skip
    for phase in ("pre", "post"):
        part = replay[(replay["phase"] == phase) & (replay["status"] == "complete")]
        stats = coverage(part).iloc[0] if len(part) else None
        if stats is not None:
            print(f"promised-interval coverage {phase}-break: {int(stats['in_interval'])} of "
                  f"{int(stats['complete'])} = {stats['coverage']:.0%} (nominal 94%); "
                  f"mean error (actual - promised) {part['kpi_error'].mean():+,.0f}")  # fmt: skip


if __name__ == "__main__":
    sys.exit(main())
