"""Camera intrinsics: ChArUco calibration on rendered views, RealSense without a camera."""

import time

import cv2
import numpy as np
import pytest

from calibration.board import BoardSpec
from calibration.board_render import render_board
from calibration.intrinsics import charuco_intrinsics, realsense_intrinsics
from calibration.mock_rig import mock_intrinsics
from calibration.schema import CalibrationError, load_calibration
from calibration.transforms import make_T, rot_z, rotvec_to_matrix
from vlaloop.cli import main


def _views(spec, K, n, seed=0):
    rng = np.random.default_rng(seed)
    images = []
    for _ in range(n):  # tilted views at several distances: what makes the focal length observable
        R = rotvec_to_matrix(rng.uniform(-1, 1, 3) * [0.5, 0.5, 0.3]) @ rot_z(rng.uniform(-0.5, 0.5))
        t = np.array([rng.uniform(-0.03, 0.03), rng.uniform(-0.03, 0.03), rng.uniform(0.28, 0.45)])
        images.append(render_board(spec, K, make_T(R, t - R @ spec.center()), (640, 480), 2.0, rng))
    return images


def test_charuco_recovers_the_intrinsics_it_rendered_with():
    spec, truth = BoardSpec(), mock_intrinsics()
    intr, rms, used = charuco_intrinsics(_views(spec, truth.matrix(), 10), spec)
    assert used == 10 and rms < 0.3
    assert abs(intr.fx / truth.fx - 1) < 0.01 and abs(intr.fy / truth.fy - 1) < 0.01
    assert abs(intr.cx - truth.cx) < 3 and abs(intr.cy - truth.cy) < 3
    assert np.abs(intr.dist).max() < 0.1  # a pinhole renderer: no real distortion to find


def test_too_few_board_views_is_refused():
    spec = BoardSpec()
    blank = [np.full((480, 640, 3), 90, np.uint8)] * 8
    with pytest.raises(CalibrationError, match=r"found in 0 of 8 images"):
        charuco_intrinsics(blank, spec)


def test_realsense_without_a_camera_fails_fast_with_a_clear_message():
    import pyrealsense2 as rs

    if len(rs.context().query_devices()):
        pytest.skip("a RealSense camera is attached")
    t0 = time.monotonic()
    with pytest.raises(CalibrationError, match=r"no RealSense camera found.*--images DIR"):
        realsense_intrinsics(["123456"])
    assert time.monotonic() - t0 < 5.0


def test_cli_images_folder_and_mock_factory(tmp_path, capsys):
    spec, truth = BoardSpec(), mock_intrinsics()
    folder = tmp_path / "views"
    folder.mkdir()
    for i, img in enumerate(_views(spec, truth.matrix(), 8, seed=1)):
        cv2.imwrite(str(folder / f"v{i}.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    out = tmp_path / "calibration.yaml"
    assert main(["calibrate", "intrinsics", "--backend", "mock", "--images", str(folder), "--camera", "wrist",
                 "--out", str(out)]) == 0
    intr = load_calibration(out).cameras["wrist"].intrinsics
    assert abs(intr.fx / truth.fx - 1) < 0.01 and abs(intr.cx - truth.cx) < 3
    assert main(["calibrate", "intrinsics", "--backend", "mock", "--out", str(out)]) == 0
    cal = load_calibration(out)
    assert cal.cameras["front"].intrinsics == truth and cal.cameras["front"].serial == "mock-0001"
    assert "wrist" in cal.cameras  # other cameras are kept
