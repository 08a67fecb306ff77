"""Versioned BI snapshots: a failed or killed publish leaves the previous snapshot serving and the next
publish cleans up; old versions go once no reader holds them. Real DuckDB files, real processes."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import duckdb
import pytest

from mmm_pipeline.publish.bi import CATALOG_FILE, publish

RELATIONS = {"champion_model_runs": "runs", "champion_channel_summary": "channels"}


def _warehouse(path: Path, champion: str) -> duckdb.DuckDBPyConnection:
    """A warehouse whose two relations name the same champion (what a consistent publish must show)."""
    conn = duckdb.connect(str(path))
    conn.execute(f"CREATE OR REPLACE TABLE runs AS SELECT '{champion}' AS model_id")
    conn.execute(f"CREATE OR REPLACE TABLE channels AS SELECT '{champion}' AS model_id, 'tv' AS channel")
    return conn


def _served(bi: Path) -> tuple[str, set[str]]:
    """The catalog's version and the champion ids its relations show, read in one connection."""
    with duckdb.connect(str(bi), read_only=True) as c:
        (version,) = c.execute("SELECT max(version) FROM published_tables").fetchone()
        ids = {r[0] for name in RELATIONS for r in c.execute(f"SELECT model_id FROM {name}").fetchall()}
    return version, ids


def test_a_failing_relation_leaves_the_previous_snapshot(tmp_path: Path) -> None:
    publish_dir, bi = tmp_path / "published", tmp_path / "bi.duckdb"
    with _warehouse(tmp_path / "w.duckdb", "m1") as conn:
        publish(conn, RELATIONS, publish_dir, bi)
        conn.execute("CREATE OR REPLACE TABLE runs AS SELECT 'm2' AS model_id")
        conn.execute("CREATE VIEW broken AS SELECT error('the relation cannot be read') AS model_id")
        with pytest.raises(duckdb.Error, match="cannot be read"):
            publish(conn, {**RELATIONS, "champion_broken": "broken"}, publish_dir, bi)
    assert _served(bi) == ("v000001", {"m1"})
    assert sorted(p.name for p in publish_dir.iterdir()) == ["v000001"]  # nothing of the attempt


KILLED = textwrap.dedent(
    """
    import sys, duckdb
    from pathlib import Path
    from mmm_pipeline.publish.bi import publish
    warehouse, publish_dir, bi = sys.argv[1:4]
    conn = duckdb.connect(warehouse)
    conn.execute("UPDATE runs SET model_id = 'm2'")
    conn.execute("CREATE OR REPLACE VIEW slow AS SELECT count(*) AS model_id FROM range(100000000000)")
    publish(conn, {"champion_model_runs": "runs", "champion_zz_slow": "slow"}, Path(publish_dir), Path(bi))
    """
)


def test_a_killed_publish_leaves_the_previous_snapshot_and_the_next_cleans_up(tmp_path: Path) -> None:
    publish_dir, bi, warehouse = tmp_path / "published", tmp_path / "bi.duckdb", tmp_path / "w.duckdb"
    with _warehouse(warehouse, "m1") as conn:
        publish(conn, RELATIONS, publish_dir, bi)
    proc = subprocess.Popen([sys.executable, "-c", KILLED, str(warehouse), str(publish_dir), str(bi)])
    try:  # kill it once it has exported a relation and is stuck exporting the next one
        deadline = time.monotonic() + 60
        while not list(publish_dir.glob(".staging-*/champion_model_runs.parquet")):
            assert proc.poll() is None and time.monotonic() < deadline, "the publish never started"
            time.sleep(0.02)
        time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    leftovers = [p.name for p in publish_dir.iterdir() if p.name != "v000001"]
    assert leftovers and all(name.startswith(".staging-") for name in leftovers)
    assert _served(bi) == ("v000001", {"m1"})  # the previous snapshot, whole
    with _warehouse(warehouse, "m3") as conn:
        publish(conn, RELATIONS, publish_dir, bi)
    assert _served(bi) == ("v000002", {"m3"})
    assert sorted(p.name for p in publish_dir.iterdir()) == ["v000001", "v000002"]


HOLDER = textwrap.dedent(
    """
    import sys, time, duckdb
    bi, ready = sys.argv[1:3]
    held = duckdb.connect(bi, read_only=True)
    print(held.execute("SELECT model_id FROM champion_model_runs").fetchone()[0], flush=True)
    open(ready, "w").close()
    sys.stdin.read()  # hold the catalog until the test closes stdin
    print(held.execute("SELECT model_id FROM champion_model_runs").fetchone()[0], flush=True)
    """
)


def test_old_versions_go_once_no_reader_holds_them(tmp_path: Path) -> None:
    publish_dir, bi, warehouse = tmp_path / "published", tmp_path / "bi.duckdb", tmp_path / "w.duckdb"
    with _warehouse(warehouse, "m1") as conn:
        publish(conn, RELATIONS, publish_dir, bi)
    ready = tmp_path / "ready"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(bi), str(ready)],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    while not ready.exists():
        assert holder.poll() is None
        time.sleep(0.02)
    for n in range(2, 7):
        with _warehouse(warehouse, f"m{n}") as conn:
            publish(conn, RELATIONS, publish_dir, bi, keep=2)
    # v1 is held by the reader, v5 and v6 are the newest two; v2..v4 were collected.
    assert sorted(p.name for p in publish_dir.iterdir()) == ["v000001", "v000005", "v000006"]
    out, _ = holder.communicate("", timeout=30)
    assert out.split() == ["m1", "m1"]  # the held connection read its snapshot before and after
    with _warehouse(warehouse, "m7") as conn:
        publish(conn, RELATIONS, publish_dir, bi, keep=2)
    assert sorted(p.name for p in publish_dir.iterdir()) == ["v000006", "v000007"]
    assert all((publish_dir / v / CATALOG_FILE).exists() for v in ("v000006", "v000007"))
    assert _served(bi) == ("v000007", {"m7"})


def test_relations_not_republished_are_carried_over(tmp_path: Path) -> None:
    publish_dir, bi = tmp_path / "published", tmp_path / "bi.duckdb"
    with _warehouse(tmp_path / "w.duckdb", "m1") as conn:
        publish(conn, RELATIONS, publish_dir, bi)
        conn.execute("CREATE TABLE events AS SELECT 1 AS event_id")
        assert publish(conn, {"drift_events": "events"}, publish_dir, bi) == {"drift_events": 1}
    with duckdb.connect(str(bi), read_only=True) as c:
        names = {r[0] for r in c.execute("SELECT name FROM published_tables").fetchall()}
        assert names == {*RELATIONS, "drift_events"}
        assert c.execute("SELECT model_id FROM champion_channel_summary").fetchone() == ("m1",)
