"""Drift rules on the tracking table, and the lifecycle of a drift event. Pure functions.

:func:`evaluate` runs the configured rules (``monitoring.drift_rules``) on a market's tracking rows
(:func:`lineage`: each week as the champion serving then forecast it, since the market's latest drift
event) as of their last week and returns the rules that fire with their evidence. Rules without a fixed
threshold take theirs from a :class:`~mmm_pipeline.monitoring.calibration.Calibration` of the champion
(its stated false-alarm rate per year). :func:`decide` turns that into what should happen to the
market's drift events: open a new event (only when none is open for the market's champion and the
lineage holds ``min_weeks`` tracked weeks since the latest event), keep the open one (no storm of
events while the same drift persists), or resolve it (``recovered``: ``recovery_weeks`` quiet weeks
in a row; ``new_champion``: the model it was about is no longer serving).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .calibration import ERROR_RULES, Calibration, fixed_threshold, shift_fit
from .settings import ChangepointRule, CusumRule, DriftRule, IntervalMissRule, RollingMapeRule, SpendRangeRule

OPEN = "open"
RESOLVED = "resolved"


@dataclass(frozen=True)
class Firing:
    """A rule that fired as of ``week``: its name, kind and evidence (JSON-ready)."""

    rule: str
    kind: str
    week: dt.date
    evidence: dict

    def summary(self) -> str:
        e = self.evidence
        rate = (
            f" (calibrated: {e['false_alarm_rate_per_year']:.0%} false alarms per stable year)"
            if e.get("calibrated")
            else ""
        )
        if self.kind == "interval_misses":
            where = f"the {e['interval']}% interval" if e.get("interval") else f"|z| {e['bound']:.2f}"
            return f"{e['misses']} of the last {e['n']} weeks outside {where}{rate}"
        if self.kind == "rolling_mape":
            reference = e.get("reference_mape")
            which = "CV" if e.get("calibration_source") == "cv" else "in-sample"
            relative = ""
            if reference:
                relative = f" ({e['threshold'] / reference:.1f}x the {which} MAPE {reference:.1%})"
            return f"MAPE {e['mape']:.1%} over {e['weeks']} weeks > {e['threshold']:.1%}{relative}{rate}"
        if self.kind == "cusum":
            side = "above" if e["s_pos"] >= e["s_neg"] else "below"
            return (
                f"CUSUM {max(e['s_pos'], e['s_neg']):.1f} > {e['threshold']:.1f} (actuals {side} forecast)"
                f"{rate}"
            )
        if self.kind == "changepoint":
            side = "above" if e["shift_sd"] > 0 else "below"
            return (
                f"actuals {abs(e['shift_sd']):.1f} forecast sds {side} the forecast since {e['since']}"
                f" (changepoint t {e['t']:.1f} > {e['threshold']:.1f}){rate}"
            )
        if self.kind == "spend_range":
            return f"spend outside the training range: {', '.join(e['channels'])}"
        return self.rule


def cusum(z: np.ndarray, slack: float) -> tuple[np.ndarray, np.ndarray]:
    """Two-sided CUSUM paths ``(S+, S-)`` of standardized residuals ``z`` with allowance ``slack``."""
    s_pos, s_neg = np.zeros(len(z)), np.zeros(len(z))
    up = down = 0.0
    for i, value in enumerate(np.nan_to_num(np.asarray(z, dtype=float))):
        up = max(0.0, up + value - slack)
        down = max(0.0, down - value - slack)
        s_pos[i], s_neg[i] = up, down
    return s_pos, s_neg


def _threshold(rule: DriftRule, calibration: Calibration | None) -> tuple[float | None, dict]:
    """The threshold a rule uses now and what the evidence says about it: the configured one, else the
    champion's calibrated one; ``None`` when the rule needs a calibration and there is none."""
    if calibration is not None and rule.name in calibration.thresholds:
        return calibration.thresholds[rule.name], calibration.rule_evidence(rule.name)
    return fixed_threshold(rule), {"calibrated": False}


