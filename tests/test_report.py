"""The executive report and the BI marts on a real project: the suite's shared two-market synthetic
project, fitted, cross-validated, optimized, published and reported once (small draws); the tests read
market north's report files, the Dagster instance and the BI catalog.

The numbers the report shows are checked against the BI catalog formatted with the report's own
filters, so a report that drifted from BI (another source, another rounding) fails here. Chromium is not
needed: the HTML is checked for being self-contained (``scripts/report_screenshot.sh`` looks at it).
"""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import pandas as pd
import pytest

from mmm_pipeline.config import load_config
from mmm_pipeline.report import (
    SECTIONS,
    CheckStatus,
    build_report,
    html_problems,
    latest_report,
    load_report_data,
    read_manifest,
)
from mmm_pipeline.report.render import fmt_num, fmt_pct, fmt_ratio, fmt_signed, fmt_signed_pct
from mmm_pipeline.runner import INPUTS_SCOPE, project_instance, run_pipeline

MARKET = "north"
DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.fixture(scope="module")
def project(
    fitted_two_markets: tuple[Path, object], two_markets_project: tuple[Path, object]
) -> dict[str, object]:
    """The suite's shared first run (read here, never changed), and two more runs on a copy of it."""
    directory, first = fitted_two_markets
    cfg = load_config(directory / "mmm_pipeline.yaml")
    out: dict[str, object] = {"cfg": cfg, "directory": directory, "first": first}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(directory / "dagster_home"))
        instance = project_instance(cfg)
        out["folder"] = latest_report(cfg.reports_dir, MARKET)
        (record,) = instance.fetch_materializations(
            dg.AssetRecordsFilter(asset_key=dg.AssetKey("executive_report"), asset_partitions=[MARKET]),
            limit=1,
        ).records
        out["event"] = record.event_log_entry
        out["ui_metadata"] = {
            name: instance.fetch_materializations(
                dg.AssetRecordsFilter(asset_key=dg.AssetKey(name), asset_partitions=[MARKET]), limit=1
            )
            .records[0]
            .event_log_entry.asset_materialization.metadata
            for name in ("model_fit", "model_registry", "budget_recommendation", "executive_report")
        }
        check = dg.AssetCheckKey(dg.AssetKey("executive_report"), "report_complete")
        out["checks"] = instance.event_log_storage.get_asset_check_execution_history(check, limit=10)
    config_path, _ = two_markets_project
    copy = load_config(config_path)
    out["copy_cfg"] = copy
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DAGSTER_HOME", str(config_path.parent / "dagster_home"))
        instance = project_instance(copy)
        # Nothing new: no refit, and the report is current, so it is not written again.
        messages: list[str] = []
        out["second"] = run_pipeline(copy, instance=instance, log=messages.append)
        out["second_log"] = list(messages)
        # A report folder that went missing is written again by the next run (no refit).
        shutil.rmtree(copy.reports_dir)
        messages.clear()
        out["third"] = run_pipeline(copy, instance=instance, log=messages.append)
        out["third_log"] = list(messages)
    return out


def _bi(cfg, sql: str, params: list | None = None) -> pd.DataFrame:
    with duckdb.connect(str(cfg.bi_database_path), read_only=True) as bi:
        return bi.execute(sql, params or []).df()


