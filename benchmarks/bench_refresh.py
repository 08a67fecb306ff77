"""Refresh stability (issue 18, item 4): how far each channel's ROAS mean moves when one week is added.

Why: a weekly pipeline must not flip its advice on one week of data. This replays what the pipeline does
every week: a champion fitted on the first weeks, then ``--refits`` consecutive +1-week refits through
the product's refit path (:func:`mmm_pipeline.model.refit.refit_market`: the configured model, the
champion's frozen scaling (:func:`~mmm_pipeline.model.refit.choose_scaling`), the compiled graph reused
from the process-wide cache, the remedies ladder as configured), each refit promoted in turn. Per channel
it prints the ROAS mean's move per refresh, ``|roas_k / roas_{k-1} - 1|`` (median and max over the
refits), and whether the ROAS mean ever left the previous refit's 94% HDI; per world the same over all
channels against the goal lines (median <= 0.5%, max <= 2%).

Next to each move it prints the Monte Carlo noise floor: a fresh posterior's mean carries a Monte Carlo
error (MCSE, ``az.mcse`` of the ROAS draws), so two fits of the same data already differ by about
``sqrt(mcse_k^2 + mcse_{k-1}^2)``; ``z`` is the move in those units. Moves of ``|z|`` about 1 are sampling
noise (more effective draws shrink them, by ``1/sqrt(ESS)``); moves of many ``z`` are the data's.

The product's means use zero-variance control variates (``ModelSpec.control_variates``, default on:
the Stein controls from the gradients nutpie stores, regressed out of each quantity's draws, see
:func:`mmm_pipeline.model.insights.stein_controls`); the plain means of the same draws are measured
alongside ("plain means"), so the before/after is on the very same fits. ``--plain-means`` switches the
option off (no gradients stored).

Worlds: the case study (``mmm_pipeline/demo/case_study_weekly.csv`` with its demo config's model section:
logistic saturation, 5 Fourier modes, l_max 6, the 22 holiday flags) and synthetic worlds
(``mmm_testkit.synthetic.generate_world``, seeds ``--seeds``, the default model spec). Sampler settings
come from ``--chains/--draws/--tune`` (several ``--draws`` values, comma-separated, run one after the
other on the same worlds: the before/after of "more draws").

With PyMC-Marketing 0.19.2 importable (the benchmark venv, ``benchmarks/README.md``), its ``MMM`` (same
channels, controls, adstock, saturation, seasonality, spend-share channel prior; nutpie, seed fixed) runs
the same refreshes on the case study, side by side (``--skip-pymc-marketing`` to leave it out).

Two refresh modes (``--refresh``, the product's ``model.refresh.mode``): ``sample`` (the default)
samples every refit afresh; ``importance`` (:mod:`mmm_pipeline.model.refresh`): after the sampled champion,
each refit reweights the champion's draws by the new weeks' likelihood (Pareto-smoothed importance
sampling), sampling again only when the Pareto k or the gate rules that out. Part of every move is the
new week's information, which no estimator of the posterior mean removes (the posterior mean given
one more week differs from the last one even when both are computed exactly). The reweighted replay
measures it: its moves are that information plus the error left after reusing the same draws, which is
printed as each move's standard error from the spread of the per-chain moves (for independent refits
it is about the noise floor).

Full size (the product's 4 x 1000 draws, 13 refits, case study and 3 synthetic worlds)::

    nohup /work/bench-venv/bin/python -u benchmarks/bench_refresh.py --refits 13 --chains 4 \
        --draws 1000 --tune 1000 --seeds 0,1,2 > /tmp/bench_refresh.log 2>&1 &

A smoke size for a busy machine: ``--refits 6 --chains 2 --draws 500 --tune 500 --seeds 0``.
"""

from __future__ import annotations

import argparse
import importlib.util
import time
from dataclasses import dataclass
from pathlib import Path

import arviz as az
import numpy as np
import pandas as pd
import yaml

