"""BI reads while the pipeline writes: a second process holds bi.duckdb open and queries it in a loop."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pandas as pd
from conftest import run

READER = textwrap.dedent(
    """
    import json, sys, time, duckdb
    bi, stop, out = sys.argv[1], sys.argv[2], sys.argv[3]
    import os
    held = duckdb.connect(bi, read_only=True)  # a BI tool that keeps the catalog open all along
    seen, errors, reads = set(), [], 0
    deadline = time.time() + 240
    while not os.path.exists(stop) and time.time() < deadline:
        for conn in (held, None):
            try:
                c = conn or duckdb.connect(bi, read_only=True)
                n, tv = c.execute("SELECT count(*), sum(spend_tv) FROM fct_modeling_weekly").fetchone()
                seen.add((n, round(tv, 2)))
                reads += 1
                if conn is None:
                    c.close()
            except Exception as exc:
                errors.append(repr(exc))
        time.sleep(0.01)
    json.dump({"seen": sorted(seen), "errors": errors, "reads": reads}, open(out, "w"))
    """
)


def test_reader_never_blocks_the_run_nor_sees_half_a_table(case_study, tmp_path) -> None:
    cfg = case_study
    # The copied catalog points at the original project's snapshots: republish this project's first.
    assert run(cfg, weeks="2016-01-03..2016-01-03").ok
    stop, out = tmp_path / "stop", tmp_path / "reads.json"
    reader = subprocess.Popen([sys.executable, "-c", READER, str(cfg.bi_database_path), str(stop), str(out)])
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
        reader.wait(timeout=60)
    result = json.loads(out.read_text())
    assert result["errors"] == []
    assert result["reads"] > 20
    counts = {n for n, _ in result["seen"]}
    assert counts == {208}  # never a partial table
    assert len(result["seen"]) == 2  # the old snapshot, then the corrected one; nothing in between
