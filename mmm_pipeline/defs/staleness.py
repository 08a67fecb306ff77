"""What the model job must materialize, per market, as Dagster itself reports it.

One decision for every launcher: ``mmm-pipeline run`` (runner), the daemon (``stale_model_sensor``) and
the UI's "unsynced" badge all read Dagster's stale status (``CachingStaleStatusResolver``, the resolver
behind the UI's ``staleStatus`` field), asked per market partition. What makes an asset stale lives on
the assets themselves:

- ``market_training_data`` (per market) carries a data version: the content hash of the modeling rows
  and the lift tests the market's fit reads. A corrected value or lift test changes it; a re-hash of the
  same content does not, so nothing downstream goes stale.
- ``model_fit``'s code version is the model config's hash; ``budget_recommendation``'s the content of
  the plan files and the optimization settings; ``executive_report``'s the report's thresholds.
- A new fit or recommendation gets its model id / optimization id as data version, so whatever read the
  previous one is stale until it has run again (also after a crash between steps).

Dagster's resolver does not pass staleness downstream (a stale fit does not mark the registry stale
before the fit has run), so the roots it reports are closed over their downstream assets in the model
job: materializing a root would make those stale next.

The feature side is asked the same way, per week (:func:`stale_week_ranges`): the weekly staging
partitions depend week by week (identity mapping) on the external ``landed_weeks`` asset, whose data version
per week is the content hash of that week's landed rows (``defs/assets/ingestion.py``), so exactly the
weeks whose content changed are stale, plus every week never built (missing) and every week after a
model's SQL changed (new code version). One upstream partition per week stays far below Dagster's
``SKIP_PARTITION_DATA_VERSION_DEPENDENCY_THRESHOLD`` (100), above which it stops tracking partition
dependencies; what it does not follow is a time-window parent under an ``AllPartitionMapping`` (the
lift tests a market's fit reads), hence the re-hashed ``market_training_data``.

Dagster's ``RunRequest(stale_assets_only=True)`` cannot be used instead: it asks for the status of an
asset without a partition, which Dagster answers FRESH for every partitioned asset.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field

import dagster as dg
from dagster import DagsterInstance
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView
from dagster._core.definitions.assets.graph.base_asset_graph import BaseAssetGraph
from dagster._core.definitions.data_version import (
    DATA_VERSION_TAG,
    CachingStaleStatusResolver,
    StaleStatus,
    extract_data_provenance_from_entry,
)
from dagster._core.definitions.partitions.definition import TimeWindowPartitionsDefinition
from dagster._core.definitions.temporal_context import TemporalContext
from dagster._core.events import DagsterEventType
from dagster._time import get_current_datetime

#: Observed on every run before deciding (its data version is the content hash of a market's inputs);
#: never itself a reason to run the model job.
INPUTS_KEY = dg.AssetKey("market_training_data")
FIT_KEY = dg.AssetKey("model_fit")
#: Which market conditions hold, re-evaluated like the inputs (its data version feeds the recommendation).
CONDITIONS_KEY = dg.AssetKey("market_conditions")
#: Materialized on every run before deciding, never a reason for a model run themselves.
OBSERVED_KEYS = (INPUTS_KEY, CONDITIONS_KEY)


@dataclass(frozen=True)
class MarketPlan:
    """What one market's model run must materialize, and why (Dagster's words)."""

    market: str
    roots: dict[dg.AssetKey, str] = field(default_factory=dict)  # asset -> "missing" or its stale causes
    selection: tuple[dg.AssetKey, ...] = ()  # roots and everything below them in the job

    @property
    def refit(self) -> bool:
        return FIT_KEY in self.roots

    def reasons(self) -> str:
        return "; ".join(f"{k.to_user_string()} {why}" for k, why in sorted(self.roots.items()))


def stale_resolver(instance: DagsterInstance, asset_graph: BaseAssetGraph) -> CachingStaleStatusResolver:
    """Dagster's stale-status resolver over ``asset_graph`` as the instance stands now."""
    view = AssetGraphView(
        temporal_context=TemporalContext(effective_dt=get_current_datetime(), last_event_id=None),
        instance=instance,
        asset_graph=asset_graph,
    )
    return CachingStaleStatusResolver(instance=instance, asset_graph=asset_graph, loading_context=view)


def _why(resolver: CachingStaleStatusResolver, key: dg.AssetKey, partition: str | None) -> str | None:
    status = resolver.get_status(key, partition)
    if status == StaleStatus.MISSING:
        return "is missing"
    if status == StaleStatus.STALE:
        causes = resolver.get_stale_causes(key, partition)
        return ", ".join(
            cause.reason + (f" ({cause.dependency.asset_key.to_user_string()})" if cause.dependency else "")
            for cause in causes
        )
    return None