from mmm_pipeline.model import insights
from mmm_pipeline.model.build import ModelData
from mmm_pipeline.model.predict import PosteriorDraws
from mmm_pipeline.model.refit import RefitOutcome, choose_scaling, refit_market
from mmm_pipeline.model.refresh import Anchor, importance_weights, log_likelihood
from mmm_pipeline.model.sensitivity import run_sensitivity
from mmm_pipeline.model.settings import ModelConfig
from mmm_pipeline.model.spec import HALFNORMAL_UNIT_SD, ModelSpec
from mmm_testkit.adapters import model_data
from mmm_testkit.synthetic import generate_world

DEMO = Path(__file__).resolve().parent.parent / "mmm_pipeline" / "demo"
CASE_STUDY_CSV = DEMO / "case_study_weekly.csv"
CASE_STUDY_CONFIG = DEMO / "case_study_config.yaml"
CASE_STUDY_CHANNELS = {
    "direct_mail": "mdsp_dm",
    "insert": "mdsp_inst",
    "newspaper": "mdsp_nsp",
    "radio": "mdsp_audtr",
    "tv": "mdsp_vidtr",
    "social": "mdsp_so",
    "online_display": "mdsp_on",
}
GOAL_MEDIAN, GOAL_MAX = 0.005, 0.02


@dataclass
class World:
    name: str
    data: ModelData
    model: ModelConfig


@dataclass
class Snapshot:
    """One refit's ROAS per channel: mean, 94% HDI and the Monte Carlo standard error of the mean."""

    weeks: int
    table: pd.DataFrame  # index channel: roas_mean, roas_hdi_low, roas_hdi_high, roas_mcse
    chain_means: np.ndarray  # (chain, C) each chain's plain ROAS mean
    seconds: float
    reused_graph: bool
    attempts: int
    gate_failures: list[str]
    refresh: str = "sampled"


def case_study_world(sampler: dict, weeks: int | None = None) -> World:
    """The case study as the demo imports it: 7 channels, the 22 holiday flags, its config's model;
    its first ``weeks`` weeks (all by default)."""
    frame = pd.read_csv(CASE_STUDY_CSV, parse_dates=["wk_strt_dt"]).sort_values("wk_strt_dt")
    controls = [c for c in frame.columns if c.startswith("hldy_")]
    data = ModelData(
        pd.DatetimeIndex(frame["wk_strt_dt"]), frame[list(CASE_STUDY_CHANNELS.values())].to_numpy(float),
        frame[controls].to_numpy(float), frame["sales"].to_numpy(float), tuple(CASE_STUDY_CHANNELS),
        tuple(controls),
    )  # fmt: skip
    section = yaml.safe_load(CASE_STUDY_CONFIG.read_text())["model"]
    section["spec"]["sampler"] = {**section["spec"].get("sampler", {}), **sampler}
    return World("case_study", data.window(0, weeks), ModelConfig.model_validate(section))


def synthetic_world(seed: int, weeks: int, sampler: dict) -> World:
    world = generate_world(seed=seed, n_weeks=weeks)
    model = ModelConfig(spec=ModelSpec.model_validate({"sampler": sampler}))
    return World(f"synthetic_{seed}", model_data(world), model)


def mean_mcse(draws: np.ndarray) -> np.ndarray:
    """``(C,)`` the Monte Carlo standard error of the mean of draws ``(chain, draw, C)`` (ArviZ)."""
    dataset = az.convert_to_dataset({"x": draws})
    return az.mcse(dataset, method="mean")["x"].to_numpy()


def roas_snapshot(outcome, window: ModelData) -> tuple[pd.DataFrame, np.ndarray]:  # noqa: ANN001
    """The fit's channel ROAS: the product's channel summary (mean, HDI; the mean with control variates
    when ``spec.control_variates`` is on), the plain mean of the draws and its MCSE; and each chain's
    plain mean ``(chain, C)``."""
    result = outcome.fit
    table = outcome.tables["channel_summary"].set_index("channel")
    contribution, _ = insights.channel_draws(
        result.idata, result.scaling, result.spec, window, result.carry_in
    )
    chains = result.idata.posterior.sizes["chain"]
    with np.errstate(divide="ignore", invalid="ignore"):
        roas = contribution / window.spend.sum(axis=0)
    roas = roas.reshape(chains, -1, roas.shape[-1])
    out = table[["roas_mean", "roas_hdi_low", "roas_hdi_high"]].copy()
    out["roas_plain_mean"] = roas.mean(axis=(0, 1))
    out["roas_mcse"] = mean_mcse(roas)
    return out, roas.mean(axis=1)


