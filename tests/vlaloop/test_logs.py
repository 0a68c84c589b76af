"""Logs, through the real processes: quiet by default (no per-request HTTP lines, no health
probes), each long-running process writes the terminal's lines to <run_dir>/logs/<process>.log as
well, and --log-level DEBUG brings the per-request lines back."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from standins import PY, ROOT, Proc, free_port, http_ok, standin_learner, standin_server

from vlaloop.cli import main
from vlaloop.logs import log_file_for

PER_REQUEST = ("HTTP Request:", "HTTP/1.1\"")  # httpx's per-request line, uvicorn's access line


def robot_dry_run(tmp_path: Path, server, learner, *top: str, steps: int = 20) -> subprocess.CompletedProcess:
    return subprocess.run([PY, "-m", "vlaloop.cli", "--run-dir", str(tmp_path / "run"), *top, "robot", "--backend",
                           "mock", "--robot-id", "lab0", "--dry-run", "--episodes", "1", "--max-steps", str(steps),
                           "--server", f"http://127.0.0.1:{server.port}", "--learner",
                           f"tcp://127.0.0.1:{learner.port}"], cwd=ROOT, capture_output=True, text=True, timeout=180)


@pytest.fixture(scope="module")
def stand_ins(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("standins")
    server, learner = standin_server(tmp), standin_learner(tmp, tmp / "episodes")
    yield server, learner
    server.stop()
    learner.stop()


def test_a_robot_run_logs_what_the_operator_watches_and_no_request_lines(tmp_path, stand_ins):
    r = robot_dry_run(tmp_path, *stand_ins)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stderr.splitlines()
    assert any("dry run: would move by" in ln for ln in lines)
    noise = [ln for ln in lines if any(p in ln for p in PER_REQUEST)]
    assert not noise, noise[:5]
    log_file = tmp_path / "run" / "logs" / "robot-lab0.log"
    kept = log_file.read_text().splitlines()
    assert kept[0].endswith(f"vlaloop robot (pid {kept[0].split('pid ')[1].split(')')[0]}) logging to {log_file}")
    assert [ln for ln in lines if ln[:4].isdigit()] == kept  # every log line of the terminal, in the file

    r = robot_dry_run(tmp_path, *stand_ins, "--log-level", "debug", "--log-file", str(tmp_path / "debug.log"),
                      steps=3)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "HTTP Request:" in r.stderr and "HTTP Request:" in (tmp_path / "debug.log").read_text()


def test_the_server_logs_to_its_file_without_access_lines(tmp_path):
    port = free_port()
    argv = [PY, "-m", "vlaloop.cli", "--run-dir", str(tmp_path / "run"), "serve", "--port", str(port)]
    server = Proc(argv, tmp_path / "terminal.log", port=port,  # up, though not ready: no checkpoint
                  ready=lambda: http_ok(f"http://127.0.0.1:{port}/healthz")).start()
    try:
        for _ in range(5):
            httpx.get(f"http://127.0.0.1:{port}/healthz")
    finally:
        server.proc.send_signal(signal.SIGTERM)
        server.proc.wait(30)
        server.stop()
    kept = (tmp_path / "run" / "logs" / "server.log").read_text()
    assert "listening on http://127.0.0.1:" in kept and "uvicorn.error: Application startup complete" in kept
    assert "server stopped" in kept
    assert not [ln for ln in kept.splitlines() if any(p in ln for p in PER_REQUEST)]


def test_log_file_names_and_level_choices(tmp_path, capsys):
    assert log_file_for("serve", None, "runs/x", "r") == Path("runs/x/logs/server.log")
    assert log_file_for("learn", None, "runs/x", "r") == Path("runs/x/logs/learner.log")
    assert log_file_for("robot", None, "runs/x", "arm2") == Path("runs/x/logs/robot-arm2.log")
    assert log_file_for("robot", "none", "runs/x", "arm2") is None
    assert log_file_for("calibrate", None, "runs/x", "r") is None  # one-shot tools: the terminal only
    with pytest.raises(SystemExit):
        main(["--log-level", "loud", "calibrate", "workspace"])
    assert "invalid choice: 'LOUD'" in capsys.readouterr().err
    start = time.monotonic()
    assert main(["--run-dir", str(tmp_path), "--log-level", "warning", "calibrate", "workspace", "--backend", "mock",
                 "--corners", "0.3,-0.2,0.0", "0.7,0.2,0.3", "--out", str(tmp_path / "c.yaml")]) == 0
    assert time.monotonic() - start < 30 and not (tmp_path / "logs").exists()


def test_a_crash_leaves_its_traceback_in_the_log_file(tmp_path):
    """A learner whose run dir cannot be made (a file stands where it should be) crashes: exit 1,
    and the traceback is in logs/learner.log as well as on the terminal."""
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "episodes").write_text("not a directory")
    r = subprocess.run([PY, "-m", "vlaloop.cli", "--run-dir", str(tmp_path / "run"), "learn", "--no-train"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "CRITICAL vlaloop: vlaloop learn crashed" in r.stderr, r.stderr[-2000:]
    kept = (tmp_path / "run" / "logs" / "learner.log").read_text()
    assert "vlaloop learn crashed" in kept and "Traceback (most recent call last)" in kept