def _rule(
    rule: DriftRule, rows: pd.DataFrame, week: dt.date, calibration: Calibration | None
) -> Firing | None:
    threshold, stated = _threshold(rule, calibration) if rule.kind in ERROR_RULES else (None, {})
    if rule.kind in ERROR_RULES and threshold is None:
        return None  # calibrated rule, no calibration: the caller states that it was not evaluated
    if rule.kind == "interval_misses":
        assert isinstance(rule, IntervalMissRule) and threshold is not None
        last = rows.tail(rule.n)
        if len(last) < rule.n:
            return None
        if rule.interval is not None:
            outside = ~last[f"in_{rule.interval}"].astype(bool)
        else:
            outside = last["z_score"].abs() > threshold
        if outside.sum() < rule.k:
            return None
        return Firing(rule.name, rule.kind, week, {
            "misses": int(outside.sum()), "k": rule.k, "n": rule.n, "interval": rule.interval,
            **({} if rule.interval is not None else {"bound": round(threshold, 4)}),
            "weeks_outside": [str(pd.Timestamp(w).date()) for w in last.loc[outside, "week"]], **stated,
        })  # fmt: skip
    if rule.kind == "rolling_mape":
        assert isinstance(rule, RollingMapeRule) and threshold is not None
        if len(rows) < rule.min_weeks:
            return None
        last = rows.tail(rule.window)
        mape = float(last["abs_pct_error"].mean())
        if not mape > threshold:
            return None
        evidence = {"mape": mape, "threshold": round(threshold, 4), "weeks": len(last), **stated}
        return Firing(rule.name, rule.kind, week, evidence)
    if rule.kind == "cusum":
        assert isinstance(rule, CusumRule) and threshold is not None
        s_pos, s_neg = cusum(rows["z_score"].to_numpy(float), rule.slack)
        if max(s_pos[-1], s_neg[-1]) <= threshold:
            return None
        return Firing(rule.name, rule.kind, week, {
            "s_pos": float(s_pos[-1]), "s_neg": float(s_neg[-1]), "threshold": round(threshold, 4),
            "slack": rule.slack, "mean_error": float(rows["error"].mean()),
            "last_z": [round(float(v), 2) for v in rows["z_score"].tail(6)], **stated,
        })  # fmt: skip
    if rule.kind == "changepoint":
        assert isinstance(rule, ChangepointRule) and threshold is not None and calibration is not None
        last = rows.tail(rule.window)
        t, start, shift = shift_fit(last["z_score"].to_numpy(float), calibration.z_null)
        if not t > threshold:
            return None
        since = last.iloc[start:]
        return Firing(rule.name, rule.kind, week, {
            "t": round(t, 4), "threshold": round(threshold, 4), "shift_sd": round(shift, 4),
            "since": str(pd.Timestamp(since["week"].iloc[0]).date()), "weeks_since": len(since),
            "mean_error_since": float(since["error"].mean()), "null_z": calibration.z_null.as_dict(),
            "last_z": [round(float(v), 2) for v in rows["z_score"].tail(6)], **stated,
        })  # fmt: skip
    if rule.kind == "spend_range":
        assert isinstance(rule, SpendRangeRule)
        last = rows.tail(rule.n)
        if len(last) < rule.n:
            return None
        counts: dict[str, int] = {}
        for text in last["spend_flags"].dropna():
            for channel, f in json.loads(text).items():
                if f["spend"] > f["hist_max"] * rule.multiple or f["spend"] < f["hist_min"] / rule.multiple:
                    counts[channel] = counts.get(channel, 0) + 1
        hit = sorted(c for c, n in counts.items() if n >= rule.k)
        if not hit:
            return None
        return Firing(rule.name, rule.kind, week, {
            "channels": hit, "weeks_outside": {c: counts[c] for c in hit}, "k": rule.k, "n": rule.n,
            "multiple": rule.multiple,
        })  # fmt: skip
    raise ValueError(f"unknown drift rule kind {rule.kind!r}")


def evaluate(
    rules: Sequence[DriftRule], rows: pd.DataFrame, calibration: Calibration | None = None
) -> list[Firing]:
    """The rules that fire on one champion's tracking rows (sorted by week) as of their last week.
    Error rules without a fixed threshold use ``calibration``'s; without one they are not evaluated."""
    if rows.empty:
        return []
    rows = rows.sort_values("week")
    week = pd.Timestamp(rows["week"].iloc[-1]).date()
    return [f for rule in rules if (f := _rule(rule, rows, week, calibration)) is not None]


def uncalibrated(rules: Sequence[DriftRule], calibration: Calibration | None) -> list[str]:
    """Names of the rules that need a calibration and have none (they cannot fire)."""
    return [r.name for r in rules if r.kind in ERROR_RULES and _threshold(r, calibration)[0] is None]


def history(
    rules: Sequence[DriftRule], rows: pd.DataFrame, calibration: Calibration | None = None
) -> list[tuple[dt.date, list[Firing]]]:
    """:func:`evaluate` as of each tracked week in turn (what the rules said week after week)."""
    rows = rows.sort_values("week").reset_index(drop=True)
    return [
        (pd.Timestamp(rows["week"].iloc[i]).date(), evaluate(rules, rows.iloc[: i + 1], calibration))
        for i in range(len(rows))
    ]