def model_plans(
    instance: DagsterInstance,
    asset_graph: BaseAssetGraph,
    job_keys: Iterable[dg.AssetKey],
    markets: Iterable[str],
    force_fit: bool = False,
) -> list[MarketPlan]:
    """Per market, the model job's assets Dagster reports missing or stale, closed downstream.

    ``job_keys``: the model job's assets (or the part of them a user selected). Unpartitioned assets
    of the job (performance tracking, drift events) go with the first market that runs; if no market
    needs a run but one of them is stale, the first market's plan holds just them (the runner runs them
    once after every market's own part: :func:`model_phases`). ``force_fit``
    (``run --refit``) adds the fit as a root for every market (every selected asset if the selection
    leaves the fit out).
    """
    keys = set(job_keys) - set(OBSERVED_KEYS)
    resolver = stale_resolver(instance, asset_graph)
    partitioned = {k for k in keys if asset_graph.get(k).is_partitioned}
    shared_roots = {k: why for k in sorted(keys - partitioned) if (why := _why(resolver, k, None))}
    plans = []
    for market in sorted(markets):
        roots = {k: why for k in sorted(partitioned) if (why := _why(resolver, k, market))}
        if force_fit:  # the fit, or with a selection that leaves it out, every selected asset
            for key in [FIT_KEY] if FIT_KEY in keys else sorted(partitioned):
                roots.setdefault(key, "runs on request (--refit)")
        plans.append(MarketPlan(market, roots))
    runs = [p for p in plans if p.roots]
    if shared_roots and plans:
        first = runs[0] if runs else plans[0]
        plans[plans.index(first)] = MarketPlan(first.market, {**first.roots, **shared_roots})
    return [
        MarketPlan(p.market, p.roots, _closure(asset_graph, p.roots, keys)) if p.roots else p for p in plans
    ]


def _closure(asset_graph: BaseAssetGraph, roots: Iterable[dg.AssetKey], keys: set[dg.AssetKey]) -> tuple:
    """``roots`` and their descendants among ``keys``, in a stable order."""
    below = dg.AssetSelection.assets(*roots).downstream().resolve(asset_graph)
    return tuple(sorted(below & keys))


def asset_names(keys: Iterable[dg.AssetKey]) -> str:
    """``keys`` as the UI names them, comma-separated (for log lines)."""
    return ", ".join(k.to_user_string() for k in keys)


@dataclass(frozen=True)
class ModelPhases:
    """The model job's stale work cut where it meets the job's unpartitioned assets, in the order every
    launcher runs it: each market's ``own`` part, then the ``shared`` unpartitioned assets once, then
    each market's part ``below`` them (what reads them: its report).

    The unpartitioned assets (performance tracking, drift events, the scorecard) cover every market's
    champion, so one run of them after all the markets' own runs does what each market's run would
    otherwise redo for every market, one writer at a time."""

    own: dict[str, tuple[dg.AssetKey, ...]]
    shared: tuple[dg.AssetKey, ...]
    below: dict[str, tuple[dg.AssetKey, ...]]


def model_phases(
    asset_graph: BaseAssetGraph, selections: dict[str, Iterable[dg.AssetKey]]
) -> ModelPhases:
    """``selections`` (market -> what its run must materialize) cut into :class:`ModelPhases`.

    Cut over all markets at once: :func:`model_plans` puts the stale unpartitioned assets in one
    market's plan only, and another market's report that reads them still belongs after them."""
    selections = {market: tuple(keys) for market, keys in selections.items()}
    shared = tuple(
        sorted(
            {k for keys in selections.values() for k in keys if not asset_graph.get(k).is_partitioned},
            key=dg.AssetKey.to_user_string,
        )
    )
    under = dg.AssetSelection.assets(*shared).downstream().resolve(asset_graph) if shared else set()
    own = {m: tuple(k for k in keys if k not in under) for m, keys in selections.items()}
    below = {m: tuple(k for k in keys if k in under and k not in shared) for m, keys in selections.items()}
    return ModelPhases(
        {m: keys for m, keys in own.items() if keys}, shared, {m: keys for m, keys in below.items() if keys}
    )


@dataclass(frozen=True)
class WeekRange:
    """A contiguous run of week partitions to rebuild in one run (a single-run backfill)."""

    first: str  # partition keys (the weeks' first days, ISO dates), both included
    last: str
    weeks: int
    why: str  # e.g. "12 missing, 1 stale"

    def label(self) -> str:
        return f"{self.first}..{self.last}"


