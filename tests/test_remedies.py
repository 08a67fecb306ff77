"""Every dataset gets a model: the remedy ladder, the data-relative gate, and optional model parts.

The ladder is decided on plain numbers (no sampling); one real refit shows a fit that misses the gate
being fitted again on the same compiled graph and each attempt recorded. The optional-parts matrix fits
real models with small draws: every optional part switched off at once in the default suite, every
combination of parts, kinds and samplers in the slow one.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pytest
import yaml
from conftest import small_model_config

from mmm_pipeline.config import load_config
from mmm_pipeline.model import insights
from mmm_pipeline.model.build import ModelData, ScalingSpec
from mmm_pipeline.model.calibration import LiftTests
from mmm_pipeline.model.fit import ModelCache, fit, progress_hook_available
from mmm_pipeline.model.promotion import cv_failures, next_steps
from mmm_pipeline.model.refit import ATTEMPT_COLUMNS, RefitOutcome, refit_market
from mmm_pipeline.model.registry import CVRecord
from mmm_pipeline.model.remedies import RemediesConfig, failure_kinds, next_remedy
from mmm_pipeline.model.settings import GateConfig, ModelConfig
from mmm_pipeline.model.spec import ModelSpec, SamplerSpec
from mmm_pipeline.scaffold import init_project
from mmm_testkit.adapters import model_data
from mmm_testkit.synthetic import generate_world, write_world

GATE = GateConfig()
OK = {"max_r_hat": 1.005, "min_ess_bulk": 900.0, "min_ess_tail": 800.0, "divergences": 0}


def test_failure_kinds_follow_the_gate() -> None:
    assert failure_kinds(OK, GATE) == (False, False)
    assert failure_kinds({**OK, "divergences": 2}, GATE) == (True, False)
    assert failure_kinds({**OK, "max_r_hat": 1.0108}, GATE) == (False, True)
    assert failure_kinds({**OK, "min_ess_tail": 120.0}, GATE) == (False, True)
    assert failure_kinds({**OK, "max_r_hat": float("nan")}, GATE) == (False, True)
    assert failure_kinds({**OK, "divergences": 3, "min_ess_bulk": 10.0}, GATE) == (True, True)


def test_ladder_fits_the_failure() -> None:
    cfg = RemediesConfig()
    sampler = SamplerSpec()  # 4 x (1000 + 1000), target_accept 0.95
    diverged = next_remedy(sampler, True, False, 1, cfg)
    assert diverged is not None
    assert (diverged.sampler.target_accept, diverged.sampler.tune, diverged.sampler.draws) == (
        0.98,
        2000,
        1000,
    )
    assert diverged.sampler.seed != sampler.seed and "divergences" in diverged.reason
    again = next_remedy(diverged.sampler, True, False, 2, cfg)
    assert again is not None and (again.sampler.target_accept, again.sampler.tune) == (0.995, 4000)
    mixing = next_remedy(sampler, False, True, 1, cfg)
    assert mixing is not None
    assert (mixing.sampler.target_accept, mixing.sampler.tune, mixing.sampler.draws) == (0.95, 2000, 2000)
    assert "R-hat/ESS" in mixing.reason
    both = next_remedy(sampler, True, True, 1, cfg)
    assert both is not None and (both.sampler.target_accept, both.sampler.draws) == (0.98, 2000)


def test_ladder_is_bounded() -> None:
    cfg = RemediesConfig(max_attempts=3)
    sampler = SamplerSpec()
    assert next_remedy(sampler, True, False, 3, cfg) is None  # budget spent
    assert next_remedy(sampler, False, False, 1, cfg) is None  # nothing a sampler setting fixes
    assert next_remedy(sampler, True, True, 1, RemediesConfig(enabled=False)) is None
    capped = SamplerSpec(tune=4000, draws=4000, target_accept=0.995)
    assert next_remedy(capped, True, True, 1, cfg) is None  # every setting at its cap
    with pytest.raises(ValueError, match="between 0.5 and 1"):
        RemediesConfig(target_accept_steps=[0.98, 1.2])


def test_cv_skill_rule_is_relative_to_seasonal_naive() -> None:
    worse = CVRecord("m", "ok", overall={"mmm": {"crps": 10.0, "crps_skill": -0.05}})
    better = CVRecord("m", "ok", overall={"mmm": {"crps": 10.0, "crps_skill": 0.2}})
    (failure,) = cv_failures(worse, None, 0.1, min_skill=0.0)
    assert "seasonal-naive" in failure and "-0.050" in failure
    assert cv_failures(better, None, 0.1, min_skill=0.0) == []
    assert cv_failures(worse, None, 0.1, min_skill=None) == []  # switched off
    assert cv_failures(worse, None, 0.1, drift_triggered=True, min_skill=0.0) != []  # absolute rule
    assert cv_failures(CVRecord("m", "skipped", "too short"), None, 0.1, min_skill=0.0) == []
    # The fixed R² floor is off by default: a converged fit of a noisy KPI is not rejected for it.
    assert GateConfig().min_r2 is None and GateConfig().min_cv_skill == 0.0


def test_next_steps_name_the_rule_and_the_parameters() -> None:
    run = {**OK, "divergences": 4, "fit_attempts": 3, "cv_crps_skill": -0.1, "cv_status": "ok"}
    steps = next_steps(run, GATE, "half_sat[tv], alpha[tv]")
    assert len(steps) == 2
    assert "after 3 attempts" in steps[0] and "half_sat[tv]" in steps[0] and "model.spec.priors" in steps[0]
    assert "min_cv_skill" in steps[1]
    steps = next_steps({**OK, "max_r_hat": 1.03}, GATE)
    assert len(steps) == 1 and "on the first attempt" in steps[0]


def test_missing_sampler_package_is_a_config_error() -> None:
    for name in ("numpyro", "blackjax"):
        try:
            __import__(name)
        except ImportError:
            with pytest.raises(ValueError, match=f"needs the {name} package"):
                ModelConfig(spec=ModelSpec(sampler=SamplerSpec(name=name)))


@pytest.fixture(scope="module")
def world_data() -> ModelData:
    return model_data(generate_world(seed=11, n_weeks=104))


SMALL = SamplerSpec(chains=2, draws=60, tune=60, seed=2)


def _variant(data: ModelData, controls: bool) -> ModelData:
    if controls:
        return data
    return ModelData(data.dates, data.spend, np.zeros((data.n_weeks, 0)), data.kpi, data.channels, ())


@pytest.fixture(scope="module")
def bare_refit(world_data: ModelData) -> tuple[RefitOutcome, list[str]]:
    """One real refit with every optional part off (no controls, no seasonality, no trend: each used to
    crash nutpie's ``with_data``) and a sampler budget far too small for the gate's ESS, so the ladder
    climbs (more tuning and draws) on the same compiled graph."""
    spec = ModelSpec(
        l_max=4, n_fourier=0, trend=False, sampler=SamplerSpec(chains=2, draws=40, tune=40, seed=3)
    )
    model = ModelConfig(
        spec=spec,
        gate=GateConfig(max_r_hat=1.2, min_ess_bulk=150, min_ess_tail=100, max_divergences=1000),
        remedies=RemediesConfig(max_attempts=3, draws_factor=3.0, tune_factor=3.0),
    )
    data = _variant(world_data, controls=False)
    messages: list[str] = []
    outcome = refit_market(data, model, ScalingSpec.from_data(data), "fresh", progress=messages.append)
    return outcome, messages


def test_refit_retries_on_the_compiled_graph_and_records_each_attempt(bare_refit) -> None:
    outcome, messages = bare_refit
    attempts = outcome.tables["fit_attempts"]
    assert list(attempts.columns) == list(ATTEMPT_COLUMNS)
    assert 2 <= len(attempts) <= 3
    first, second = attempts.iloc[0], attempts.iloc[1]
    assert not first["gate_passed"] and "ESS" in first["gate_failures"]
    assert isinstance(first["worst_parameters"], str) and first["worst_parameters"]
    assert (second["draws"], second["tune"]) == (120, 120) and second["seed"] == 4
    assert "R-hat/ESS short" in second["remedy"]
    assert outcome.fit.spec.sampler.draws == attempts.iloc[-1]["draws"]  # the record is the last attempt
    assert outcome.fit.reused_graph and outcome.fit.timings["compile"] == 0  # settings change, not the graph
    assert any("attempt 2 of at most 3" in m for m in messages)
    assert bool(attempts.iloc[-1]["gate_passed"]) == (outcome.gate_failures == [])


def test_every_optional_part_off_fits_and_predicts(bare_refit) -> None:
    outcome, _ = bare_refit
    d = outcome.diagnostics
    assert np.isfinite(d["r2"]) and d["r2"] > 0.5
    components = set(outcome.tables["decomposition"]["component"])
    assert "intercept" in components


def test_progress_hook_is_checked_before_use(bare_refit) -> None:
    _, messages = bare_refit
    assert any("draws (tuning included)" in m for m in messages)  # nutpie's hook, where it exists

    class Changed:  # a nutpie whose private sampler factory changed shape
        def _make_sampler(self, settings: object) -> None: ...

    assert not progress_hook_available(Changed())


def _lift_tests() -> LiftTests:
    return LiftTests.from_frame(generate_world(seed=11, n_weeks=104, lift_tests_per_channel=1).lift_tests)


def _fit_ok(data: ModelData, spec: ModelSpec, lift: LiftTests | None) -> None:
    result = fit(data, spec, lift_tests=lift, cache=ModelCache())
    d = insights.diagnostics(result.idata, result.scaling, spec, data, result.carry_in)
    assert np.isfinite(d["r2"]) and d["n_draws"] == spec.sampler.chains * spec.sampler.draws


BOTH = (True, False)
MATRIX = [
    (adstock, saturation, controls, n_fourier, trend, lift)
    for adstock, saturation in itertools.product(("geometric", "delayed"), ("hill", "logistic"))
    for controls, n_fourier, trend, lift in itertools.product(
        (True, False), (0, 2), (True, False), (True, False)
    )
]


@pytest.mark.slow
@pytest.mark.parametrize("sampler", ["nutpie", "pymc"])
@pytest.mark.parametrize(("adstock", "saturation", "controls", "n_fourier", "trend", "lift"), MATRIX)
def test_optional_parts_matrix(
    world_data: ModelData,
    sampler: str,
    adstock: str,
    saturation: str,
    controls: bool,
    n_fourier: int,
    trend: bool,
    lift: bool,
) -> None:
    """Every combination of optional parts, adstock and saturation kinds, lift tests and samplers."""
    spec = ModelSpec(
        adstock=adstock,  # type: ignore[arg-type]
        saturation=saturation,  # type: ignore[arg-type]
        l_max=4,
        n_fourier=n_fourier,
        trend=trend,
        sampler=SMALL.model_copy(update={"name": sampler}),
    )
    _fit_ok(_variant(world_data, controls), spec, _lift_tests() if lift else None)


CLI = str(Path(sys.executable).with_name("mmm-pipeline"))


def test_no_trustworthy_model_exits_1_with_reasons_and_a_page_not_a_traceback(tmp_path: Path) -> None:
    """A gate no fit can pass: the real CLI exits 1 naming the rule, the attempts and next steps (no
    stack trace), BI shows the latest attempts, and the report folder holds the "not yet trustworthy"
    page instead of an executive report."""
    config_path = init_project(tmp_path, "synthetic")
    small_model_config(
        config_path,
        spec={"l_max": 2, "n_fourier": 1, "sampler": {"chains": 2, "draws": 60, "tune": 60, "seed": 1}},
        gate={"min_ess_bulk": 1e9},
        remedies={"max_attempts": 2},
    )
    raw = yaml.safe_load(config_path.read_text())
    raw["cv"] = {"enabled": False}
    config_path.write_text(yaml.safe_dump(raw, sort_keys=False))
    cfg = load_config(config_path)
    write_world(generate_world(seed=4, n_weeks=60, start=cfg.calendar.start), cfg.landing_dir, tmp_path / "t")
    done = subprocess.run(
        [CLI, "--config", str(config_path), "run"], capture_output=True, text=True, timeout=900
    )
    output = done.stdout + done.stderr
    assert done.returncode == 1, output
    assert "Traceback" not in output
    assert "no model of market all has passed the gate yet" in output
    assert "(2 attempt(s)) missed:" in output and "min bulk ESS" in output
    assert "parameters most responsible:" in output and "next step:" in output
    with duckdb.connect(str(cfg.bi_database_path), read_only=True) as bi:
        latest = bi.execute("SELECT status, fit_attempts FROM latest_model_runs").fetchall()
        attempts = bi.execute("SELECT attempt, remedy FROM model_fit_attempts ORDER BY attempt").fetchall()
    assert latest == [("rejected", 2)]
    assert [a[0] for a in attempts] == [1, 2] and "tune 60 -> 120" in attempts[1][1]
    (page,) = (cfg.reports_dir / "all").glob("*/report.html")
    html = page.read_text()
    assert "model not yet trustworthy" in html and "min bulk ESS" in html and "What to do next" in html
    assert json.loads((page.parent / "report.json").read_text())["page"] == "model_not_yet_trustworthy"
    assert f"Model not yet trustworthy, what to do (market all): {page}" in output


def test_per_channel_curve_families_name_configured_channels() -> None:
    from mmm_pipeline.config import ProjectConfig

    base = {"calendar": {"start": "2022-01-03"}, "channels": [{"name": "tv"}, {"name": "search"}]}
    ProjectConfig.model_validate(
        {**base, "model": {"spec": {"saturation_by_channel": {"search": "logistic"}}}}
    )
    with pytest.raises(ValueError, match=r"names \['tvv'\], which are not configured channels"):
        ProjectConfig.model_validate({**base, "model": {"spec": {"saturation_by_channel": {"tvv": "hill"}}}})
