"""The real `mmm-pipeline ui` command stops cleanly on SIGTERM and SIGINT, also when started as a script's
background job (which starts with SIGINT ignored: the case where it used to ignore TERM and run on)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

CLI = str(Path(sys.executable).with_name("mmm-pipeline"))
#: Loading the code location imports PyMC and the whole pipeline: slow on a loaded machine.
START_TIMEOUT = 240
STOP_TIMEOUT = 60


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _descendants(pid: int) -> set[int]:
    """Processes below ``pid`` (from /proc): the webserver and daemon `dagster dev` starts."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    out, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.add(child)
            todo.append(child)
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _stops_on(sig: signal.Signals, tmp_path: Path) -> None:
    assert subprocess.run([CLI, "init", "proj"], cwd=tmp_path, capture_output=True).returncode == 0
    port = _free_port()
    log = (tmp_path / "ui.log").open("w")
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "proj" / "data" / "dagster_home")}
    ui = subprocess.Popen(
        [CLI, "--config", str(tmp_path / "proj" / "mmm_pipeline.yaml"), "ui", "--port", str(port)],
        cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
        # as `cmd &` in a non-interactive shell: SIGINT ignored from the start
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )  # fmt: skip
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while not _listening(port):
            assert ui.poll() is None, (tmp_path / "ui.log").read_text()
            assert time.monotonic() < deadline, "the UI did not listen in time"
            time.sleep(1)
        children = _descendants(ui.pid)
        assert children, "dagster dev runs its webserver as a child process"
        ui.send_signal(sig)
        try:
            ui.wait(timeout=STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            pytest.fail(f"mmm-pipeline ui ignored {sig.name}:\n{(tmp_path / 'ui.log').read_text()}")
        deadline = time.monotonic() + STOP_TIMEOUT
        while any(_alive(p) for p in children) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not [p for p in children if _alive(p)], "the webserver or daemon outlived the UI"
        assert not _listening(port)
    finally:
        if ui.poll() is None:
            os.killpg(ui.pid, signal.SIGKILL)
            ui.wait()
        log.close()


def test_ui_stops_on_sigterm_as_a_background_job(tmp_path: Path) -> None:
    _stops_on(signal.SIGTERM, tmp_path)


@pytest.mark.slow
def test_ui_stops_on_sigint(tmp_path: Path) -> None:
    _stops_on(signal.SIGINT, tmp_path)
