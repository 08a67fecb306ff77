"""Bad-file corpus: throw many kinds of bad and unusual landing files at a loaded project.

A project is made with the real CLI (``mmm-pipeline init --example case-study``, ``import-wide`` of the
demo table, ``run --until features``). Each case then gets a fresh copy of that loaded project, puts its
file(s) in the landing folder and calls the CLI (``run --until features``; no model fit). For each case
it prints the exit code, whether the output named the file, the row(s) and the rule, whether the file
was quarantined, whether any warehouse table, BI relation or published Parquet byte changed (the
delivery audit trail, ``raw.landing_files``, ``raw.quarantined_files`` and ``fct_landing_deliveries``,
is left out: it is meant to change), and a verdict:

- ``reject`` cases pass with a non-zero exit, file and rule named (and the row where the fault is in a
  row), the file quarantined and nothing changed;
- ``load`` cases pass with exit 0 and the data changed (the file was loaded correctly);
- ``same`` cases (duplicates, touched or hidden files) pass with exit 0 and nothing changed.

Any exception escaping the CLI or a ``Traceback`` in its output is a failure of its own.

    .venv/bin/python benchmarks/bench_bad_files.py [--dir DIR] [--only NAME[,NAME...]] [--subprocess]

``--subprocess`` runs each case's CLI as its own ``mmm-pipeline`` process (slower: every call imports
Dagster and PyMC again); by default the CLI's ``main`` runs in this process.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import duckdb
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "mmm_pipeline" / "demo"
#: Audit tables that record deliveries and quarantines: they change by design.
AUDIT = {
    "raw.landing_files",
    "raw.quarantined_files",
    "marts.fct_landing_deliveries",
    "fct_landing_deliveries",
}
NEW_WEEK = "2018-08-05"  # the week after the case study's last one (a Sunday week)
CHANNELS = ("direct_mail", "insert", "newspaper", "radio", "tv", "social", "online_display")


@dataclass
class Case:
    name: str
    expect: str  # reject | load | same
    setup: Callable[[Path, Path], None]  # (landing folder, scratch folder outside the project)
    row_level: bool = False  # a reject whose fault sits in a row: the row must be named


def _media(rows: list[tuple[str, str, str]], header: str = "date,market,channel,spend") -> str:
    return header + "\n" + "\n".join(",".join(r) for r in rows) + "\n"


def _week(spend: str = "100000", date: str = NEW_WEEK, channel: str = "tv", market: str = "all") -> str:
    return _media([(date, market, channel, spend), (date, market, "radio", "90000")])


def _write(rel: str, text: str | bytes) -> Callable[[Path, Path], None]:
    def setup(landing: Path, _scratch: Path) -> None:
        path = landing / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode() if isinstance(text, str) else text)

    return setup


def _gz(text: str) -> bytes:
    return gzip.compress(text.encode())


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return buffer.getvalue()


def _xlsx(sheets: dict[str, pd.DataFrame]) -> bytes:
    buffer = io.BytesIO()
    with pd.ExcelWriter(buffer, engine="openpyxl") as writer:
        for name, frame in sheets.items():
            frame.to_excel(writer, sheet_name=name, index=False)
    return buffer.getvalue()


def _parquet(frame: pd.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    return buffer.getvalue()


def _new_week_frame(spend: float = 100000.0) -> pd.DataFrame:
    return pd.DataFrame({"date": [NEW_WEEK, NEW_WEEK], "channel": ["tv", "radio"], "spend": [spend, 90000.0]})


def _symlink_outside(landing: Path, scratch: Path) -> None:
    target = scratch / "outside.csv"
    target.write_text(_week())
    (landing / "media" / "linked.csv").symlink_to(target)


def _symlink_inside(landing: Path, _scratch: Path) -> None:
    (landing / "media" / "alias.csv").symlink_to(landing / "media" / "case_study_weekly.csv")


def _symlinked_folder(landing: Path, scratch: Path) -> None:
    folder = scratch / "exports"
    folder.mkdir(exist_ok=True)
    (folder / "week.csv").write_text(_week())
    (landing / "media" / "exports").symlink_to(folder, target_is_directory=True)


def _copy_of_media(landing: Path, _scratch: Path) -> None:
    shutil.copy(landing / "media" / "case_study_weekly.csv", landing / "media" / "resent.csv")


def _touch_media(landing: Path, _scratch: Path) -> None:
    os.utime(landing / "media" / "case_study_weekly.csv")


def _lift_test(**fields: str) -> str:
    row = {
        "market": "all",
        "channel": "tv",
        "start_date": "2018-06-03",
        "end_date": "2018-06-30",
        "spend": "100000",
        "delta_spend": "50000",
        "lift": "120000",
        "lift_se": "30000",
    }
    row.update(fields)
    return ",".join(row) + "\n" + ",".join(row.values()) + "\n"


def cases() -> list[Case]:
    w = NEW_WEEK
    kpi = "date,market,sales\n"
    ctl = "date,market,control,value\n"
    out = [
        # numbers in media files
        Case("spend_inf", "reject", _write("media/w.csv", _week("inf")), True),
        Case("spend_minus_inf", "reject", _write("media/w.csv", _week("-inf")), True),
        Case("spend_Infinity", "reject", _write("media/w.csv", _week("Infinity")), True),
        Case("spend_NaN_text", "reject", _write("media/w.csv", _week("NaN")), True),
        Case("spend_1e300", "reject", _write("media/w.csv", _week("1e300")), True),
        Case("spend_1e999_overflow", "reject", _write("media/w.csv", _week("1e999")), True),
        Case("spend_negative", "reject", _write("media/w.csv", _week("-5")), True),
        Case("spend_text", "reject", _write("media/w.csv", _week("abc")), True),
        Case("spend_empty", "reject", _write("media/w.csv", _week("")), True),
        Case("spend_thousands_comma", "reject", _write("media/w.csv", _week('"1,000"')), True),
        Case("spend_currency_symbol", "reject", _write("media/w.csv", _week("$100")), True),
        Case("spend_1000x_history", "reject", _write("media/w.csv", _week("9e10")), True),
        Case("spend_tiny_vs_history_warned", "load", _write("media/w.csv", _week("0.5"))),
        Case(
            "impressions_inf",
            "reject",
            _write("media/w.csv", f"date,channel,spend,impressions\n{w},tv,100,inf\n"),
            True,
        ),
        Case(
            "impressions_negative",
            "reject",
            _write("media/w.csv", f"date,channel,spend,impressions\n{w},tv,100,-3\n"),
            True,
        ),
        # labels and keys
        Case("unknown_channel", "reject", _write("media/w.csv", _week(channel="tiktok")), True),
        Case("market_path_traversal", "reject", _write("media/w.csv", _week(market="../../../../x")), True),
        Case("market_with_slash", "reject", _write("media/w.csv", _week(market="a/b")), True),
        Case("market_with_space", "reject", _write("media/w.csv", _week(market="new york")), True),
        Case("market_dotdot", "reject", _write("media/w.csv", _week(market="x..y")), True),
        Case(
            "duplicate_keys",
            "reject",
            _write("media/w.csv", _media([(w, "all", "tv", "1"), (w, "all", "tv", "2")])),
            True,
        ),
        Case("missing_spend_column", "reject", _write("media/w.csv", f"date,channel\n{w},tv\n")),
        Case("header_only", "reject", _write("media/w.csv", "date,channel,spend\n")),
        Case("zero_bytes", "reject", _write("media/w.csv", "")),
        Case("upper_case_headers", "reject", _write("media/w.csv", f"Date,Channel,Spend\n{w},tv,1\n")),
        Case("semicolon_delimited", "reject", _write("media/w.csv", f"date;channel;spend\n{w};tv;1\n")),
        Case(
            "latin1_bytes",
            "reject",
            _write("media/w.csv", f"date,channel,spend\n{w},tv\xe9,1\n".encode("latin-1")),
        ),
        # dates
        Case("future_date", "reject", _write("media/w.csv", _week(date="2031-01-05")), True),
        Case("before_calendar", "reject", _write("media/w.csv", _week(date="2014-07-27")), True),
        Case("impossible_date", "reject", _write("media/w.csv", _week(date="2018-02-30")), True),
        Case(
            "ambiguous_dd_mm",
            "reject",
            _write(
                "media/w.csv", _media([("05/08/2018", "all", "tv", "1"), ("06/08/2018", "all", "radio", "2")])
            ),
            True,
        ),
        Case(
            "dd_mm_with_day_13",
            "load",
            _write(
                "media/w.csv",
                _media([("05/08/2018", "all", "tv", "100000"), ("13/08/2018", "all", "tv", "100000")]),
            ),
        ),
        Case("dotted_dd_mm", "load", _write("media/w.csv", _week(date="05.08.2018"))),
        Case("iso_timestamp_utc", "load", _write("media/w.csv", _week(date="2018-08-05T00:00:00Z"))),
        Case("iso_timestamp_offset", "load", _write("media/w.csv", _week(date="2018-08-05T23:30:00-05:00"))),
        Case(
            "mixed_date_formats",
            "reject",
            _write("media/w.csv", _media([(w, "all", "tv", "1"), ("06/08/2018", "all", "radio", "2")])),
            True,
        ),
        Case("two_digit_year", "reject", _write("media/w.csv", _week(date="05/08/18")), True),
        Case("empty_date", "reject", _write("media/w.csv", _week(date="")), True),
        # KPI
        Case("kpi_inf", "reject", _write("kpi/w.csv", f"{kpi}{w},all,inf\n"), True),
        Case("kpi_NaN", "reject", _write("kpi/w.csv", f"{kpi}{w},all,NaN\n"), True),
        Case("kpi_negative", "reject", _write("kpi/w.csv", f"{kpi}{w},all,-100\n"), True),
        Case("kpi_text", "reject", _write("kpi/w.csv", f"{kpi}{w},all,n/a\n"), True),
        Case("kpi_1e300", "reject", _write("kpi/w.csv", f"{kpi}{w},all,1e300\n"), True),
        Case("kpi_1000x_history", "reject", _write("kpi/w.csv", f"{kpi}{w},all,9e12\n"), True),
        Case("kpi_missing_column", "reject", _write("kpi/w.csv", f"date,market,revenue\n{w},all,1\n")),
        Case("kpi_valid_new_week", "load", _write("kpi/w.csv", f"{kpi}{w},all,70000000\n")),
        # controls
        Case("control_inf", "reject", _write("controls/w.csv", f"{ctl}{w},all,hldy_easter,inf\n"), True),
        Case("control_nan", "reject", _write("controls/w.csv", f"{ctl}{w},all,hldy_easter,nan\n"), True),
        Case("control_1e300", "reject", _write("controls/w.csv", f"{ctl}{w},all,hldy_easter,1e300\n"), True),
        Case("control_unknown", "reject", _write("controls/w.csv", f"{ctl}{w},all,weather,1\n"), True),
        Case("control_text", "reject", _write("controls/w.csv", f"{ctl}{w},all,hldy_easter,yes\n"), True),
        # lift tests
        Case(
            "lift_unknown_channel", "reject", _write("lift_tests/t.csv", _lift_test(channel="tiktok")), True
        ),
        Case("lift_se_zero", "reject", _write("lift_tests/t.csv", _lift_test(lift_se="0")), True),
        Case("lift_inf", "reject", _write("lift_tests/t.csv", _lift_test(lift="inf")), True),
        Case("lift_valid", "load", _write("lift_tests/t.csv", _lift_test())),
        # formats
        Case("csv_gz_valid", "load", _write("media/w.csv.gz", _gz(_week()))),
        Case("csv_gz_inf", "reject", _write("media/w.csv.gz", _gz(_week("inf"))), True),
        Case("csv_gz_corrupt", "reject", _write("media/w.csv.gz", b"\x1f\x8bnot really gzip")),
        Case("zip_one_csv", "load", _write("media/w.zip", _zip({"week.csv": _week().encode()}))),
        Case(
            "zip_two_csvs",
            "reject",
            _write("media/w.zip", _zip({"a.csv": _week().encode(), "b.csv": _week().encode()})),
        ),
        Case("zip_empty", "reject", _write("media/w.zip", _zip({}))),
        Case("zip_corrupt", "reject", _write("media/w.zip", b"PK\x03\x04garbage")),
        Case("xlsx_valid", "load", _write("media/w.xlsx", _xlsx({"media": _new_week_frame()}))),
        Case(
            "xlsx_two_sheets",
            "reject",
            _write("media/w.xlsx", _xlsx({"a": _new_week_frame(), "b": _new_week_frame()})),
        ),
        Case("xlsx_inf", "reject", _write("media/w.xlsx", _xlsx({"m": _new_week_frame(float("inf"))})), True),
        Case("xls_legacy", "reject", _write("media/w.xls", b"\xd0\xcf\x11\xe0 legacy excel")),
        Case("txt_file", "reject", _write("media/w.txt", _week())),
        Case("json_file", "reject", _write("media/w.json", '{"date": "2018-08-05"}')),
        Case("parquet_valid", "load", _write("media/w.parquet", _parquet(_new_week_frame()))),
        Case(
            "parquet_inf", "reject", _write("media/w.parquet", _parquet(_new_week_frame(float("inf")))), True
        ),
        Case("parquet_corrupt", "reject", _write("media/w.parquet", b"PAR1 broken")),
        # layout
        Case("file_at_landing_top", "reject", _write("w.csv", _week())),
        Case("file_in_unknown_folder", "reject", _write("misc/w.csv", _week())),
        Case("subfolder_of_kind", "load", _write("media/2018/w.csv", _week())),
        Case("symlink_outside", "reject", _symlink_outside),
        Case("symlink_inside_duplicate", "same", _symlink_inside),
        Case("symlinked_folder", "reject", _symlinked_folder),
        Case("hidden_file_skipped", "same", _write("media/.w.csv", _week("inf"))),
        Case("temp_file_skipped", "same", _write("media/~w.csv", _week("inf"))),
        # re-deliveries and odd but valid CSVs
        Case("exact_copy_new_name", "same", _copy_of_media),
        Case("touched_unchanged", "same", _touch_media),
        Case("utf8_bom", "load", _write("media/w.csv", b"\xef\xbb\xbf" + _week().encode())),
        Case("crlf_line_endings", "load", _write("media/w.csv", _week().replace("\n", "\r\n"))),
        Case(
            "padded_values", "load", _write("media/w.csv", _media([(f" {w} ", " all ", " TV ", " 100000 ")]))
        ),
        Case(
            "extra_column",
            "load",
            _write(
                "media/w.csv", _media([(w, "all", "tv", "100000", "x")], "date,market,channel,spend,note")
            ),
        ),
        Case("alias_label", "load", _write("media/w.csv", _week(channel="mdsp_vidtr"))),
    ]
    return out


# ---- snapshots ------------------------------------------------------------------------------------


def _digest(conn: duckdb.DuckDBPyConnection, relation: str) -> str:
    rows = conn.execute(f"SELECT * FROM {relation} ORDER BY ALL").fetchall()
    return hashlib.sha256(repr(rows).encode()).hexdigest()


def snapshot(project: Path) -> dict[str, str]:
    """Digest of every warehouse table, BI relation and published Parquet file but the audit trail."""
    data = project / "data"
    out: dict[str, str] = {}
    with duckdb.connect(str(data / "warehouse.duckdb"), read_only=True) as conn:
        tables = conn.execute(
            "SELECT schema_name || '.' || table_name FROM duckdb_tables() WHERE NOT internal"
        ).fetchall()
        for (name,) in tables:
            if name not in AUDIT:
                out[f"warehouse:{name}"] = _digest(conn, name)
    with duckdb.connect(str(data / "bi.duckdb"), read_only=True) as bi:
        for (name,) in bi.execute("SELECT name FROM published_tables").fetchall():
            if name not in AUDIT:
                out[f"bi:{name}"] = _digest(bi, f'"{name}"')
    for path in sorted((data / "published").rglob("*")):
        if path.is_file() and "fct_landing_deliveries" not in path.name:
            out[f"parquet:{path.relative_to(data)}"] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


# ---- running the CLI ------------------------------------------------------------------------------


def cli(argv: list[str], use_subprocess: bool) -> tuple[int, str, bool]:
    """(exit code, stdout + stderr, whether a traceback escaped)."""
    if use_subprocess:
        env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
        done = subprocess.run(
            [str(Path(sys.executable).parent / "mmm-pipeline"), *argv],
            capture_output=True,
            text=True,
            env=env,
        )
        text = done.stdout + done.stderr
        return done.returncode, text, "Traceback (most recent call last)" in text
    from mmm_pipeline.cli import main

    out, err = io.StringIO(), io.StringIO()
    crashed = False
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        except Exception:  # noqa: BLE001 - an escaping exception is exactly what is measured
            import traceback

            traceback.print_exc()
            code, crashed = 1, True
    text = out.getvalue() + err.getvalue()
    return code, text, crashed or "Traceback (most recent call last)" in text


def load_base(base: Path, use_subprocess: bool) -> None:
    steps = [
        ["init", str(base), "--example", "case-study"],
        [
            "--config",
            str(base / "mmm_pipeline.yaml"),
            "import-wide",
            str(DEMO / "case_study_weekly.csv"),
            "--mapping",
            str(DEMO / "case_study_mapping.yaml"),
        ],
        ["--config", str(base / "mmm_pipeline.yaml"), "run", "--until", "features"],
    ]
    for argv in steps:
        code, text, _ = cli(argv, use_subprocess)
        if code != 0:
            raise SystemExit(f"loading the base project failed ({' '.join(argv)}):\n{text}")


def quarantined(project: Path) -> bool:
    folder = project / "data" / "quarantine"
    return folder.exists() and any(p.name.endswith(".error.json") for p in folder.rglob("*"))


def run_case(case: Case, base: Path, work: Path, use_subprocess: bool) -> dict:
    project = work / case.name
    scratch = work / f"{case.name}__outside"
    shutil.copytree(base, project, symlinks=True)
    scratch.mkdir()
    before = snapshot(project)
    landing = project / "data" / "landing"
    before_files = {p for p in landing.rglob("*")}
    case.setup(landing, scratch)
    added = sorted({p for p in landing.rglob("*")} - before_files)
    file_name = added[-1].name if added else "case_study_weekly.csv"
    code, text, crashed = cli(
        ["--config", str(project / "mmm_pipeline.yaml"), "run", "--until", "features"], use_subprocess
    )
    after = snapshot(project)
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    named_file = file_name in text
    named_rule = "rule '" in text
    named_row = "row(s)" in text
    moved = quarantined(project)
    if case.expect == "reject":
        ok = (
            code != 0
            and not crashed
            and named_file
            and named_rule
            and (named_row or not case.row_level)
            and moved
            and not changed
        )
    elif case.expect == "load":
        ok = code == 0 and not crashed and bool(changed) and not moved
    else:
        ok = code == 0 and not crashed and not changed and not moved
    shutil.rmtree(project, ignore_errors=True)
    shutil.rmtree(scratch, ignore_errors=True)
    return {
        "case": case.name,
        "expect": case.expect,
        "exit": code,
        "file": named_file,
        "row": named_row,
        "rule": named_rule,
        "quarantined": moved,
        "changed": len(changed),
        "warned": "Warnings:" in text,
        "traceback": crashed,
        "ok": ok,
        "text": text,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", help="work folder (default: a temporary one, removed at the end)")
    parser.add_argument("--only", help="comma-separated case names")
    parser.add_argument("--subprocess", action="store_true", help="one mmm-pipeline process per CLI call")
    parser.add_argument("--show", action="store_true", help="print the CLI output of failing cases")
    args = parser.parse_args()
    os.environ.pop("DAGSTER_HOME", None)  # each project uses its own instance folder
    chosen = cases()
    if args.only:
        names = set(args.only.split(","))
        chosen = [c for c in chosen if c.name in names]
    work = Path(args.dir) if args.dir else Path(tempfile.mkdtemp(prefix="bad_files_"))
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    base = work / "base"
    if not (base / "data" / "bi.duckdb").exists():
        load_base(base, args.subprocess)
    print(f"{len(chosen)} cases against {base} (loaded in {time.perf_counter() - started:.0f}s)\n")
    header = (
        f"{'case':<30} {'expect':<6} {'exit':>4} {'file':>5} {'row':>4} {'rule':>5} {'quar':>5} "
        f"{'chg':>4} {'warn':>5} {'trace':>5}  verdict"
    )
    print(header)
    results = []
    for case in chosen:
        r = run_case(case, base, work, args.subprocess)
        results.append(r)
        yn = {True: "y", False: "-"}
        print(
            f"{r['case']:<30} {r['expect']:<6} {r['exit']:>4} {yn[r['file']]:>5} {yn[r['row']]:>4} "
            f"{yn[r['rule']]:>5} {yn[r['quarantined']]:>5} {r['changed']:>4} {yn[r['warned']]:>5} "
            f"{yn[r['traceback']]:>5}  {'ok' if r['ok'] else 'FAIL'}",
            flush=True,
        )
        if args.show and not r["ok"]:
            print("    " + r["text"][-3000:].replace("\n", "\n    "))
    failed = [r for r in results if not r["ok"]]
    silent = [r for r in results if r["expect"] != "load" and r["changed"]]
    print(
        f"\ntotals: {len(results)} cases, {len(results) - len(failed)} ok, {len(failed)} failed; "
        f"rejected {sum(r['expect'] == 'reject' and r['ok'] for r in results)}/"
        f"{sum(r['expect'] == 'reject' for r in results)}, "
        f"loaded {sum(r['expect'] == 'load' and r['ok'] for r in results)}/"
        f"{sum(r['expect'] == 'load' for r in results)}, "
        f"unchanged {sum(r['expect'] == 'same' and r['ok'] for r in results)}/"
        f"{sum(r['expect'] == 'same' for r in results)}; "
        f"silent changes {len(silent)}, tracebacks {sum(r['traceback'] for r in results)}"
        f" ({time.perf_counter() - started:.0f}s)"
    )
    if failed:
        print("failed: " + ", ".join(r["case"] for r in failed))
    if not args.dir:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