def stale_week_ranges(
    instance: DagsterInstance, asset_graph: BaseAssetGraph, job_keys: Iterable[dg.AssetKey]
) -> list[WeekRange]:
    """The week partitions of the job's weekly assets that Dagster reports missing or stale (in any of
    them), as contiguous ranges: one run each, so the historical load is one run and a corrected old
    week plus a new week are two small runs. The same status the UI shows on each partition.

    Only weeks that ever held landed data count (an observation on a weekly parent, ``landed_weeks``):
    the weekly partitions run to today, so after the last delivered week the UI shows partitions
    "missing" that hold nothing to build; a run over them would only write empty weeks.
    """
    weekly = _weekly(asset_graph, job_keys)
    keys = weeks_with_data(instance, asset_graph, weekly)
    missing, maybe = {}, {}
    for key in weekly:
        missing[key], maybe[key] = _maybe_stale(instance, asset_graph, key, keys)
    resolver = stale_resolver(instance, asset_graph)
    status: dict[int, StaleStatus] = {}
    for i, partition in enumerate(keys):
        found = [StaleStatus.MISSING for k in weekly if partition in missing[k]] or [
            s
            for k in weekly
            if partition in maybe[k] and (s := resolver.get_status(k, partition)) != StaleStatus.FRESH
        ]
        if found:
            status[i] = StaleStatus.MISSING if StaleStatus.MISSING in found else StaleStatus.STALE
    ranges: list[list[int]] = []
    for i in sorted(status):
        consecutive = ranges and ranges[-1][-1] == i - 1 and _next_week(keys[i - 1]) == keys[i]
        if consecutive:
            ranges[-1].append(i)
        else:
            ranges.append([i])
    out = []
    for run in ranges:
        counts = {s: sum(status[i] == s for i in run) for s in (StaleStatus.MISSING, StaleStatus.STALE)}
        why = ", ".join(f"{n} {s.value.lower()}" for s, n in counts.items() if n)
        out.append(WeekRange(keys[run[0]], keys[run[-1]], len(run), why))
    return out


def _weekly(asset_graph: BaseAssetGraph, job_keys: Iterable[dg.AssetKey]) -> list[dg.AssetKey]:
    return sorted(
        k for k in job_keys if isinstance(asset_graph.get(k).partitions_def, TimeWindowPartitionsDefinition)
    )


def weeks_with_data(
    instance: DagsterInstance, asset_graph: BaseAssetGraph, job_keys: Iterable[dg.AssetKey]
) -> list[str]:
    """The week partitions of the job's weekly assets that ever held landed data: those with an
    observation on one of their external weekly parents (``landed_weeks``), in order."""
    weekly = _weekly(asset_graph, job_keys)
    if not weekly:
        return []
    sources = {p for k in weekly for p in asset_graph.get(k).parent_keys if asset_graph.get(p).is_external}
    observed: set[str] = set()
    for key in sources:
        observed |= set(
            instance.event_log_storage.get_latest_tags_by_partition(
                key, DagsterEventType.ASSET_OBSERVATION, [DATA_VERSION_TAG]
            )
        )
    return [k for k in asset_graph.get(weekly[0]).partitions_def.get_partition_keys() if k in observed]


def _maybe_stale(
    instance: DagsterInstance, asset_graph: BaseAssetGraph, key: dg.AssetKey, partitions: list[str]
) -> tuple[set[str], set[str]]:
    """The partitions of ``key`` that are missing, and those the resolver could report stale; the
    others are fresh.

    Asking the resolver about every week costs two event-log queries per asset and week (about a minute
    for four years of four staging models on a busy machine), so this reads the asset's
    materializations once and each parent's latest events once, and applies the resolver's own rules
    and preconditions: no materialization is missing (the resolver's first rule); stale needs another
    code version or a parent event after the one the partition's materialization read
    (``input_storage_ids``). The resolver then decides on those candidates alone.
    """
    latest: dict[str, dg.EventLogRecord] = {}
    cursor = None
    while True:
        page = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=key), limit=5000, cursor=cursor
        )
        for record in page.records:
            part = record.partition_key
            if part is not None and (part not in latest or record.storage_id > latest[part].storage_id):
                latest[part] = record
        if not page.has_more:
            break
        cursor = page.cursor
    node = asset_graph.get(key)
    parent_ids: dict[dg.AssetKey, dict[str, int] | int | None] = {}
    for parent in node.parent_keys:
        parent_node = asset_graph.get(parent)
        event = (
            DagsterEventType.ASSET_OBSERVATION
            if parent_node.is_external
            else DagsterEventType.ASSET_MATERIALIZATION
        )
        if parent_node.partitions_def == node.partitions_def:  # week by week (identity mapping)
            by_week = instance.event_log_storage.get_latest_storage_id_by_partition(parent, event)
            parent_ids[parent] = dict(by_week)
        elif not parent_node.is_partitioned:
            record = instance.get_latest_data_version_record(parent, parent_node.is_external)
            parent_ids[parent] = record.storage_id if record else None
        else:
            return set(), set(partitions)  # another mapping: leave it all to the resolver
    missing, out = set(), set()
    for partition in partitions:
        record = latest.get(partition)
        if record is None:
            missing.add(partition)
            continue
        provenance = extract_data_provenance_from_entry(record.event_log_entry)
        if provenance is None or (node.code_version and provenance.code_version != node.code_version):
            out.add(partition)
            continue
        for parent, ids in parent_ids.items():
            read = provenance.input_storage_ids.get(parent)
            newest = ids.get(partition) if isinstance(ids, dict) else ids
            if newest is not None and (read is None or newest > read):
                out.add(partition)
                break
    return missing, out


def _next_week(partition: str) -> str:
    return (dt.date.fromisoformat(partition) + dt.timedelta(days=7)).isoformat()
