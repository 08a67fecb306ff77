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

Dagster's ``RunRequest(stale_assets_only=True)`` cannot be used instead: it asks for the status of an
asset without a partition, which Dagster answers FRESH for every partitioned asset.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import dagster as dg
from dagster import DagsterInstance
from dagster._core.asset_graph_view.asset_graph_view import AssetGraphView
from dagster._core.definitions.assets.graph.base_asset_graph import BaseAssetGraph
from dagster._core.definitions.data_version import CachingStaleStatusResolver, StaleStatus
from dagster._core.definitions.temporal_context import TemporalContext
from dagster._time import get_current_datetime

#: Observed on every run before deciding (its data version is the content hash of a market's inputs);
#: never itself a reason to run the model job.
INPUTS_KEY = dg.AssetKey("market_training_data")
FIT_KEY = dg.AssetKey("model_fit")


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
    needs a run but one of them is stale, the first market runs just them. ``force_fit``
    (``run --refit``) adds the fit as a root for every market (every selected asset if the selection
    leaves the fit out).
    """
    keys = set(job_keys) - {INPUTS_KEY}
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