def test_the_run_writes_a_dated_report_folder(project: dict) -> None:
    assert project["first"].ok, project["first"].problems
    cfg, folder = project["cfg"], project["folder"]
    assert folder is not None and folder.parent == cfg.reports_dir / MARKET
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", folder.name)
    assert {p.name for p in folder.iterdir()} == {"report.html", "report.md", "report.json", "figures"}
    assert {p.name for p in (folder / "figures").iterdir()} >= {
        "budget.png", "roas.png", "response_curves.png", "adstock.png", "decomposition.png", "waterfall.png",
        "roas_by_fold.png",
    }  # fmt: skip
    assert not list(folder.parent.glob(".*"))  # written aside, renamed: no temporary folder left
    manifest = read_manifest(folder)
    champion = _bi(cfg, "SELECT model_id FROM champion_model_runs WHERE market = ?", [MARKET])
    plan = _bi(cfg, "SELECT optimization_id FROM latest_plan_summary WHERE market = ?", [MARKET])
    assert manifest["model_id"] == champion["model_id"].item()
    assert manifest["optimization_id"] == plan["optimization_id"].item()
    # every section: "tracking" states the alarms' false-alarm rate before any week is tracked, and
    # "scorecard" holds the recommendation's promise while its week has not landed
    assert manifest["sections"] == [a for a, _ in SECTIONS]
    # The Markdown links the figures written beside it.
    markdown = (folder / "report.md").read_text()
    for link in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", markdown):
        assert (folder / link).is_file(), link


def test_html_is_self_contained_with_every_section(project: dict) -> None:
    html = (project["folder"] / "report.html").read_text()
    sections = [a for a, _ in SECTIONS if a != "tracking"]
    assert html_problems(html, sections) == []
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html, re.I)
    assert "<script" not in html and "<link" not in html and "@import" not in html
    assert "@media print" in html
    images = re.findall(r"<img src=\"([^\"]+)\"", html)
    assert len(images) >= 7 and all(src.startswith("data:image/png;base64,") for src in images)
    positions = [html.index(f'id="{a}"') for a in sections]
    assert positions == sorted(positions)  # in the order a busy reader needs them
    assert html_problems(html.replace('id="trust"', ""), sections) == ["section 'trust' missing"]
    assert html_problems('<img src="https://cdn.example/x.png">', [])


def test_report_numbers_are_the_bi_catalogs(project: dict) -> None:
    cfg, folder = project["cfg"], project["folder"]
    html = (folder / "report.html").read_text()
    markdown = (folder / "report.md").read_text()
    plan = _bi(cfg, "SELECT * FROM latest_plan_summary WHERE market = ?", [MARKET]).iloc[0]
    headline = [fmt_signed(plan[c]) for c in ("uplift_mean", "uplift_hdi_low", "uplift_hdi_high")]
    headline += [fmt_signed_pct(plan["uplift_pct"]), fmt_pct(plan["prob_uplift_positive"])]
    headline += [fmt_ratio(plan["roas_current"]), fmt_ratio(plan["roas_recommended"])]
    headline += [fmt_num(plan["total_recommended"])]
    channels = _bi(cfg, "SELECT * FROM champion_channel_summary WHERE market = ?", [MARKET])
    per_channel = [
        fmt_ratio(v)
        for c in ("roas_mean", "roas_hdi_low", "roas_hdi_high", "mroas_mean")
        for v in channels[c]
    ] + [fmt_num(v) for v in channels["contribution_mean"]]
    quarter = _bi(
        cfg,
        "SELECT * FROM champion_channel_period_summary WHERE market = ? AND period_type = 'quarter' "
        "AND complete QUALIFY rank() OVER (ORDER BY period_start DESC) = 1",
        [MARKET],
    )
    assert len(quarter) == len(channels)
    per_quarter = [fmt_ratio(v) for c in ("roas_mean", "roas_hdi_low", "roas_hdi_high") for v in quarter[c]]
    recommendations = _bi(cfg, "SELECT * FROM latest_recommendations WHERE market = ?", [MARKET])
    per_recommendation = [fmt_num(v) for c in ("current", "recommended") for v in recommendations[c]]
    cv = _bi(cfg, "SELECT * FROM champion_cv_metrics WHERE market = ? AND scope = 'overall'", [MARKET])
    per_cv = [fmt_num(v) for v in cv["crps"]]
    scenarios = _bi(cfg, "SELECT * FROM latest_scenarios WHERE market = ?", [MARKET])
    per_scenario = [fmt_signed(v) for v in scenarios["uplift_mean"]]
    run = _bi(cfg, "SELECT * FROM champion_model_runs WHERE market = ?", [MARKET]).iloc[0]
    diagnostics = [fmt_num(run["max_r_hat"], 3), fmt_num(run["r2"], 3), fmt_pct(run["mape"], 1)]
    expected = headline + per_channel + per_quarter + per_recommendation + per_cv + per_scenario + diagnostics
    for text in (html, markdown):
        missing = [value for value in expected if value not in text]
        assert not missing, missing
    assert f"Last complete quarter: {quarter['period'].iloc[0]}" in html


