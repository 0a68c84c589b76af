"""The franka backend's start on a machine libfranka would refuse, against the real franky: the
realtime check runs before libfranka opens a connection, and every failure at connect is one line
with its fix. The franka host is 127.0.0.1 in every test here (nothing else is ever contacted)."""

from __future__ import annotations

import logging
import socket
import subprocess
import threading

import pytest
from standins import PY, ROOT

from calibration.schema import default_mock_calibration, save_calibration
from hardware.franka import FrankaArm, FrankaSetupError
from hardware.realtime import kernel_is_realtime, realtime_problem

LOOPBACK = "127.0.0.1"
FCI_PORT = 1337  # libfranka's command port
HOME = {"home_position": [0.5, 0.0, 0.2], "home_rpy": [3.14159, 0.0, 0.0]}
needs_plain_kernel = pytest.mark.skipif(kernel_is_realtime(), reason="this kernel is PREEMPT_RT")


def status_file(tmp_path, cap_eff: int):
    p = tmp_path / "status"
    p.write_text(f"Name:\tpython\nCapEff:\t{cap_eff:016x}\n")
    return p


def test_realtime_problem_reads_the_kernel_flag_and_the_priority_limits(tmp_path):
    rt, plain = tmp_path / "rt", tmp_path / "plain"
    rt.write_text("1\n")
    plain.write_text("0\n")
    nice, no_nice = status_file(tmp_path, 1 << 23), status_file(tmp_path / "..", 0)
    assert realtime_problem(rt, nice, rtprio_limit=0) is None
    assert realtime_problem(rt, no_nice, rtprio_limit=99) is None
    for kernel in (plain, tmp_path / "missing"):
        problem = realtime_problem(kernel, nice)
        assert "PREEMPT_RT" in problem and "franka_realtime: ignore" in problem and "\n" not in problem
    problem = realtime_problem(rt, no_nice, rtprio_limit=0)
    assert "rtprio 99" in problem and "limits.conf" in problem and "SYS_NICE" in problem


class FciListener:
    """A TCP listener on libfranka's port at 127.0.0.1 that counts (and drops) connections."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            self.sock.bind((LOOPBACK, FCI_PORT))
        except OSError:
            self.sock.close()
            pytest.skip(f"port {FCI_PORT} is in use on loopback")
        self.sock.listen(4)
        self.sock.settimeout(0.1)
        self.connections = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except (TimeoutError, OSError):
                continue
            self.connections += 1
            conn.close()  # libfranka fails at once instead of waiting for an answer

    def close(self):
        self.stop.set()
        self.thread.join(2)
        self.sock.close()


@needs_plain_kernel
def test_enforce_refuses_a_plain_kernel_before_libfranka_connects():
    listener = FciListener()
    try:
        with pytest.raises(FrankaSetupError) as e:
            FrankaArm.connect(LOOPBACK, **HOME)
    finally:
        listener.close()
    message = str(e.value)
    assert "PREEMPT_RT" in message and "docs/real_robot.md" in message and "\n" not in message
    assert listener.connections == 0, "libfranka was allowed to open a connection first"


def test_ignore_warns_and_a_missing_fci_is_one_line(caplog):
    with caplog.at_level(logging.WARNING, logger="hardware.franka"), pytest.raises(FrankaSetupError) as e:
        FrankaArm.connect(LOOPBACK, realtime="ignore", **HOME)  # nothing listens on 127.0.0.1:1337
    message = str(e.value)
    assert message.startswith(f"cannot reach the Franka's FCI at {LOOPBACK} (NetworkException: libfranka:")
    assert "FCI is activated in Desk" in message and "\n" not in message
    if not kernel_is_realtime():
        assert "realtime check is OFF" in caplog.text and "bench tests only" in caplog.text
    with pytest.raises(FrankaSetupError, match="franka_realtime must be one of"):
        FrankaArm.connect(LOOPBACK, realtime="off", **HOME)


def run_robot(tmp_path, **env) -> subprocess.CompletedProcess:
    cal = tmp_path / "calibration.yaml"
    save_calibration(default_mock_calibration(), cal)
    environ = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "VLALOOP_ROBOT__FRANKA_HOST": LOOPBACK,
               "VLALOOP_ROBOT__CAMERA_SERIALS": '["000000000000"]', **env}
    return subprocess.run([PY, "-m", "vlaloop.cli", "--run-dir", str(tmp_path / "run"), "robot", "--backend",
                           "franka", "--calibration", str(cal), "--instruction", "pick up the red block",
                           "--episodes", "1"], cwd=ROOT, env=environ, capture_output=True, text=True, timeout=60)


def test_robot_client_on_franka_without_an_arm_exits_with_one_line(tmp_path):
    r = run_robot(tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    line, = [ln for ln in r.stderr.splitlines() if ln.startswith("vlaloop robot:")]
    assert ("PREEMPT_RT" in line) if not kernel_is_realtime() else ("FCI" in line)
    r = run_robot(tmp_path, VLALOOP_ROBOT__FRANKA_REALTIME="ignore")
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"cannot start the franka backend: cannot reach the Franka's FCI at {LOOPBACK}" in r.stderr
