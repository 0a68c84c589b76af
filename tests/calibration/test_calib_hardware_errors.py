"""Every `vlaloop calibrate ...` on hardware that is not there (no arm, no camera, a kernel
libfranka refuses) ends in one line with the fix, through the real franky and pyrealsense2. The
franka host is 127.0.0.1: nothing off this machine is contacted."""

from __future__ import annotations

import pytest

from calibration.mock_rig import mock_intrinsics
from calibration.schema import CameraCalibration, load_calibration, save_calibration
from hardware.realtime import kernel_is_realtime
from vlaloop.cli import main

CORNERS = ["--corners", "0.3,-0.2,0.0", "0.7,0.2,0.3", "--home", "0.5,0,0.2"]


@pytest.fixture
def rig(tmp_path, monkeypatch):
    """A deployment on loopback with a valid calibration file (box, home, a camera's intrinsics)."""
    monkeypatch.setenv("VLALOOP_ROBOT__FRANKA_HOST", "127.0.0.1")
    out = tmp_path / "calibration.yaml"
    assert main(["calibrate", "workspace", "--backend", "franka", *CORNERS, "--out", str(out)]) == 0
    cal = load_calibration(out)
    cal.cameras["front"] = CameraCalibration(serial="000000000000", intrinsics=mock_intrinsics())
    save_calibration(cal, out)
    return out


def one_error_line(capsys, command: str) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith(f"vlaloop calibrate {command}:")]
    assert len(lines) == 1, err
    return lines[0]


def test_handeye_without_a_camera_is_one_line(rig, capsys):
    assert main(["calibrate", "handeye", "--backend", "franka", "--mode", "eye-in-hand", "--out", str(rig)]) == 1
    line = one_error_line(capsys, "handeye")
    assert "RealSense serial 000000000000 is not connected (connected: none)" in line
    assert "rs-enumerate-devices" in line


def test_guided_workspace_without_an_arm_is_one_line(rig, capsys, monkeypatch):
    argv = ["calibrate", "workspace", "--backend", "franka", "--guide", "--duration", "1", "--out", str(rig)]
    assert main(argv) == 1
    line = one_error_line(capsys, "workspace")
    assert ("PREEMPT_RT" in line) if not kernel_is_realtime() else ("FCI" in line)
    monkeypatch.setenv("VLALOOP_ROBOT__FRANKA_REALTIME", "ignore")
    assert main(argv) == 1
    assert "cannot reach the Franka's FCI at 127.0.0.1" in one_error_line(capsys, "workspace")


def test_intrinsics_without_a_camera_is_one_line(rig, capsys):
    assert main(["calibrate", "intrinsics", "--backend", "franka", "--out", str(rig)]) == 1
    assert "no RealSense camera found" in one_error_line(capsys, "intrinsics")
