"""First run as a new user: does every world get a trustworthy model (a champion) after one ``run``?

Why (issue 14): a new user writes a config naming their channels and controls, leaves every other
setting at its default, drops the data into the landing folders and types ``mmm-pipeline run``. If the
fit misses the gate there is no champion, no recommendation and no report. This benchmark does exactly
that, through the real CLI in a subprocess, on worlds of many shapes, and counts how many end with a
champion, how many fits it took (``model.remedies`` re-fits a fit that missed the convergence rules),
which remedies fired, and the wall time. Goal: 100% with a champion, on average at most one extra fit
per world.

Each world spec is one project: ``mmm-pipeline init DIR``, then the config is replaced by a hand-written
one (the world's channels and controls, ``kpi``/``calendar`` for the data, nothing else unless the
variant says so), the world's files are written into the landing folders with
:func:`mmm_testkit.synthetic.write_world` (the truth goes next to the project, outside the landing
folder), and ``mmm-pipeline --config DIR/mmm_pipeline.yaml run`` runs with ``DAGSTER_HOME`` unset so the
project's own instance is used. Afterwards ``DIR/data/bi.duckdb`` is read read-only: the market's newest
fit (``latest_model_runs``: status, ``fit_attempts``, ``promotion_blocked_by``), whether
``champion_model_runs`` holds the market, and the remedies of each attempt (``model_fit_attempts``).

The world specs (:func:`world_spec`): spec ``i`` is drawn from the random stream ``(LIST_SEED, i)``, so
the list is fixed and spec ``i`` does not depend on ``--worlds``. Config variants cycle with ``i`` over
:data:`VARIANTS` (default, no controls, no seasonality, default, no trend, categorical controls), and the
channel count cycles over 3-8 shifted by one every six specs, so that every variant meets every count
within 36 specs. Drawn per spec: the world seed (1000-999999: disjoint from seeds 0-19 that the other
benchmarks and the model's defaults were tuned on), which archetypes (of the generator's nine: tv,
search, display, social, radio, print, ooh, video, affiliate), for a third of the specs one channel
bought another way (``spend_patterns``), the noise sd (1-5% of the baseline) and the length (104-208
weeks). One market. The world matches its variant: no controls means neither control files nor control
effects; no seasonality means ``model.spec.n_fourier: 0`` and a world without a yearly cycle; no trend
means ``trend: false`` and no growth; categorical adds the generator's ``event`` labels and declares
``kind: categorical`` (only when the config has that kind; otherwise the spec is reported as not
available and not counted). Nobody tuned the model, the gate or the remedies on this list: it was fixed
before its first run (LIST_SEED 14014, for issue 14), and settings tuned on it would make it a training
set; draw a new list (another LIST_SEED) to check a change made after looking at it.

With the default fold layout, cross-validation needs 156 weeks (``min_train_weeks`` 104 + a 13-week
horizon + 3 steps of 13), so in shorter worlds CV is skipped and with it the gate's CV-skill rule; the
``cv`` column (``cv_status``) shows which worlds were held to it.

Run (the benchmark: the product's sampler defaults, 4 chains x 1000 draws; ~30 full runs, long):
``nohup .venv/bin/python benchmarks/bench_first_run.py --out /tmp/first_run.csv > /tmp/first_run.log 2>&1 &``
(``--start K`` skips the first K specs, to resume after an interruption: rows are appended to ``--out``
as each world finishes; ``--jobs N`` runs N projects at once; ``--keep`` keeps the project folders under
``--workdir``; ``--summarize`` prints the table and totals of ``--out`` without running anything).
``--draws/--tune/--chains`` override the sampler for SMOKE RUNS ONLY: they are not the
benchmark setting (a new user's run uses the defaults), the header says so and each row records them.
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import duckdb
import numpy as np
import yaml

from mmm_pipeline.ingest.contract import ControlConfig
from mmm_testkit import synthetic

#: Fixed seed of the world-spec list (see the module docstring: not to be tuned on).
LIST_SEED = 14014
VARIANTS = ("default", "no_controls", "no_seasonality", "default", "no_trend", "categorical")
ARCHETYPES = tuple(synthetic._CHANNELS)  # the generator's channel archetypes, in its order
PATTERNS = ("flighting", "always_on", "variable")
NUMERIC_CONTROLS = ("competitor_spend", "macro_index", "price")
MARKET = "all"
CLI = Path(sys.executable).with_name("mmm-pipeline")

FIELDS = [
    "index", "variant", "seed", "n_weeks", "n_channels", "channels", "spend_pattern", "noise_share",
    "sampler", "status", "exit_code", "champion", "model_status", "fit_attempts", "extra_fits",
    "remedies", "promotion_blocked_by", "gate_failures", "max_r_hat", "divergences", "cv_status",
    "cv_crps_skill", "fit_s", "wall_s", "note",
]  # fmt: skip


@dataclass(frozen=True)
class WorldSpec:
    """One world and config variant of the fixed list."""

    index: int
    variant: str
    seed: int
    n_weeks: int
    channels: tuple[str, ...]
    spend_patterns: tuple[tuple[str, str], ...]
    noise_share: float

    @property
    def controls(self) -> tuple[str, ...]:
        return () if self.variant == "no_controls" else NUMERIC_CONTROLS


def world_spec(i: int) -> WorldSpec:
    """Spec ``i`` of the fixed list (deterministic, independent of how many specs are asked for)."""
    rng = np.random.default_rng([LIST_SEED, i])
    n_channels = 3 + (i + i // len(VARIANTS)) % 6
    picked = set(rng.choice(len(ARCHETYPES), size=n_channels, replace=False).tolist())
    channels = tuple(name for k, name in enumerate(ARCHETYPES) if k in picked)
    patterns: tuple[tuple[str, str], ...] = ()
    if rng.random() < 1 / 3:
        channel = channels[int(rng.integers(len(channels)))]
        own = synthetic._CHANNELS[channel].pattern
        patterns = ((channel, str(rng.choice([p for p in PATTERNS if p != own]))),)
    return WorldSpec(
        index=i,
        variant=VARIANTS[i % len(VARIANTS)],
        seed=int(rng.integers(1000, 1_000_000)),
        n_weeks=int(rng.integers(104, 209)),
        channels=channels,
        spend_patterns=patterns,
        noise_share=round(float(rng.uniform(0.01, 0.05)), 3),
    )


def categorical_available() -> bool:
    """Whether the project config knows ``kind: categorical`` controls (issue 14, item 5)."""
    kind = ControlConfig.model_fields.get("kind")
    return kind is not None and "categorical" in str(kind.annotation)


def make_world(spec: WorldSpec) -> synthetic.SyntheticWorld:
    return synthetic.generate_world(
        seed=spec.seed,
        n_weeks=spec.n_weeks,
        channels=spec.channels,
        spend_patterns=dict(spec.spend_patterns),
        noise_share=spec.noise_share,
        controls=spec.controls,
        event_control=spec.variant == "categorical",
        seasonal_amplitude=0.0 if spec.variant == "no_seasonality" else synthetic._SEASONAL_AMPLITUDE,
        trend_per_year=0.0 if spec.variant == "no_trend" else synthetic._TREND_PER_YEAR,
    )


def project_config(spec: WorldSpec, world: synthetic.SyntheticWorld, sampler: dict[str, int]) -> dict:
    """The config a new user writes for this world: its names, every other setting at its default."""
    controls: list[dict] = [{"name": c} for c in spec.controls]
    if spec.variant == "categorical":
        controls.append({"name": synthetic.EVENT_CONTROL, "kind": "categorical"})
    model_spec: dict = {}
    if spec.variant == "no_seasonality":
        model_spec["n_fourier"] = 0
    if spec.variant == "no_trend":
        model_spec["trend"] = False
    if sampler:
        model_spec["sampler"] = dict(sampler)
    config: dict = {
        "project": f"first_run_{spec.index}",
        "kpi": {"name": world.kpi_name},
        "calendar": {"week_start": world.week_start, "start": world.dates[0].date()},
        "channels": [{"name": c} for c in world.channels],
    }
    if controls:
        config["controls"] = controls
    if model_spec:
        config["model"] = {"spec": model_spec}
    return config


def _query(con: duckdb.DuckDBPyConnection, sql: str, params: list) -> list[tuple]:
    try:
        return con.execute(sql, params).fetchall()
    except duckdb.Error:  # a table that a failed run never published
        return []


def read_outcome(bi_path: Path) -> dict:
    """The market's newest fit, whether it is champion, and its attempts' remedies, from bi.duckdb."""
    if not bi_path.exists():
        return {"note": "no bi.duckdb"}
    con = duckdb.connect(str(bi_path), read_only=True)
    try:
        latest = _query(
            con,
            "SELECT model_id, status, fit_attempts, promotion_blocked_by, gate_failures, max_r_hat, "
            "divergences, cv_status, cv_crps_skill FROM latest_model_runs WHERE market = ?",
            [MARKET],
        )
        champion = _query(con, "SELECT model_id FROM champion_model_runs WHERE market = ?", [MARKET])
        if not latest:
            return {"champion": bool(champion), "note": "no model run in bi.duckdb"}
        model_id, status, attempts, blocked, failures, r_hat, divergences, cv_status, skill = latest[0]
        attempt_rows = _query(
            con,
            "SELECT remedy, seconds FROM model_fit_attempts WHERE model_id = ? ORDER BY attempt",
            [model_id],
        )
    finally:
        con.close()
    attempts = int(attempts) if attempts is not None else 1
    return {
        "champion": bool(champion),
        "model_status": status,
        "fit_attempts": attempts,
        "extra_fits": attempts - 1,
        "remedies": " | ".join(remedy for remedy, _ in attempt_rows if remedy),
        "fit_s": round(sum(float(sec or 0) for _, sec in attempt_rows), 1),
        "promotion_blocked_by": blocked or "",
        "gate_failures": failures or "",
        "max_r_hat": None if r_hat is None else round(float(r_hat), 4),
        "divergences": divergences,
        "cv_status": cv_status,
        "cv_crps_skill": None if skill is None else round(float(skill), 3),
    }


def run_world(spec: WorldSpec, workdir: Path, sampler: dict[str, int], keep: bool) -> dict:
    """One new user's first run on one world; returns the result row."""
    row: dict = {
        **{k: v for k, v in asdict(spec).items() if k in FIELDS},
        "n_channels": len(spec.channels),
        "channels": " ".join(spec.channels),
        "spend_pattern": " ".join(f"{c}={p}" for c, p in spec.spend_patterns),
        "sampler": " ".join(f"{k}={v}" for k, v in sampler.items()) or "default",
    }
    if spec.variant == "categorical" and not categorical_available():
        return {**row, "status": "unavailable", "note": "kind: categorical not in ControlConfig yet"}
    project = workdir / f"world_{spec.index:03d}"
    if project.exists():
        shutil.rmtree(project)
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "MMM_PIPELINE_CONFIG")}
    init = subprocess.run([str(CLI), "init", str(project)], capture_output=True, text=True, env=env)
    if init.returncode != 0:
        return {**row, "status": "init_failed", "exit_code": init.returncode, "note": init.stderr[-300:]}
    world = make_world(spec)
    config_path = project / "mmm_pipeline.yaml"
    config_path.write_text(yaml.safe_dump(project_config(spec, world, sampler), sort_keys=False))
    synthetic.write_world(world, project / "data" / "landing", project / "truth")
    started = time.perf_counter()
    with open(project / "run.log", "w") as log:
        run = subprocess.run(
            [str(CLI), "--config", str(config_path), "run"], stdout=log, stderr=subprocess.STDOUT, env=env
        )
    row["wall_s"] = round(time.perf_counter() - started, 1)
    row.update(exit_code=run.returncode, **read_outcome(project / "data" / "bi.duckdb"))
    row["status"] = "champion" if row.get("champion") else "no_champion"
    if not row.get("model_status"):  # no fit recorded: the run's last lines say why
        tail = (project / "run.log").read_text().strip().splitlines()[-3:]
        row["note"] = (row.get("note", "") + " | " + " / ".join(tail))[-400:]
    if not keep:
        shutil.rmtree(project, ignore_errors=True)
    return row