def replay_ours(
    world: World,
    first_weeks: int,
    refits: int,
    log,  # noqa: ANN001
    sensitivity: bool = False,
    refresh: str = "sample",
) -> tuple[list[Snapshot], RefitOutcome]:
    """The champion on ``first_weeks`` weeks, then ``refits`` consecutive +1-week refits, each promoted.
    ``refresh``: ``sample`` samples every refit; ``importance`` passes the last sampled fit as the
    anchor (as the ``model_fit`` asset does under ``model.refresh.mode: importance``).
    With ``sensitivity`` the champion's prior sensitivity (``model.sensitivity`` defaults) is printed.
    Returns the snapshots and the first champion's outcome."""
    snapshots, champion, anchor, first = [], None, None, None
    for k in range(refits + 1):
        window = world.data.window(0, first_weeks + k)
        scaling, source = choose_scaling(window, champion, world.model.keep_scaling)
        start = time.perf_counter()
        outcome = refit_market(window, world.model, scaling, source, anchor=anchor)
        seconds = time.perf_counter() - start
        first = first or outcome
        if refresh == "importance" and outcome.refresh_anchor is None:
            # as the model_fit asset: the last sampled champion is the anchor of the refreshes after it
            anchor = Anchor(f"{world.name}-{k}", outcome.fit.idata, window)
        table, chain_means = roas_snapshot(outcome, window)
        snap = Snapshot(
            window.n_weeks, table, chain_means, seconds, outcome.fit.reused_graph,
            len(outcome.attempts), outcome.gate_failures, outcome.refresh_note or "sampled",
        )  # fmt: skip
        snapshots.append(snap)
        log(
            f"  [{world.name}] fit {k} ({window.n_weeks} weeks): {seconds:.1f} s, graph reused "
            f"{snap.reused_graph}, attempts {snap.attempts}, gate "
            f"{'passed' if not snap.gate_failures else 'FAILED: ' + '; '.join(snap.gate_failures)}"
            f"; {snap.refresh}"
        )
        if sensitivity and k == 0:
            alt = run_sensitivity(
                window, outcome.fit.spec, scaling, outcome.tables["channel_summary"], world.model.sensitivity
            )
            log(
                f"  [{world.name}] prior sensitivity ({alt.alternative}; {alt.chains} x {alt.draws} draws, "
                f"{alt.seconds:.0f} s, graph reused {alt.reused_graph}, max R-hat {alt.max_r_hat:.3f}):\n"
                + alt.table.round(3).to_string(index=False)
            )
        # Every refit is promoted (a champion's scaling is inherited, so the first one's stays frozen).
        champion = {"model_id": f"{world.name}-{k}", "scaling": scaling.model_dump_json()}
    return snapshots, first


