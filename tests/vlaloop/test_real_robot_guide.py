"""docs/real_robot.md against the code: every `vlaloop ...` command it shows parses with the real
argument parser (robot commands also validate into a RobotConfig), every config field and
VLALOOP_* variable it names exists, and its mock rehearsal of the dry run runs for real (the CLI
as a subprocess, against the stand-in server and learner): the episode is stored as an aborted
dry run and the arm never moved."""

from __future__ import annotations

import re
import shlex
import subprocess

import httpx
import numpy as np
import pytest
from standins import PY, ROOT, standin_learner, standin_server

from deployment.config import DeploymentConfig, load_config
from episodes.store import EpisodeStore
from vlaloop.cli import build_parser, chosen_subcommand

GUIDE = (ROOT / "docs" / "real_robot.md").read_text()


def guide_commands() -> list[list[str]]:
    blocks = re.findall(r"```bash\n(.*?)```", GUIDE, re.S)
    lines = [ln.strip() for b in blocks for ln in b.splitlines()]
    return [shlex.split(ln) for ln in lines if ln.startswith("vlaloop ")]


COMMANDS = guide_commands()


def test_the_guide_shows_the_first_day_commands():
    assert len(COMMANDS) >= 9
    joined = [" ".join(c) for c in COMMANDS]
    for needed in ("calibrate workspace", "calibrate intrinsics", "calibrate handeye", "learn --bootstrap",
                   "serve", "--dry-run", "--mode greedy"):
        assert any(needed in c for c in joined), needed
    for item in ("e-stop", "Tokens", "Workspace box", "Dry run", "first greedy episode", "calibration.yaml"):
        assert item in GUIDE, item


@pytest.mark.parametrize("argv", COMMANDS, ids=[" ".join(c[1:4]) for c in COMMANDS])
def test_every_command_parses_with_the_real_parser(argv):
    wanted = chosen_subcommand(argv[1:])
    assert wanted is not None, argv
    args = build_parser(wanted).parse_args(argv[1:])  # an unknown flag or bad choice exits: a failure
    if wanted == "robot":
        from robot_client.cli import robot_config

        cfg = robot_config(args, load_config(environ={}))  # the overrides validate as a RobotConfig
        assert cfg.backend in ("mock", "franka")


def test_every_config_field_and_variable_named_exists():
    sections = DeploymentConfig.model_fields
    fields = re.findall(r"`(server|learner|robot|model)\.([a-z_]+)`", GUIDE)
    assert fields
    for section, name in fields:
        assert name in sections[section].annotation.model_fields, f"{section}.{name}"
    for section, name in re.findall(r"VLALOOP_([A-Z]+)__([A-Z_]+)", GUIDE):
        assert name.lower() in sections[section.lower()].annotation.model_fields, f"{section}__{name}"


def test_the_mock_dry_run_rehearsal_runs_and_the_arm_holds(tmp_path):
    (argv,) = [c for c in COMMANDS if "--dry-run" in c and "mock" in c]
    server = standin_server(tmp_path)
    learner = standin_learner(tmp_path, tmp_path / "episodes")
    try:
        argv = [a.replace("127.0.0.1:8000", f"127.0.0.1:{server.port}").replace("127.0.0.1:5555",
                f"127.0.0.1:{learner.port}") for a in argv]
        r = subprocess.run([PY, "-m", "vlaloop.cli", "--run-dir", str(tmp_path / "run"), *argv[1:]], cwd=ROOT,
                           capture_output=True, text=True, timeout=180)
        assert r.returncode == 0, r.stderr[-3000:]
        assert "dry run: would move by" in r.stderr
        acts = httpx.get(f"http://127.0.0.1:{server.port}/_test/log").json()["act"]
        assert acts  # the server was asked for actions
    finally:
        server.stop()
        learner.stop()
    store = EpisodeStore(tmp_path / "episodes")
    (meta,) = store.list_episodes()
    extra = meta.get("extra", meta)  # the stand-in learner stores the extra fields at the top level
    assert meta["outcome"] == "aborted" and extra["dry_run"] is True
    steps = store.load(meta["robot_id"], meta["episode_id"]).steps
    assert len(steps) == 20
    states = np.array([s["state"] for s in steps])
    assert np.ptp(states[:, :6], axis=0).max() == 0.0  # the arm never moved
    assert any(np.any(np.asarray(s["action"])[:3] != 0) for s in steps)  # though the policy asked it to
