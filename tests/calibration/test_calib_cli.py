"""`vlaloop calibrate handeye` end to end on the mock rig, in-process."""

import math

import numpy as np

from calibration.mock_rig import make_mock_rig
from calibration.schema import load_calibration
from calibration.transforms import invert, rotation_angle
from vlaloop.cli import main


def test_handeye_end_to_end_then_resolve_with_a_wrong_square_size(tmp_path, capsys):
    out = tmp_path / "calibration.yaml"
    assert main(["calibrate", "handeye", "--backend", "mock", "--mode", "eye-in-hand", "--poses", "8",
                 "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| DANIILIDIS" in printed and "(best)" in printed
    cam = load_calibration(out).cameras["front"]
    assert cam.mode == "eye-in-hand" and set(cam.residuals) == {"TSAI", "PARK", "HORAUD", "ANDREFF", "DANIILIDIS"}
    D = invert(make_mock_rig("eye-in-hand").scene.truth()) @ cam.transform()
    assert np.linalg.norm(D[:3, 3]) < 2e-3 and math.degrees(rotation_angle(D[:3, :3])) < 0.5
    runs = list((tmp_path / "calibration_samples").iterdir())
    assert len(runs) == 1 and (runs[0] / "samples.json").exists()

    # offline re-solve of the saved samples, with a square size 10% off: refused, file untouched
    before = out.read_text()
    rc = main(["calibrate", "handeye", "--backend", "mock", "--resolve", str(runs[0]), "--square-size", "0.033",
               "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 1 and "--square-size looks wrong" in err and out.read_text() == before


def test_handeye_cli_refuses_a_bumped_board(tmp_path, capsys):
    out = tmp_path / "calibration.yaml"
    rc = main(["calibrate", "handeye", "--backend", "mock", "--mode", "eye-to-hand", "--mock-move-board-at", "6",
               "--poses", "10", "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 1 and "board seems to have moved" in err and not out.exists()