def own_moves(champion: RefitOutcome, data: ModelData, first_weeks: int, refits: int) -> pd.DataFrame:
    """The posterior's own move per refresh: each window's ROAS posterior mean from the first champion's
    draws reweighted by the later weeks' likelihood (PSIS, the product's :mod:`~mmm_pipeline.model.refresh`
    weights) without resampling, so the same draws serve every week and their Monte Carlo error cancels
    in the move. Per refresh and channel: the relative move, its SE from the per-chain moves, the move of
    the ROAS window alone (the same draws unweighted, one more week in the sum) and the Pareto k."""
    result = champion.fit
    draws = PosteriorDraws.from_idata(result.idata, result.spec)
    chains = result.idata.posterior.sizes["chain"]

    def loglik(window: ModelData) -> np.ndarray:
        return log_likelihood(draws, result.spec, result.scaling, window, result.carry_in)

    base = loglik(data.window(0, first_weeks))
    rows, previous = [], None
    for k in range(refits + 1):
        window = data.window(0, first_weeks + k)
        weights, pareto_k = importance_weights(loglik(window) - base)
        contribution, _ = insights.channel_draws(draws, result.scaling, result.spec, window, result.carry_in)
        with np.errstate(divide="ignore", invalid="ignore"):
            roas = contribution / window.spend.sum(axis=0)
        per_chain = weights.reshape(chains, -1)
        chain_means = np.einsum("cd,cdk->ck", per_chain, roas.reshape(chains, -1, roas.shape[-1]))
        current = (weights @ roas, chain_means / per_chain.sum(axis=1, keepdims=True), roas.mean(axis=0))
        if previous is not None:
            delta = current[1] - previous[1]
            se = delta.std(axis=0, ddof=1) / np.sqrt(chains)
            for i, channel in enumerate(data.channels):
                rows.append({
                    "weeks": window.n_weeks, "channel": channel, "pareto_k": pareto_k,
                    "rel_move": abs(current[0][i] / previous[0][i] - 1),
                    "move_se": se[i] / abs(previous[0][i]),
                    "window_move": abs(current[2][i] / previous[2][i] - 1),
                })  # fmt: skip
        previous = current
    return pd.DataFrame(rows)