def remedy_kind(remedy: str) -> str:
    """The failure a remedy answered (the text before ':', e.g. 'divergences')."""
    return remedy.split(":", 1)[0].strip()


def print_table(rows: list[dict]) -> None:
    head = (
        f"{'#':>3} {'variant':<14} {'seed':>6} {'weeks':>5} {'ch':>2} {'noise':>5} {'exit':>4} "
        f"{'champion':<8} {'fits':>4} {'r_hat':>6} {'div':>4} {'cv':>7} {'skill':>6} {'wall_s':>7}  "
        "remedies / blocked by"
    )
    print(head)
    print("-" * len(head))
    for r in sorted(rows, key=lambda r: int(r["index"])):
        if r.get("status") in ("unavailable", "init_failed"):
            print(f"{r['index']:>3} {r['variant']:<14} {r['seed']:>6} {r['n_weeks']:>5} {r['n_channels']:>2} "
                  f"{'':>5} {'':>4} {r['status']}: {r.get('note', '')}")  # fmt: skip
            continue
        detail = r.get("remedies") or ""
        if not _truthy(r.get("champion")):
            detail = f"{detail} || blocked: {r.get('promotion_blocked_by') or r.get('note', '')}"
        print(
            f"{r['index']:>3} {r['variant']:<14} {r['seed']:>6} {r['n_weeks']:>5} {r['n_channels']:>2} "
            f"{float(r['noise_share']):>5.3f} {r.get('exit_code', ''):>4} "
            f"{'yes' if _truthy(r.get('champion')) else 'NO':<8} {_s(r.get('fit_attempts')):>4} "
            f"{_s(r.get('max_r_hat')):>6} {_s(r.get('divergences')):>4} {_s(r.get('cv_status')):>7} "
            f"{_s(r.get('cv_crps_skill')):>6} "
            f"{_s(r.get('wall_s')):>7}  {detail}"
        )


