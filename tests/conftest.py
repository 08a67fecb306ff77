"""Shared fixtures: real projects in temporary folders, a temporary DAGSTER_HOME, real pipeline runs."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

#: numba's LLVM optimization level for the suite, set before anything imports numba (subprocesses such as
#: the CLI runs inherit it). Most of a small test fit is compiling nutpie's numba functions, and level 0
#: cuts that by a quarter to a half with the same posterior (``benchmarks/bench_compile_cache.py
#: --numba-opt 3,0``, 2026-12-02, single market, 2 chains x 200 draws: compile 14.9-15.0 s against
#: 19.0-20.5 s at numba's default 3, posterior means equal; a scratch run with the default PyTensor
#: compile directory: 9.4 s against 20.5-22.4 s). Sampling is slower at level 0 (11.4 s against 8.5-9.2 s
#: at 4 chains x 1000 draws), which small test draws do not feel, so the product keeps numba's default.
#: ``NUMBA_OPT`` already set in the environment wins.
os.environ.setdefault("NUMBA_OPT", "0")

import duckdb
import pandas as pd
import pytest
import yaml

from mmm_pipeline.config import ProjectConfig, load_config
from mmm_pipeline.ingest.importers.wide import import_wide, load_wide_mapping
from mmm_pipeline.runner import RunSummary, project_instance, run_pipeline
from mmm_pipeline.scaffold import demo_file, init_project
from mmm_testkit.synthetic import generate_world, write_world

#: Session fixtures that fit or load a whole project once. Tests that use one form one work unit.
SHARED_PROJECTS = {
    "fitted_two_markets": "two_markets",
    "two_markets_project": "two_markets",
    "loaded_case_study": "case_study",
    "case_study": "case_study",
}

#: The longest work units, longest first (their share of the suite's time, 2026-12-01: the two shared
#: projects 15% and 14%, test_cli 13%, the lift-test pipeline 10%, sensors 9%, remedies 9%, calibration,
#: model and cross-validation 6-7% each). xdist hands units out in collection order
#: (``--no-loadscope-reorder`` in ``scripts/test.sh``); started last, a long unit would leave the other
#: worker idle at the end.
LONGEST_FIRST = (
    "two_markets",
    "case_study",
    "test_cli.py",
    "test_lift_tests_pipeline.py",
    "test_sensors.py",
    "test_remedies.py",
    "test_calibration.py",
    "test_model.py",
    "test_validation.py",
)


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook turns the marks into the group suffix
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Group the suite into work units for ``pytest-xdist --dist loadgroup``: the tests of a shared
    project form one unit, so each project is built once in the suite; every other test module is one
    unit, so its module fixtures (often a model fit) are built once, not once per worker. Then order the
    units longest first."""
    units: dict[str, str] = {}
    for item in items:
        groups = {SHARED_PROJECTS[f] for f in getattr(item, "fixturenames", ()) if f in SHARED_PROJECTS}
        units[item.nodeid] = sorted(groups)[0] if groups else item.path.name
        item.add_marker(pytest.mark.xdist_group(units[item.nodeid]))
    rank = {unit: i for i, unit in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(units[item.nodeid], len(rank)))


#: RAM disk for the suite's temporary folders when the machine has one (``--basetemp`` still wins).
RAM_DISK = Path("/dev/shm")


def pytest_configure(config: pytest.Config) -> None:
    """Put the temporary projects and Dagster instances on a RAM disk.

    Dagster's SQLite storage commits (and fsyncs) once per event and checkpoints the WAL on every
    connection close: a year of weekly partitions is about a thousand events per run. Profiled on this
    project's disk, the same feature run took 131 s with its DAGSTER_HOME on disk and 53 s on
    ``/dev/shm``, the difference all in ``sqlite3`` commit and close. The suite checks behaviour, not
    the disk. Only the controller (or a run without xdist) picks the folder; xdist gives each worker a
    subfolder of it.
    """
    controller = not hasattr(config, "workerinput")
    if config.option.basetemp is None and controller and os.access(RAM_DISK, os.W_OK):
        config.option.basetemp = tempfile.mkdtemp(prefix="mmm-pytest-", dir=RAM_DISK)
        config.stash[_RAM_TEMP] = config.option.basetemp


def pytest_unconfigure(config: pytest.Config) -> None:
    """Free the RAM disk folder this run made (nothing else)."""
    if (made := config.stash.get(_RAM_TEMP, None)) is not None:
        shutil.rmtree(made, ignore_errors=True)


_RAM_TEMP = pytest.StashKey[str]()

CASE_STUDY = demo_file("case_study_weekly.csv")