def quiet_weeks(
    rules: Sequence[DriftRule],
    rows: pd.DataFrame,
    after: dt.date | None = None,
    calibration: Calibration | None = None,
) -> int:
    """Trailing tracked weeks (after ``after``) in which no rule fired."""
    count = 0
    for week, firings in reversed(history(rules, rows, calibration)):
        if (after is not None and week <= after) or firings:
            break
        count += 1
    return count


def lineage(tracking: pd.DataFrame, since: dt.date | None = None) -> pd.DataFrame:
    """The market's tracked weeks as its champions forecast them, one row per week after ``since``: each
    week's row from the model with the latest ``train_end`` before it (the champion serving when the
    week arrived, forecasting it from the closest origin).

    Why not the current champion's rows alone: with a refit every week (``schedule.refit``) each
    champion serves one week and tracks at most one, so rules over 4-8 weeks and
    ``min_weeks_before_event`` would never be met and no alarm could ever fire. The champions in a row are
    one lineage of forecasts; only a drift event breaks it (``since``: the market's latest event's
    detected week), so a refit that an event started is still judged on its own first weeks only (no
    refit chains), while a scheduled refit does not reset the count.
    """
    if tracking.empty:
        return tracking
    rows = tracking
    if since is not None:
        rows = rows[pd.to_datetime(rows["week"]) > pd.Timestamp(since)]
    rows = rows.assign(_train_end=pd.to_datetime(rows["train_end"]))
    rows = rows.sort_values(["week", "_train_end"]).drop_duplicates("week", keep="last")
    return rows.drop(columns="_train_end").sort_values("week").reset_index(drop=True)


def event_id(market: str, model_id: str, week: dt.date) -> str:
    """Deterministic id of the event a champion's drift opens in a week (also the sensor's run key)."""
    digest = hashlib.sha256(f"{market}|{model_id}|{week}".encode()).hexdigest()[:8]
    return f"drift-{market}-{week:%Y%m%d}-{digest}"


@dataclass
class Decision:
    """What to do with a market's drift events after a tracking update."""

    resolve: list[tuple[str, str]] = field(default_factory=list)  # (event_id, recovered | new_champion)
    open: dict | None = None  # the new event's row (see ``DRIFT_EVENTS_DDL``)
    firings: list[Firing] = field(default_factory=list)


def decide(
    rules: Sequence[DriftRule],
    rows: pd.DataFrame,
    market: str,
    champion_id: str | None,
    open_events: Sequence[dict],
    recovery_weeks: int,
    calibration: Calibration | None = None,
    min_weeks: int = 1,
) -> Decision:
    """Resolve the market's open events that no longer apply, open a new one if a rule fires, none is
    open for the champion and ``rows`` hold at least ``min_weeks`` weeks (a champion that just replaced a
    drifted one is not judged on its first weeks: no chain of refits). ``rows``: the market's
    :func:`lineage` since its latest drift event (the champion's own rows when it has served since);
    ``open_events``: the market's open ``drift_events`` rows (dicts with at
    least ``event_id``, ``model_id``, ``detected_week``); ``calibration``: the champion's calibrated
    thresholds (see :func:`evaluate`)."""
    decision = Decision(firings=evaluate(rules, rows, calibration))
    still_open = []
    for event in open_events:
        if event["model_id"] != champion_id:
            decision.resolve.append((event["event_id"], "new_champion"))
        elif (
            quiet_weeks(rules, rows, pd.Timestamp(event["detected_week"]).date(), calibration)
            >= recovery_weeks
        ):
            decision.resolve.append((event["event_id"], "recovered"))
        else:
            still_open.append(event)
    if still_open or not decision.firings or champion_id is None or len(rows) < min_weeks:
        return decision
    first = decision.firings[0]
    week = first.week
    # The first week of this run of firing weeks: how long the drift had been showing when detected.
    onset = week
    for past_week, past in reversed(history(rules, rows, calibration)):
        if not past:
            break
        onset = past_week
    decision.open = {
        "event_id": event_id(market, champion_id, week),
        "market": market,
        "model_id": champion_id,
        "rule": first.rule,
        "rules_fired": ", ".join(f.rule for f in decision.firings),
        "detected_week": week,
        "first_fired_week": onset,
        "evidence": json.dumps({f.rule: {"kind": f.kind, **f.evidence} for f in decision.firings}),
        "summary": "; ".join(f"{f.rule}: {f.summary()}" for f in decision.firings),
        "status": OPEN,
    }
    return decision
