"""Drift rules on the tracking table, and the lifecycle of a drift event. Pure functions.

:func:`evaluate` runs the configured rules (``monitoring.drift_rules``) on one champion's tracking rows
as of their last week and returns the rules that fire with their evidence. :func:`decide` turns that into
what should happen to the market's drift events: open a new event (only when none is open for the
market's champion), keep the open one (no storm of events while the same drift persists), or resolve it
(``recovered``: ``recovery_weeks`` quiet weeks in a row; ``new_champion``: the model it was about is no
longer serving).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .settings import CusumRule, DriftRule, IntervalMissRule, RollingMapeRule, SpendRangeRule

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
        if self.kind == "interval_misses":
            return f"{e['misses']} of the last {e['n']} weeks outside the {e['interval']}% interval"
        if self.kind == "rolling_mape":
            return f"MAPE {e['mape']:.1%} over {e['weeks']} weeks > {e['threshold']:.1%}"
        if self.kind == "cusum":
            side = "above" if e["s_pos"] >= e["s_neg"] else "below"
            return f"CUSUM {max(e['s_pos'], e['s_neg']):.1f} > {e['threshold']} (actuals {side} forecast)"
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


def _rule(rule: DriftRule, rows: pd.DataFrame, week: dt.date) -> Firing | None:
    if rule.kind == "interval_misses":
        assert isinstance(rule, IntervalMissRule)
        last = rows.tail(rule.n)
        if len(last) < rule.n:
            return None
        outside = ~last[f"in_{rule.interval}"].astype(bool)
        if outside.sum() < rule.k:
            return None
        return Firing(rule.name, rule.kind, week, {
            "misses": int(outside.sum()), "k": rule.k, "n": rule.n, "interval": rule.interval,
            "weeks_outside": [str(pd.Timestamp(w).date()) for w in last.loc[outside, "week"]],
        })  # fmt: skip
    if rule.kind == "rolling_mape":
        assert isinstance(rule, RollingMapeRule)
        if len(rows) < rule.min_weeks:
            return None
        last = rows.tail(rule.window)
        mape = float(last["abs_pct_error"].mean())
        if not mape > rule.threshold:
            return None
        return Firing(rule.name, rule.kind, week,
                      {"mape": mape, "threshold": rule.threshold, "weeks": len(last)})  # fmt: skip
    if rule.kind == "cusum":
        assert isinstance(rule, CusumRule)
        s_pos, s_neg = cusum(rows["z_score"].to_numpy(float), rule.slack)
        if max(s_pos[-1], s_neg[-1]) <= rule.threshold:
            return None
        return Firing(rule.name, rule.kind, week, {
            "s_pos": float(s_pos[-1]), "s_neg": float(s_neg[-1]), "threshold": rule.threshold,
            "slack": rule.slack, "mean_error": float(rows["error"].mean()),
            "last_z": [round(float(v), 2) for v in rows["z_score"].tail(6)],
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


def evaluate(rules: Sequence[DriftRule], rows: pd.DataFrame) -> list[Firing]:
    """The rules that fire on one champion's tracking rows (sorted by week) as of their last week."""
    if rows.empty:
        return []
    rows = rows.sort_values("week")
    week = pd.Timestamp(rows["week"].iloc[-1]).date()
    return [f for rule in rules if (f := _rule(rule, rows, week)) is not None]


def history(rules: Sequence[DriftRule], rows: pd.DataFrame) -> list[tuple[dt.date, list[Firing]]]:
    """:func:`evaluate` as of each tracked week in turn (what the rules said week after week)."""
    rows = rows.sort_values("week").reset_index(drop=True)
    return [
        (pd.Timestamp(rows["week"].iloc[i]).date(), evaluate(rules, rows.iloc[: i + 1]))
        for i in range(len(rows))
    ]


def quiet_weeks(rules: Sequence[DriftRule], rows: pd.DataFrame, after: dt.date | None = None) -> int:
    """Trailing tracked weeks (after ``after``) in which no rule fired."""
    count = 0
    for week, firings in reversed(history(rules, rows)):
        if (after is not None and week <= after) or firings:
            break
        count += 1
    return count


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
) -> Decision:
    """Resolve the market's open events that no longer apply, open a new one if a rule fires and none is
    open for the champion. ``rows``: the champion's tracking rows; ``open_events``: the market's open
    ``drift_events`` rows (dicts with at least ``event_id``, ``model_id``, ``detected_week``)."""
    decision = Decision(firings=evaluate(rules, rows))
    still_open = []
    for event in open_events:
        if event["model_id"] != champion_id:
            decision.resolve.append((event["event_id"], "new_champion"))
        elif quiet_weeks(rules, rows, after=pd.Timestamp(event["detected_week"]).date()) >= recovery_weeks:
            decision.resolve.append((event["event_id"], "recovered"))
        else:
            still_open.append(event)
    if still_open or not decision.firings or champion_id is None:
        return decision
    first = decision.firings[0]
    week = first.week
    # The first week of this run of firing weeks: how long the drift had been showing when detected.
    onset = week
    for past_week, past in reversed(history(rules, rows)):
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