def _truthy(value: object) -> bool:
    return value is True or str(value) == "True"


def _s(value: object) -> str:
    return "" if value is None else str(value)


def print_totals(rows: list[dict], title: str) -> None:
    ran = [r for r in rows if r.get("status") in ("champion", "no_champion")]
    skipped = Counter(r["status"] for r in rows if r not in ran)
    print(f"\n{title}: {len(ran)} world(s) run" + (f", not run: {dict(skipped)}" if skipped else ""))
    if not ran:
        return
    champions = sum(_truthy(r.get("champion")) for r in ran)
    extra = [int(r.get("extra_fits") or 0) for r in ran]
    walls = [float(r["wall_s"]) for r in ran if r.get("wall_s") not in (None, "")]
    share = f"{champions}/{len(ran)} = {champions / len(ran):.0%}"
    print(f"  with a champion after the first run: {share} (goal 100%)")
    print(f"  extra fits per world: mean {statistics.mean(extra):.2f} (goal <= 1), max {max(extra)}, "
          f"worlds with any: {sum(e > 0 for e in extra)}")  # fmt: skip
    remedies = [m for r in ran for m in (r.get("remedies") or "").split(" | ") if m]
    kinds = Counter(remedy_kind(m) for m in remedies)
    print(f"  remedies fired: {len(remedies)}" + "".join(f"; {k}: {n}" for k, n in kinds.most_common()))
    for text, n in Counter(remedies).most_common():
        print(f"    {n} x {text}")
    by_variant: dict[str, list[bool]] = {}
    for r in ran:
        by_variant.setdefault(r["variant"], []).append(_truthy(r.get("champion")))
    print("  champion by variant: " + ", ".join(f"{v} {sum(c)}/{len(c)}" for v, c in by_variant.items()))
    blocked = Counter(
        r.get("promotion_blocked_by") or r.get("note") or "?" for r in ran if not _truthy(r.get("champion"))
    )
    for reason, n in blocked.most_common():
        print(f"  no champion ({n}): {reason}")
    cv = Counter(str(r.get("cv_status") or "-") for r in ran)
    print("  cross-validation (the CV-skill gate needs it): " + ", ".join(f"{k} {n}" for k, n in cv.items()))
    nonzero = Counter(str(r.get("exit_code")) for r in ran if str(r.get("exit_code")) != "0")
    if nonzero:
        print(f"  non-zero exit codes: {dict(nonzero)}")
    fits = [float(r["fit_s"]) for r in ran if r.get("fit_s") not in (None, "")]
    if fits:
        print(f"  sampling attempts of the fit (model_fit_attempts.seconds): total {sum(fits):.0f} s")
    if walls:
        print(f"  wall time of `run`: total {sum(walls):.0f} s, median {statistics.median(walls):.0f} s, "
              f"max {max(walls):.0f} s")  # fmt: skip


