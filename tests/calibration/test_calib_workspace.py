"""The safety box: entered corners, guided recording, and `vlaloop calibrate workspace`."""

import threading
import time

import numpy as np
import pytest

from calibration.mock_rig import KinematicArm
from calibration.schema import CalibrationError, CameraCalibration, load_calibration, save_calibration
from calibration.workspace import parse_point, record_guided_positions, workspace_from_corners
from vlaloop.cli import main


def test_corners_in_any_order_give_the_box_shrunk_by_the_margin():
    box = workspace_from_corners(np.array([0.7, 0.2, 0.3]), np.array([0.3, -0.2, 0.0]), margin_m=0.02)
    np.testing.assert_allclose(box.min, [0.32, -0.18, 0.02])
    np.testing.assert_allclose(box.max, [0.68, 0.18, 0.28])


def test_a_box_thinner_than_twice_the_margin_is_refused():
    with pytest.raises(CalibrationError, match=r"too thin along z"):
        workspace_from_corners(np.array([0.3, -0.2, 0.10]), np.array([0.7, 0.2, 0.11]), margin_m=0.01)


@pytest.mark.parametrize("text", ["0.1,0.2", "a,b,c", "0.1,0.2,nan"])
def test_bad_points_are_refused(text):
    with pytest.raises(CalibrationError, match="x,y,z"):
        parse_point(text)


def test_guided_recording_follows_the_operator_and_stops_on_the_event():
    arm = KinematicArm([0.5, 0.0, 0.2], [np.pi, 0, 0])
    stop = threading.Event()
    path = [np.array(p) for p in ([0.35, -0.2, 0.05], [0.65, 0.2, 0.25], [0.5, 0.0, 0.2])]

    def operator():  # moves the arm by hand, then presses Enter
        for p in path:
            time.sleep(0.05)
            arm.position = p
        time.sleep(0.05)
        stop.set()

    t = threading.Thread(target=operator)
    t.start()
    t0 = time.monotonic()
    positions = record_guided_positions(arm, duration_s=10.0, rate_hz=100.0, stop=stop)
    t.join()
    assert time.monotonic() - t0 < 2.0  # the event, not the duration, ended it
    np.testing.assert_allclose(positions.min(axis=0), [0.35, -0.2, 0.05])
    np.testing.assert_allclose(positions.max(axis=0), [0.65, 0.2, 0.25])


def test_cli_corners_writes_a_valid_file_and_keeps_cameras(tmp_path, capsys):
    out = tmp_path / "calibration.yaml"
    assert main(["calibrate", "workspace", "--backend", "franka", "--corners", "0.3,-0.2,0.0", "0.7,0.2,0.3",
                 "--margin", "0.02", "--home", "0.5,0,0.2", "--out", str(out)]) == 0
    cal = load_calibration(out)
    np.testing.assert_allclose(cal.workspace.min, [0.32, -0.18, 0.02])
    np.testing.assert_allclose(cal.workspace.max, [0.68, 0.18, 0.28])
    assert cal.home.position == [0.5, 0.0, 0.2] and cal.limits.max_translation_per_step == 0.03
    cal.cameras["front"] = CameraCalibration(serial="123")
    save_calibration(cal, out)
    # a new box keeps the cameras, the home and the limits of the file it replaces
    assert main(["calibrate", "workspace", "--backend", "franka", "--corners", "0.3,-0.3,0.0", "0.8,0.3,0.4",
                 "--out", str(out)]) == 0
    cal2 = load_calibration(out)
    assert cal2.cameras["front"].serial == "123" and cal2.home == cal.home
    np.testing.assert_allclose(cal2.workspace.max, [0.79, 0.29, 0.39])
    assert any("workspace: corners" in n for n in cal2.notes)


def test_cli_refuses_a_home_outside_the_box(tmp_path, capsys):
    out = tmp_path / "calibration.yaml"
    rc = main(["calibrate", "workspace", "--backend", "franka", "--corners", "0.3,-0.2,0.0", "0.45,0.2,0.3",
               "--home", "0.5,0,0.2", "--out", str(out)])
    assert rc == 1 and not out.exists()
    assert "home [0.5, 0.0, 0.2] is outside the workspace box" in capsys.readouterr().err


def test_cli_without_home_on_real_hardware_asks_for_one(tmp_path, capsys):
    rc = main(["calibrate", "workspace", "--backend", "franka", "--corners", "0.3,-0.2,0.0", "0.7,0.2,0.3",
               "--out", str(tmp_path / "c.yaml")])
    assert rc == 1 and "give --home x,y,z" in capsys.readouterr().err


def test_cli_guided_on_the_mock(tmp_path):
    out = tmp_path / "calibration.yaml"
    assert main(["calibrate", "workspace", "--backend", "mock", "--guide", "--duration", "0.6",
                 "--margin", "0.01", "--out", str(out)]) == 0
    cal = load_calibration(out)  # the stand-in operator walks the corners of the mock box + 1 cm
    np.testing.assert_allclose(cal.workspace.min, [0.30, -0.25, 0.0], atol=1e-9)
    np.testing.assert_allclose(cal.workspace.max, [0.70, 0.25, 0.30], atol=1e-9)