def test_tracked_performance_section_only_with_rows(project: dict) -> None:
    cfg = project["cfg"]
    data = load_report_data(cfg.bi_database_path, MARKET, cfg.kpi.name)
    assert data.tracking.empty and not data.history.empty  # the champion has no week after its fit yet
    data.history = data.history.iloc[0:0]
    assert "Tracked performance" not in build_report(data).html
    weeks = pd.date_range("2024-01-01", periods=6, freq="W-MON")
    actual = np.array([100.0, 110, 95, 120, 105, 98])
    data.tracking = pd.DataFrame(
        {
            "market": MARKET, "model_id": data.model_id, "week": weeks, "actual": actual,
            "pred_mean": actual * 1.02, "pred_50_low": actual * 0.95, "pred_50_high": actual * 1.05,
            "pred_94_low": actual * 0.9, "pred_94_high": actual * 1.1,
            "in_50": [True, True, False, True, True, True], "in_94": [True, True, True, True, True, False],
            "error": actual * 0.02, "rolling_mape": 0.0425, "crps": 1.5,
        }
    )  # fmt: skip
    report = build_report(data)
    assert "tracking" in report.sections and 'id="tracking"' in report.html
    assert "6 weeks tracked" in report.html and "83% inside the 94% interval" in report.html
    assert "latest rolling MAPE 4.2%" in report.markdown
    assert html_problems(report.html, report.sections) == []
    assert "Recommended allocation over time" not in report.html  # one optimization: no trend yet


def test_optimization_history_charts_from_two_optimizations(project: dict) -> None:
    cfg = project["cfg"]
    data = load_report_data(cfg.bi_database_path, MARKET, cfg.kpi.name)
    first = data.history[data.history["optimization_id"] == data.history["optimization_id"].iloc[0]]
    later = first.assign(
        optimization_id="opt-later", created_at=first["created_at"] + pd.Timedelta(days=7), trigger="drift",
        recommended_spend=first["recommended_spend"] * 1.1, expected_kpi=first["expected_kpi"] * 1.01,
    )  # fmt: skip
    data.history = pd.concat([first, later], ignore_index=True)
    report = build_report(data)
    assert "tracking" in report.sections
    for title in ("Forecast KPI of the plan weeks", "Recommended allocation over time"):
        assert title in report.html and title in report.markdown
    assert "2 recommendations" in report.html and "drift: 1" in report.html
    assert html_problems(report.html, report.sections) == []


def test_dagster_shows_the_markdown_and_the_check(project: dict) -> None:
    event = project["event"]
    assert event is not None and event.dagster_event.partition == MARKET
    metadata = event.asset_materialization.metadata
    assert metadata["report_html"].value == str(project["folder"] / "report.html")
    markdown = metadata["report"].value
    assert markdown.startswith("# ") and "## 5. Can we trust it" in markdown and "![" not in markdown
    assert metadata["chart_roas"].value.startswith("![")
    checks = project["checks"]  # one execution per market's report, each passed
    assert len(checks) == 2 and all(c.status.value == "SUCCEEDED" for c in checks)


def test_runner_writes_the_report_only_when_out_of_date(project: dict) -> None:
    assert project["second"].ok and project["third"].ok, project["third"].problems
    assert any("already covers" in m for m in project["second_log"])
    assert not any("writing it" in m for m in project["second_log"])
    # the second run only re-hashes each market's inputs; nothing is stale, so nothing else runs
    def model_runs(summary: object) -> list[tuple]:
        return [r for r in summary.runs if r[0] == "refit_model" and not r[3].endswith(INPUTS_SCOPE)]

    assert model_runs(project["second"]) == []
    assert any("no report folder" in m for m in project["third_log"])
    third = model_runs(project["third"])
    assert [r[3] for r in third] == ["north", "south"]  # each market's report only, no refit
    assert not any("fitting the model" in m for m in project["third_log"])
    assert latest_report(project["copy_cfg"].reports_dir, MARKET) is not None