def replay_pymc_marketing(world: World, first_weeks: int, refits: int, log) -> list[Snapshot]:  # noqa: ANN001
    """PyMC-Marketing's MMM on the same refreshes (case study spec; refitted from scratch each week, as
    its API does: it has no frozen scaling or compiled-graph reuse to offer)."""
    import warnings

    from pymc_extras.prior import Prior
    from pymc_marketing.mmm import MMM, GeometricAdstock, LogisticSaturation

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)
    data, spec = world.data, world.model.spec
    channels = [f"spend_{c}" for c in data.channels]
    controls = [f"control_{k}" for k in data.control_names]
    frame = pd.DataFrame(data.spend, columns=channels).assign(date=data.dates)
    frame[controls] = data.controls
    frame["t"] = np.arange(len(frame), dtype=float)
    snapshots = []
    for k in range(refits + 1):
        n = first_weeks + k
        share = data.spend[:n].sum(axis=0) / data.spend[:n].sum()
        model = MMM(
            date_column="date", channel_columns=channels, control_columns=[*controls, "t"],
            adstock=GeometricAdstock(l_max=spec.l_max), saturation=LogisticSaturation(),
            yearly_seasonality=spec.n_fourier,
            model_config={"saturation_beta": Prior(
                "HalfNormal", sigma=HALFNORMAL_UNIT_SD * len(share) * share, dims="channel"
            )},
        )  # fmt: skip
        s = spec.sampler
        start = time.perf_counter()
        model.fit(
            frame.iloc[:n], pd.Series(data.kpi[:n]), chains=s.chains, draws=s.draws, tune=s.tune,
            target_accept=s.target_accept, nuts_sampler="nutpie", random_seed=s.seed, progressbar=False,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        contribution = model.compute_channel_contribution_original_scale().sum("date")
        roas = (contribution / data.spend[:n].sum(axis=0)).transpose("chain", "draw", "channel").to_numpy()
        flat = roas.reshape(-1, roas.shape[-1])
        bounds = az.hdi(flat, hdi_prob=0.94) if flat.ndim == 1 else np.array(
            [az.hdi(flat[:, i], hdi_prob=0.94) for i in range(flat.shape[1])]
        )  # fmt: skip
        table = pd.DataFrame(
            {
                "roas_mean": flat.mean(axis=0),
                "roas_hdi_low": bounds[:, 0],
                "roas_hdi_high": bounds[:, 1],
                "roas_mcse": mean_mcse(roas),
            },
            index=pd.Index(list(data.channels), name="channel"),
        )
        divergences = int(model.idata.sample_stats["diverging"].sum())
        snapshots.append(
            Snapshot(
                n,
                table,
                roas.mean(axis=1),
                seconds,
                False,
                1,
                [f"{divergences} divergences"] if divergences else [],
            )  # fmt: skip
        )
        log(
            f"  [{world.name} / PyMC-Marketing] fit {k} ({n} weeks): {seconds:.1f} s, "
            f"{divergences} divergences"
        )
    return snapshots


def moves(snapshots: list[Snapshot], column: str = "roas_mean") -> pd.DataFrame:
    """One row per refresh and channel: relative move of the ROAS mean (``column``: the product's, or
    ``roas_plain_mean``), its z against the plain mean's MC noise floor, and whether the new mean lies
    outside the previous fit's 94% HDI."""
    rows = []
    for k in range(1, len(snapshots)):
        before, after = snapshots[k - 1].table, snapshots[k].table
        delta = snapshots[k].chain_means - snapshots[k - 1].chain_means  # (chain, C)
        move_se = delta.std(axis=0, ddof=1) / np.sqrt(delta.shape[0])
        for i, channel in enumerate(after.index):
            b, a = before.loc[channel], after.loc[channel]
            noise = float(np.hypot(a["roas_mcse"], b["roas_mcse"]))
            mean = abs(b[column])
            rows.append(
                {
                    "refit": k,
                    "weeks": snapshots[k].weeks,
                    "channel": channel,
                    "roas_before": b[column],
                    "roas_after": a[column],
                    "rel_move": abs(a[column] / b[column] - 1),
                    "noise_floor": noise / mean,
                    "move_se": move_se[i] / mean,
                    "z": (a[column] - b[column]) / noise if noise > 0 else np.nan,
                    "left_hdi": not (b["roas_hdi_low"] <= a[column] <= b["roas_hdi_high"]),
                }
            )
    return pd.DataFrame(rows)


def summarize(name: str, table: pd.DataFrame) -> dict:
    per_channel = table.groupby("channel", sort=False).agg(
        median_move=("rel_move", "median"), max_move=("rel_move", "max"),
        noise_floor=("noise_floor", "median"), median_abs_z=("z", lambda z: float(np.median(np.abs(z)))),
        left_hdi=("left_hdi", "sum"),
    )  # fmt: skip
    print(f"\n{name}: per channel over {table['refit'].nunique()} refreshes")
    print(
        per_channel.to_string(
            formatters={
                "median_move": "{:.2%}".format, "max_move": "{:.2%}".format,
                "noise_floor": "{:.2%}".format, "median_abs_z": "{:.2f}".format,
            }
        )
    )  # fmt: skip
    median, worst = float(table["rel_move"].median()), float(table["rel_move"].max())
    left = int(table["left_hdi"].sum())
    print(
        f"{name}: all channels: median move {median:.2%} (goal <= {GOAL_MEDIAN:.1%}: "
        f"{'met' if median <= GOAL_MEDIAN else 'MISSED'}), max {worst:.2%} (goal <= {GOAL_MAX:.0%}: "
        f"{'met' if worst <= GOAL_MAX else 'MISSED'}), median MC noise floor "
        f"{float(table['noise_floor'].median()):.2%}, median SE of a move (per-chain spread) "
        f"{float(table['move_se'].median()):.2%}, ROAS means outside the previous 94% HDI: {left}"
    )
    return {"run": name, "median_move": median, "max_move": worst,
            "noise_floor": float(table["noise_floor"].median()),
            "move_se": float(table["move_se"].median()),
            "left_hdi": left}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--refits", type=int, default=13)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--draws", default="1000", help="comma-separated: each value is a run of its own")
    parser.add_argument("--tune", type=int, default=1000)
    parser.add_argument("--seeds", default="0,1,2", help="synthetic world seeds; empty for none")
    parser.add_argument("--weeks", type=int, default=156, help="synthetic world length (all of it used)")
    parser.add_argument(
        "--case-study-weeks", type=int, default=None,
        help="use the first N case-study weeks (default all 209; 208 keeps up to 12 refits on one graph)",
    )  # fmt: skip
    parser.add_argument("--skip-case-study", action="store_true")
    parser.add_argument("--skip-pymc-marketing", action="store_true")
    parser.add_argument("--no-remedies", action="store_true", help="one attempt per refit")
    parser.add_argument(
        "--refresh", default="sample,importance",
        help="comma-separated refresh modes to replay: sample (every refit sampled), importance",
    )  # fmt: skip
    parser.add_argument(
        "--sensitivity", action="store_true", help="also print each champion's prior sensitivity"
    )
    parser.add_argument(
        "--plain-means", action="store_true", help="spec.control_variates off (the product before)"
    )
    parser.add_argument(
        "--likelihood", choices=["normal", "student_t"], default=None,
        help="override every world's spec.likelihood (student_t: outlier weeks move the posterior less)",
    )  # fmt: skip
    args = parser.parse_args()

    def log(message: str) -> None:
        print(message, flush=True)

    peer = not args.skip_pymc_marketing and importlib.util.find_spec("pymc_marketing") is not None
    if not args.skip_pymc_marketing and not peer:
        log("PyMC-Marketing is not importable here: its column is left out (see benchmarks/README.md)")
    results = []
    for draws in (int(d) for d in args.draws.split(",")):
        sampler = {"chains": args.chains, "draws": draws, "tune": args.tune}
        worlds = [] if args.skip_case_study else [case_study_world(sampler, args.case_study_weeks)]
        worlds += [synthetic_world(int(s), args.weeks, sampler) for s in args.seeds.split(",") if s]
        for world in worlds:
            if args.likelihood:
                world.model = world.model.model_copy(
                    update={"spec": world.model.spec.model_copy(update={"likelihood": args.likelihood})}
                )
            if args.plain_means:
                world.model = world.model.model_copy(
                    update={"spec": world.model.spec.model_copy(update={"control_variates": False})}
                )
            if args.no_remedies:
                world.model = world.model.model_copy(
                    update={"remedies": world.model.remedies.model_copy(update={"enabled": False})}
                )
            first = world.data.n_weeks - args.refits
            label = f"{world.name}, {args.chains} x {draws} draws"
            log(f"\n== {label}: champion on {first} weeks, then {args.refits} refits of +1 week")
            for mode in args.refresh.split(","):
                snaps, champion = replay_ours(world, first, args.refits, log, args.sensitivity, mode)
                if args.refits == 0:
                    break
                if mode == "importance":
                    own = own_moves(champion, world.data, first, args.refits)
                    log(
                        f"the posterior's own move, {label} (the first champion's draws reweighted, no "
                        f"resampling): median {own['rel_move'].median():.2%}, "
                        f"max {own['rel_move'].max():.2%}, "
                        f"median SE of a move {own['move_se'].median():.2%}; the ROAS window alone: median "
                        f"{own['window_move'].median():.2%}, max {own['window_move'].max():.2%}; "
                        f"Pareto k max {own['pareto_k'].max():.2f}"
                    )
                if mode == "sample" and world.model.spec.control_variates:  # before/after, same fits
                    results.append(summarize(f"ours, plain means: {label}", moves(snaps, "roas_plain_mean")))
                results.append(summarize(f"ours, refresh {mode}: {label}", moves(snaps)))
            if peer and world.name == "case_study":
                try:
                    theirs = moves(replay_pymc_marketing(world, first, args.refits, log))
                except Exception as exc:  # the peer failing is a result to report, not a reason to stop
                    log(f"  [PyMC-Marketing] failed: {exc!r}")
                else:
                    results.append(summarize(f"PyMC-Marketing: {label}", theirs))
    if not results:
        return
    print("\nsummary (relative ROAS-mean move per refresh over every channel and refresh)")
    print(
        pd.DataFrame(results).to_string(
            index=False,
            formatters={
                "median_move": "{:.2%}".format,
                "max_move": "{:.2%}".format,
                "noise_floor": "{:.2%}".format,
                "move_se": "{:.2%}".format,
            },
        )  # fmt: skip
    )


if __name__ == "__main__":
    main()