def _saved_rows(path: str | None) -> dict[int, dict]:
    """The rows of a results CSV, the latest per spec index (a resumed spec replaces its earlier row)."""
    if not path or not Path(path).exists():
        raise SystemExit(f"no results file {path!r}")
    with open(path, newline="") as f:
        return {int(r["index"]): r for r in csv.DictReader(f)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--worlds", type=int, default=30, help="specs to run, counted from spec 0")
    parser.add_argument("--start", type=int, default=0, help="skip the first K specs (resume)")
    parser.add_argument("--jobs", type=int, default=1, help="projects run at once")
    parser.add_argument("--keep", action="store_true", help="keep each project folder (and its run.log)")
    parser.add_argument("--workdir", default=None, help="where projects go (default: a temporary folder)")
    parser.add_argument("--out", default=None, help="CSV to append a row to as each world finishes")
    parser.add_argument("--list", action="store_true", help="print the specs and exit")
    parser.add_argument(
        "--summarize", action="store_true", help="print the table and totals of --out's rows; run nothing"
    )
    smoke = parser.add_argument_group("smoke runs only (NOT the benchmark setting: a new user runs defaults)")
    smoke.add_argument("--draws", type=int)
    smoke.add_argument("--tune", type=int)
    smoke.add_argument("--chains", type=int)
    args = parser.parse_args()

    specs = [world_spec(i) for i in range(args.start, args.worlds)]
    if args.summarize:
        saved = _saved_rows(args.out)
        print_table(list(saved.values()))
        print_totals(list(saved.values()), f"all specs in {args.out} ({len(saved)})")
        return
    if args.list:
        for s in specs:
            print(s)
        return
    sampler = {k: v for k, v in (("chains", args.chains), ("draws", args.draws), ("tune", args.tune)) if v}
    categorical = "available" if categorical_available() else "NOT available yet (specs skipped)"
    print(
        f"first-run benchmark: specs {args.start}..{args.worlds - 1} of LIST_SEED {LIST_SEED}, "
        f"jobs {args.jobs}, categorical controls {categorical}"
    )
    if sampler:
        print(f"SMOKE RUN: sampler overridden ({sampler}); these are NOT the benchmark figures")
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="first_run_"))
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"projects under {workdir}{' (kept)' if args.keep else ''}\n")

    lock = threading.Lock()
    rows: list[dict] = []

    def one(spec: WorldSpec) -> dict:
        try:
            row = run_world(spec, workdir, sampler, args.keep)
        except Exception as exc:  # noqa: BLE001 - a broken world is a result, the others still run
            row = {"index": spec.index, "variant": spec.variant, "seed": spec.seed, "n_weeks": spec.n_weeks,
                   "n_channels": len(spec.channels), "status": "error", "note": repr(exc)[:300]}  # fmt: skip
        with lock:
            rows.append(row)
            if args.out:
                new = not Path(args.out).exists()
                with open(args.out, "a", newline="") as f:
                    writer = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
                    if new:
                        writer.writeheader()
                    writer.writerow(row)
            print(
                f"[{time.strftime('%H:%M:%S')}] world {spec.index} ({spec.variant}, "
                f"{len(spec.channels)} channels, {spec.n_weeks} weeks): {row.get('status')}, "
                f"fits {row.get('fit_attempts', '-')}, {row.get('wall_s', '-')} s",
                flush=True,
            )
        return row

    with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        list(pool.map(one, specs))
    if not args.keep and not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)

    print()
    print_table(rows)
    print_totals(rows, "this run")
    if args.out:
        saved = _saved_rows(args.out)
        print_totals(list(saved.values()), f"all specs in {args.out} ({len(saved)})")


if __name__ == "__main__":
    main()