def _documented() -> dict[str, list[str] | None]:
    """Relation -> documented columns (None: defined by continuous operation), from docs/bi_marts.md."""
    out: dict[str, list[str] | None] = {}
    names: list[str] = []
    for line in (DOCS / "bi_marts.md").read_text().splitlines():
        if line.startswith("### "):
            names = re.findall(r"`([a-z_]+)`", line)
            assert names, line
        elif line.startswith("Columns:") and names:
            columns = re.findall(r"`([^`]+)`", line) or None
            out |= dict.fromkeys(names, columns)
            names = []
    return out


def _matches(documented: list[str], actual: list[str]) -> bool:
    """Documented columns (``spend_<channel>`` stands for one column per channel) against the actual ones."""
    patterns = [re.compile(re.sub(r"<[a-z]+>", "[a-z0-9_]+", re.escape(c))) for c in documented]
    return all(any(p.fullmatch(c) for p in patterns) for c in actual) and all(
        any(p.fullmatch(c) for c in actual) for p in patterns
    )


def test_every_bi_relation_is_documented_and_vice_versa(project: dict) -> None:
    cfg = project["cfg"]
    documented = _documented()
    with duckdb.connect(str(cfg.bi_database_path), read_only=True) as bi:
        published = [r[0] for r in bi.execute("SELECT name FROM published_tables").fetchall()]
        columns = {
            name: [r[0] for r in bi.execute(f'DESCRIBE "{name}"').fetchall()]
            for name in [*published, "published_tables"]
        }
    catalog = set(columns)
    assert catalog - set(documented) == set(), "undocumented BI relations"
    assert set(documented) - catalog == set(), "documented but not published"
    for name in catalog:
        assert _matches(documented[name], columns[name]), (name, documented[name], columns[name])


def test_example_queries_run_and_answer_the_tv_question(project: dict) -> None:
    cfg = project["cfg"]
    sql = re.sub(r"--[^\n]*", "", (DOCS / "bi_queries.sql").read_text())
    statements = [s.strip() for s in sql.split(";") if s.strip()]
    assert len(statements) >= 10
    with duckdb.connect(str(cfg.bi_database_path), read_only=True) as bi:
        for statement in statements:
            bi.execute(statement).df()
        tv = bi.execute(statements[0]).df()
    assert sorted(tv["market"]) == ["north", "south"]  # one row per market
    for _, row in tv.iterrows():
        assert row["roas_hdi_low"] <= row["roas_mean"] <= row["roas_hdi_high"]
        assert row["roas_mean"] == pytest.approx(row["contribution_mean"] / row["spend"], rel=1e-9)


def test_a_rejected_newest_refit_is_named_and_the_champion_reported(project: dict) -> None:
    cfg = project["cfg"]
    data = load_report_data(cfg.bi_database_path, MARKET, cfg.kpi.name)
    assert data.latest_run is not None and data.latest_run["model_id"] == data.model_id
    assert "newest refit" not in build_report(data).html
    data.latest_run = data.run.copy()
    data.latest_run[["model_id", "status", "promotion_blocked_by"]] = ["north-x", "rejected", "max R-hat 1.3"]
    report = build_report(data)
    assert "The newest refit (north-x" in report.html and "was rejected: max R-hat 1.3" in report.html
    assert report.manifest["model_id"] == data.model_id