@pytest.fixture(autouse=True)
def dagster_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own Dagster instance folder; nothing touches ~/.dagster."""
    home = tmp_path_factory.mktemp("dagster_home")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def run(cfg: ProjectConfig, weeks: str = "pending", until: str = "features") -> RunSummary:
    """A real pipeline run; by default up to the feature tables (model tests ask for the model)."""
    return run_pipeline(cfg, weeks=weeks, instance=project_instance(cfg), log=lambda _msg: None, until=until)


def small_model_config(config_path: Path, **model: object) -> None:
    """Make a project's model quick to fit in tests (2 chains x 200 draws, 2 CV folds), gate to match,
    and its plans quick to optimize (200 of those draws).

    ``model`` entries override the ``model`` section's keys (e.g. ``gate={...}``).
    """
    raw = yaml.safe_load(config_path.read_text())
    raw["model"] = {
        "spec": {
            "l_max": 4,
            "n_fourier": 1,
            "sampler": {"chains": 2, "draws": 200, "tune": 200, "seed": 1},
        },
        "gate": {"min_ess_bulk": 20, "min_ess_tail": 20, "max_r_hat": 1.2, "max_divergences": 50},
        # One more fit per market and run otherwise; tests/test_sensitivity.py switches it on.
        "sensitivity": {"enabled": False},
        **model,
    }
    raw["cv"] = {"n_folds": 2, "min_train_weeks": 52, "horizon": 8, "step": 8, "baseline_draws": 500}
    # Half the posterior's 400 draws: each plan's objective reads every draw it is given.
    raw["optimization"] = {**raw.get("optimization", {}), "max_draws": 200}
    config_path.write_text(yaml.safe_dump(raw, sort_keys=False))


def modeling_table(cfg: ProjectConfig) -> pd.DataFrame:
    with duckdb.connect(str(cfg.warehouse_path), read_only=True) as conn:
        return conn.execute("SELECT * FROM marts.fct_modeling_weekly ORDER BY market, week").df()


def model_runs(config_path: Path) -> pd.DataFrame:
    """Every registered model run of the project (``models.model_runs``), oldest first."""
    cfg = load_config(config_path)
    with duckdb.connect(str(cfg.warehouse_path), read_only=True) as conn:
        return conn.execute("SELECT * FROM models.model_runs ORDER BY created_at, market").df()


def query(cfg: ProjectConfig, sql: str) -> list[tuple]:
    with duckdb.connect(str(cfg.warehouse_path), read_only=True) as conn:
        return conn.execute(sql).fetchall()


LAST_WEEK = "2018-07-29"


def weekly_case_study_files(target: Path) -> Path:
    """The case study as a weekly delivery would look: one file per week per kind, under ``target``."""
    import_wide(
        CASE_STUDY,
        load_wide_mapping(demo_file("case_study_mapping.yaml")),
        target,
        split="week",
        week_start="sunday",
    )
    return target


@pytest.fixture(scope="session")
def loaded_case_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The historical load, done once: every case-study week but the last, one file per week per kind.

    The last week is kept back in ``<project>/incoming`` so a test can deliver it as a new week.
    """
    directory = tmp_path_factory.mktemp("case_study")
    config_path = init_project(directory, "case-study")
    cfg = load_config(config_path)
    weekly_case_study_files(cfg.landing_dir)
    for kind in ("media", "kpi", "controls"):
        held_back = directory / "incoming" / kind
        held_back.mkdir(parents=True)
        shutil.move(cfg.landing_dir / kind / f"case_study_weekly_{LAST_WEEK}.csv", held_back)
    home = directory / ".session_dagster_home"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(home))
        summary = run(cfg)
    assert summary.ok, summary.problems
    return directory


@pytest.fixture
def case_study(loaded_case_study: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ProjectConfig:
    """A private copy of the loaded case-study project with its Dagster instance (which knows what was
    built: the weeks to rebuild are Dagster's stale partitions), safe to change."""
    directory = tmp_path / "project"
    shutil.copytree(loaded_case_study, directory, ignore=shutil.ignore_patterns("*.lock"))
    monkeypatch.setenv("DAGSTER_HOME", str(directory / ".session_dagster_home"))
    return load_config(directory / "mmm_pipeline.yaml")


TWO_MARKETS = ("north", "south")


@pytest.fixture(scope="session")
def fitted_two_markets(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, RunSummary]:
    """A synthetic project with two markets (seed 5, 104 weeks, :func:`small_model_config`) after its first
    full run: ingested, both markets fitted, cross-validated, promoted, optimized, published, reported.

    The most expensive state the suite needs, built once: the model and the optimization tests start
    from it. Never change it: use :func:`two_markets_project`, a copy.
    """
    directory = tmp_path_factory.mktemp("two_markets")
    config_path = init_project(directory, "synthetic")
    small_model_config(config_path)
    cfg = load_config(config_path)
    world = generate_world(seed=5, n_weeks=104, start=cfg.calendar.start, markets=TWO_MARKETS)
    write_world(world, cfg.landing_dir, directory / "truth")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(directory / "dagster_home"))
        summary = run_pipeline(cfg, instance=project_instance(cfg), log=lambda _msg: None)
    return directory, summary


@pytest.fixture(scope="module")
def two_markets_project(
    fitted_two_markets: tuple[Path, RunSummary], tmp_path_factory: pytest.TempPathFactory
) -> tuple[Path, RunSummary]:
    """A test module's private copy of :func:`fitted_two_markets` (its config path, and the summary of
    the first run), safe to change.

    The copy takes the Dagster instance along (``dagster_home``), so it knows what already ran. Registry
    rows keep their absolute ``artifact_path`` and BI views read the source's snapshot files until the
    copy publishes again: both stay valid because the source is never changed.
    """
    source, first = fitted_two_markets
    target = tmp_path_factory.mktemp("two_markets_copy") / "project"
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.lock"))
    return target / "mmm_pipeline.yaml", first
