"""calibration.yaml: load/save, the mock defaults, and helpful errors on bad files."""

import math

import numpy as np
import pytest
import yaml

from calibration.schema import (
    CalibrationError,
    CalibrationFile,
    default_mock_calibration,
    load_calibration,
    save_calibration,
)


def _write(path, data):
    path.write_text(yaml.safe_dump(data))
    return path


def _valid_dict():
    return default_mock_calibration().model_dump(mode="json")


def test_mock_defaults_are_the_fixed_values():
    cal = default_mock_calibration()
    assert cal.workspace.min == [0.30, -0.25, 0.00] and cal.workspace.max == [0.70, 0.25, 0.30]
    assert cal.home.position == [0.5, 0.0, 0.20] and cal.home.rpy == [math.pi, 0.0, 0.0]
    assert cal.limits.max_translation_per_step == 0.03 and cal.limits.max_rotation_per_step == 0.15
    assert cal.workspace.contains(cal.home.position)
    assert not cal.workspace.contains([0.5, 0.0, -0.01])


def test_save_then_load_round_trips_with_a_camera(tmp_path):
    data = _valid_dict()
    T = np.eye(4)
    T[:3, 3] = [0.1, -0.2, 0.3]
    data["cameras"] = {"front": {"serial": "123", "mode": "eye-to-hand", "T": T.tolist(),
                                 "intrinsics": {"width": 640, "height": 480, "fx": 600, "fy": 601,
                                                "cx": 320, "cy": 240, "dist": [0.1, 0, 0, 0, 0]}}}
    cal = CalibrationFile.model_validate(data)
    path = save_calibration(cal, tmp_path / "sub" / "calibration.yaml")
    back = load_calibration(path)
    assert back == cal
    np.testing.assert_allclose(back.cameras["front"].transform(), T)
    np.testing.assert_allclose(back.cameras["front"].intrinsics.matrix()[0], [600, 0, 320])
    assert [p.name for p in path.parent.iterdir()] == ["calibration.yaml"]  # no temp file left behind


def test_save_replaces_an_existing_file(tmp_path):
    path = tmp_path / "calibration.yaml"
    path.write_text("old: content\n")
    save_calibration(default_mock_calibration(), path)
    assert load_calibration(path).home.position == [0.5, 0.0, 0.2]


def test_missing_file_says_how_to_make_one(tmp_path):
    with pytest.raises(CalibrationError, match=r"does not exist.*vlaloop calibrate workspace"):
        load_calibration(tmp_path / "nope.yaml")


def test_bad_yaml_is_named(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("workspace: [unclosed\n  home: {")
    with pytest.raises(CalibrationError, match=r"(?s)not valid YAML.*line 2.*vlaloop calibrate workspace"):
        load_calibration(path)


def test_not_a_mapping(tmp_path):
    with pytest.raises(CalibrationError, match="must hold a mapping"):
        load_calibration(_write(tmp_path / "c.yaml", [1, 2, 3]))


def test_missing_field_is_named(tmp_path):
    data = _valid_dict()
    del data["limits"]["max_rotation_per_step"]
    with pytest.raises(CalibrationError, match=r"missing field `limits.max_rotation_per_step`") as e:
        load_calibration(_write(tmp_path / "c.yaml", data))
    assert "vlaloop calibrate workspace" in str(e.value)


def test_home_outside_the_workspace_is_refused(tmp_path):
    data = _valid_dict()
    data["home"]["position"] = [0.5, 0.0, 0.45]
    with pytest.raises(CalibrationError, match=r"home.position \[0.5, 0.0, 0.45\] is outside the workspace"):
        load_calibration(_write(tmp_path / "c.yaml", data))


def test_min_not_below_max_is_refused(tmp_path):
    data = _valid_dict()
    data["workspace"]["min"][1] = 0.25
    with pytest.raises(CalibrationError, match=r"workspace.min.y = 0.25 must be < workspace.max.y = 0.25"):
        load_calibration(_write(tmp_path / "c.yaml", data))


def test_wrong_vector_length_and_non_rigid_T_are_refused(tmp_path):
    data = _valid_dict()
    data["workspace"]["max"] = [0.7, 0.25]
    with pytest.raises(CalibrationError, match="workspace.max"):
        load_calibration(_write(tmp_path / "c.yaml", data))
    data = _valid_dict()
    data["cameras"] = {"front": {"mode": "eye-in-hand", "T": (2 * np.eye(4)).tolist()}}
    with pytest.raises(CalibrationError, match="last row|rotation matrix"):
        load_calibration(_write(tmp_path / "c.yaml", data))
    data["cameras"] = {"front": {"T": np.eye(4).tolist()}}
    with pytest.raises(CalibrationError, match="both `mode` and `T`"):
        load_calibration(_write(tmp_path / "c.yaml", data))