def test_without_a_recommendation_the_model_sections_still_render(project: dict) -> None:
    """Optimization switched off (or no feasible plan yet): no headline figures, actions or scenarios."""
    cfg = project["cfg"]
    data = load_report_data(cfg.bi_database_path, MARKET, cfg.kpi.name)
    data.plan = None
    data.recommendations = data.recommendations.iloc[0:0]
    data.scenarios = data.scenarios.iloc[0:0]
    data.scorecard = data.scorecard.iloc[0:0]  # no recommendation ever: nothing to score
    report = build_report(data)
    assert report.sections == ["headline", "channels", "decomposition", "trust", "next-steps"]
    assert html_problems(report.html, report.sections) == []
    assert "No budget recommendation has been published" in report.html
    assert report.manifest["optimization_id"] is None and "budget" not in {c.name for c in report.charts}


def test_weak_figures_get_plain_language_warnings(project: dict) -> None:
    """Spend outside the historical range, a failed data-quality check and a quarantined file are named."""
    cfg = project["cfg"]
    data = load_report_data(cfg.bi_database_path, MARKET, cfg.kpi.name)
    channel = data.recommendations["channel"].iloc[0]
    data.recommendations.loc[data.recommendations.index[0], "range_flag"] = "above_history"
    data.checks = [CheckStatus("landing_files", "known_channels", "FAILED"), *data.checks]
    data.deliveries = pd.concat(
        [data.deliveries, pd.DataFrame([{"kind": "media", "outcome": "quarantined", "files": 2, "rows": 0}])]
    )
    report = build_report(data)
    assert f"{channel}: the recommended weekly spend" in report.html and "above history" in report.html
    assert "Data-quality checks failed: known_channels on landing_files" in report.markdown
    assert "2 landing file(s) were quarantined" in report.markdown
    rows = data.recommendations
    flagged = ", ".join(c for c, flag in zip(rows["channel"], rows["range_flag"], strict=True) if flag)
    assert channel in flagged  # with any channel the data itself put outside its range
    assert f"Spend outside the historical range ({flagged})" in report.markdown



# --- what a reader sees --------------------------------------------------------------------------------


def _visible_text(html: str) -> str:
    """The HTML's text as a browser shows it: no tags, styles or embedded images; entities decoded."""
    import html as html_lib

    body = re.sub(r"<style.*?</style>", " ", html, flags=re.S)
    body = re.sub(r"</?(?:td|th|tr|li|p|div|h\d|table|ul|br|figure|figcaption|section)\b[^>]*>", " ", body)
    body = re.sub(r"<[^>]+>", "", body)  # inline tags (strong, span) join their text
    return re.sub(r"\s+", " ", html_lib.unescape(body))


#: What a reader should never meet: a float's raw digits, scientific notation, a missing value's code name,
#: a timestamp to the microsecond.
RAW = {
    "raw float": re.compile(r"\d\.\d{5,}"),
    # a number on its own, not a hex run inside an id such as north-20231225-5e8c1f2a
    "scientific notation": re.compile(r"(?<![\w.-])\d(?:\.\d+)?e[+-]?\d+(?![\w-])", re.I),
    "nan/None": re.compile(r"\b(?:nan|NaN|None|NaT|inf)\b"),
    "microseconds": re.compile(r"\d{2}:\d{2}:\d{2}\.\d"),
}


def _raw_figures(text: str) -> dict[str, list[str]]:
    return {name: pattern.findall(text) for name, pattern in RAW.items() if pattern.findall(text)}


def test_a_reader_sees_readable_figures_only(project: dict) -> None:
    folder = project["folder"]
    html = _visible_text((folder / "report.html").read_text())
    markdown = re.sub(r"!\[[^\]]*\]\([^)]+\)", "", (folder / "report.md").read_text())
    for text in (html, markdown):
        assert _raw_figures(text) == {}, _raw_figures(text)
    assert "against today's allocation" in html and "vs today's allocation" in html
    # the patterns do catch what they are for
    assert set(_raw_figures("R-hat 1.0063717687281377, CRPS 1.874e+07, nan, 21:02:03.081145")) == set(RAW)
    assert _raw_figures("model north-20231225-5e8c1f2a, all-20180729-41e31917") == {}


