"""The deployment docs agree with each other and with the code: one calibration order (the one the
calibrate commands enforce), the action convention in calibration.md's limits, and deploy.md's
YAML a complete two-machine deployment."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urlparse

import pytest
import yaml

from deployment.config import load_config
from vlaloop.cli import main

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
ORDER = ("calibrate workspace", "calibrate intrinsics", "calibrate handeye")


def test_the_code_enforces_workspace_then_intrinsics_then_handeye(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("VLALOOP_ROBOT__FRANKA_HOST", "127.0.0.1")
    out = tmp_path / "calibration.yaml"
    for command in (["intrinsics", "--serial", "1"], ["handeye", "--mode", "eye-to-hand"]):
        assert main(["calibrate", *command, "--backend", "franka", "--out", str(out)]) == 1
        assert "record the safety box first: `vlaloop calibrate workspace" in capsys.readouterr().err
    assert main(["calibrate", "workspace", "--backend", "franka", "--corners", "0.3,-0.2,0", "0.7,0.2,0.3",
                 "--home", "0.5,0,0.2", "--out", str(out)]) == 0
    assert main(["calibrate", "handeye", "--mode", "eye-to-hand", "--backend", "franka", "--out", str(out)]) == 1
    assert "has no intrinsics in the calibration file; run `vlaloop calibrate intrinsics" in capsys.readouterr().err


@pytest.mark.parametrize("doc", ["deploy.md", "calibration.md", "real_robot.md"])
def test_every_guide_calibrates_in_the_enforced_order(doc):
    text = (DOCS / doc).read_text()
    first = [text.find(step) for step in ORDER]
    assert all(i >= 0 for i in first), f"{doc} does not name {ORDER}"
    assert first == sorted(first), f"{doc} orders calibration {sorted(ORDER, key=text.find)}"


def test_calibration_limits_describe_the_action_convention():
    limits = (DOCS / "calibration.md").read_text().split("## Known limits")[1]
    assert "exp([w]×) · R" in (DOCS / "action_convention.md").read_text()
    assert "exp([w]×) · R" in limits and "base-frame rotation vector" in limits
    assert "the mock simulator as `rpy += d`" not in limits


def test_deploy_yaml_is_a_complete_two_machine_deployment(tmp_path):
    text = (DOCS / "deploy.md").read_text()
    (block,) = [b for b in re.findall(r"```yaml\n(.*?)```", text, re.S) if "robot:" in b]
    raw = yaml.safe_load(block)
    for key in ("server_url", "learner_addr", "token", "calibration", "camera_serials", "instruction"):
        assert key in raw["robot"], f"deploy.md's YAML has no robot.{key}"
    (tmp_path / "deploy.yaml").write_text(block)
    cfg = load_config(tmp_path / "deploy.yaml", environ={})  # every section refuses unknown keys
    url, addr = urlparse(cfg.robot.server_url), urlparse(cfg.robot.learner_addr)
    assert url.hostname == addr.hostname and url.hostname not in ("127.0.0.1", "localhost")  # two machines
    assert url.port == cfg.server.port and addr.port == urlparse(cfg.learner.bind).port
    assert cfg.robot.token == cfg.server.robot_token == cfg.learner.token
    assert len(cfg.robot.camera_serials) == len(cfg.model.cameras)
