"""The process boundaries of docs/architecture.md, checked by import-linter ([tool.importlinter] in
pyproject.toml): green on this tree, red as soon as a forbidden import is added to a copy of it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LINT = Path(sys.executable).with_name("lint-imports")
PACKAGES = ["interface", "protocol", "deployment", "episodes", "sim", "hardware", "vla", "server",
            "robot_client", "learner", "calibration", "vlaloop", "bench", "lerobot_format"]


def lint(root: Path) -> subprocess.CompletedProcess:
    env = {"PYTHONPATH": str(root), "PATH": "/usr/bin:/bin"}
    return subprocess.run([str(LINT), "--config", str(root / "pyproject.toml")], cwd=root, env=env,
                          capture_output=True, text=True, timeout=300)


@pytest.fixture(scope="module")
def tree_copy(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("tree")
    for name in PACKAGES:
        shutil.copytree(REPO / name, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    return root


def test_the_tree_keeps_every_contract():
    out = lint(REPO)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "0 broken" in out.stdout


@pytest.mark.parametrize(("module", "forbidden", "contract"), [
    ("robot_client/loop.py", "import learner.trainer", "the robot client never imports"),
    ("robot_client/loop.py", "import torch", "the robot client never imports"),
    ("robot_client/execution.py", "import torch", "the robot client never imports"),
    ("robot_client/execution.py", "import robot_client.arbitration", "the control loop's layers"),
    ("robot_client/recording.py", "import robot_client.loop", "the control loop's layers"),
    ("server/app.py", "import learner.loop", "the server never imports the learner"),
    ("learner/loop.py", "import server.app", "the learner never imports the server"),
    ("calibration/handeye.py", "import robot_client.loop", "calibration and the robot client"),
    ("interface/policy.py", "import torch", "interface is the bottom"),
    ("lerobot_format/exporter.py", "import torch", "the dataset format is torch-free"),
    ("lerobot_format/importer.py", "import learner.bootstrap", "shared packages import no process"),
])
def test_a_forbidden_import_breaks_its_contract(tree_copy, module, forbidden, contract):
    path = tree_copy / module
    original = path.read_text()
    try:
        path.write_text(original + f"\n{forbidden}  # added by the test\n")
        out = lint(tree_copy)
    finally:
        path.write_text(original)
    assert out.returncode != 0
    broken = [line for line in out.stdout.splitlines() if "BROKEN" in line or contract in line]
    assert any(contract in line for line in broken), out.stdout
