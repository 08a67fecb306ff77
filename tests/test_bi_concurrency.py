"""BI reads while the pipeline writes: reader processes query bi.duckdb in a loop during real runs."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time

import pandas as pd
from conftest import run

READER = textwrap.dedent(
    """
    import json, os, sys, time, duckdb
    bi, stop, out, mode = sys.argv[1:5]
    # "held": a BI tool that keeps the catalog open all along; "fresh": one that connects per query.
    # One thread and a pause between queries: a reader must not take the cores the run needs.
    def connect():
        return duckdb.connect(bi, read_only=True, config={"threads": 1})
    held = connect() if mode == "held" else None
    seen, errors, reads = set(), [], 0
    deadline = time.time() + 240
    while not os.path.exists(stop) and time.time() < deadline:
        try:
            c = held or connect()
            n, tv = c.execute("SELECT count(*), sum(spend_tv) FROM fct_modeling_weekly").fetchone()
            seen.add((n, round(tv, 2)))
            reads += 1
            open(out + ".ready", "w").close()
            if held is None:
                c.close()
        except Exception as exc:
            errors.append(repr(exc))
        time.sleep(0.05)
    json.dump({"seen": sorted(seen), "errors": errors, "reads": reads}, open(out, "w"))
    """
)


def test_reader_never_blocks_the_run_nor_sees_half_a_table(case_study, tmp_path) -> None:
    cfg = case_study
    # The copied catalog points at the original project's snapshots: republish this project's first.
    assert run(cfg, weeks="2016-01-03..2016-01-03").ok
    stop = tmp_path / "stop"
    readers = {
        mode: subprocess.Popen(
            [sys.executable, "-c", READER, str(cfg.bi_database_path), str(stop), str(tmp_path / mode), mode]
        )
        for mode in ("held", "fresh")
    }
    while not all((tmp_path / f"{mode}.ready").exists() for mode in readers):  # both read the old one
        time.sleep(0.05)
    try:
        path = cfg.landing_dir / "media" / "case_study_weekly_2016-01-03.csv"
        frame = pd.read_csv(path)
        frame.loc[frame["channel"] == "tv", "spend"] += 1000.0
        frame.to_csv(path, index=False)
        for _ in range(2):  # rebuild a quarter and republish every mart, twice
            summary = run(cfg, weeks="2015-11-01..2016-01-31")
            assert summary.ok, summary.problems
    finally:
        stop.touch()
        for reader in readers.values():
            reader.wait(timeout=60)
    held, fresh = (json.loads((tmp_path / mode).read_text()) for mode in ("held", "fresh"))
    for result in (held, fresh):
        assert result["errors"] == []
        assert result["reads"] > 20
        assert {n for n, _ in result["seen"]} == {208}  # never a partial table
    # A new connection sees the old snapshot, then the corrected one; nothing in between.
    assert len(fresh["seen"]) == 2
    # A connection held all along keeps the snapshot it opened (its files are kept while it is open).
    assert held["seen"] == fresh["seen"][:1]  # the old snapshot (the corrected tv spend is larger)