def test_every_recommended_change_is_an_action_with_its_binding_rule(project: dict) -> None:
    cfg, folder = project["cfg"], project["folder"]
    html = (folder / "report.html").read_text()
    actions = re.search(r'<ul class="actions">(.*?)</ul>', html, re.S).group(1)
    items = [_visible_text(li) for li in re.findall(r"<li>(.*?)</li>", actions, re.S)]
    rec = _bi(cfg, "SELECT * FROM latest_recommendations WHERE market = ?", [MARKET])
    rec = rec.sort_values(["change", "channel"], ascending=[False, True])
    changed = rec[(rec["recommended"] - rec["current"]).abs() >= 0.005 * rec["current"]]
    assert len(changed) >= 2
    # every change is listed, in the order of the table and chart beside it (largest increase first)
    listed = [re.match(r"\s*(?:Increase|Decrease|Stop|Start) (\S+):", item) for item in items]
    assert [m.group(1) for m in listed if m] == list(changed["channel"])
    table = re.search(r'<section id="actions">.*?<table>(.*?)</table>', html, re.S).group(1)
    rows = [_visible_text(r).split()[0] for r in re.findall(r"<tr><td>(.*?)</td>", table, re.S)]
    assert rows == list(rec["channel"])
    # each change says what holds it (this plan's optimum is held by the budget and by zero spend)
    kinds = ["bound", "share", "ratio", "history cap", "total", "off", "none"]
    assert rec["binding_kind"].isin(kinds).all()
    for r in changed.itertuples():
        item = next(i for i in items if f" {r.channel}:" in i)
        expected = {"total": f"held by the total budget: its next unit returns {fmt_ratio(r.shadow_price)}",
                    "off": "switched off"}.get(r.binding_kind, r.binding_rule)  # fmt: skip
        assert expected in item, item
    assert "rank" in " ".join(items)


def test_a_channel_held_by_a_plan_rule_names_it_and_its_shadow_price(project: dict) -> None:
    cfg = project["cfg"]
    data = load_report_data(cfg.bi_database_path, MARKET, cfg.kpi.name)
    i = data.recommendations["change"].idxmax()
    channel = data.recommendations.loc[i, "channel"]
    data.recommendations.loc[i, ["binding_rule", "binding_kind", "binding_description", "shadow_price"]] = [
        f"channels.{channel}.max_change_pct", "bound", f"{channel} <= 1,234 (+50% of current 823)", 12.345
    ]  # fmt: skip
    report = build_report(data)
    item = _visible_text(
        re.search(rf"<li><strong>\w+ {channel}</strong>.*?</li>", report.html, re.S).group(0)
    )
    assert f"held by the plan's bound rule channels.{channel}.max_change_pct ({channel} <= 1,234" in item
    assert "loosening it would add 12.35 sales per extra unit of budget" in item, item
    assert f"bound: channels.{channel}.max_change_pct (12.35)" in _visible_text(report.html)
    assert f"held by the plan's bound rule channels.{channel}.max_change_pct" in report.markdown


def test_dagster_metadata_shows_no_raw_floats(project: dict) -> None:
    for asset, metadata in project["ui_metadata"].items():
        for key, value in metadata.items():
            if isinstance(value, dg.FloatMetadataValue):
                shown = repr(value.value)
                assert not RAW["raw float"].search(shown) or abs(value.value) < 1e-3, (asset, key, shown)
                assert value.value == value.value, (asset, key)  # no NaN
            elif isinstance(value, dg.MarkdownMetadataValue | dg.TextMetadataValue):
                text = re.sub(r"\(data:image/png;base64,[^)]+\)", "", str(value.value))
                assert _raw_figures(text) == {}, (asset, key, _raw_figures(text))
    why = project["ui_metadata"]["budget_recommendation"]["why_there"].value
    rec = _bi(project["cfg"], "SELECT * FROM latest_recommendations WHERE market = ?", [MARKET])
    assert len(why.splitlines()) == len(rec)
    for r in rec.itertuples():
        assert f"- **{r.channel}**" in why and "marginal ROAS" in why
