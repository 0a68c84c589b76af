"""The scripted operator inside the robot client (robot_client/scripted_operator.py), end to end with
real processes: `vlaloop serve` (the embedded tiny model, sampling), `vlaloop learn --no-train` (the
real ZeroMQ ingest writing the real EpisodeStore) and `vlaloop robot --backend mock --teleop scripted`.

The robot runs with a calibration whose step limit (1 cm) is below the expert's steps (2-4 cm on
reach_slots), so every operator command has to pass the SafetyFilter to be stored as it is.
Checked on the stored episodes:

* the operator took over (the untrained policy leaves the tube), at most twice per episode, and its
  steps are ``intervention: true``, ``intervention_source: "scripted"``, ``on_policy: false``, no
  log-prob, most with the policy's proposal for the tick (while the operator drives the robot asks
  every tick; a tick whose reply is not in yet has none);
* replaying the stored actions on a fresh mock scene of the same seed, the arm is where each stored
  step says, and every operator step executed exactly the SafetyFilter's version of the expert's
  action at that state (clamped to 1 cm, counted as ``clamp_translation``);
* the learner takes them: ``is_sft_episode`` and SFT's spans are exactly the operator's segments
  (failed episodes), the meta counts them and the robot's counters count the takeovers;
* a greedy episode is never driven, and a robot without an expert refuses ``--teleop scripted``.
"""

from __future__ import annotations

import subprocess

import numpy as np
import pytest
import yaml
from standins import PY, ROOT, free_port, real_learner, real_server

from calibration.schema import Limits, default_mock_calibration
from deployment.robot import RobotConfig
from episodes.store import EpisodeStore
from interface.robot import ArmState
from robot_client.safety import SafetyFilter
from robot_client.scripted_operator import ScriptedOperator, intervention_config
from sim.intervener import InterventionConfig
from sim.mock import MockRobot

pytestmark = [pytest.mark.timeout(240)]
TASK, STEP_LIMIT, EPISODES, SEED = "reach_slots", 0.01, 2, 7
OPERATOR = {"budget_fraction": 0.5, "grace_steps": 1}  # two 30-step episodes: room for takeovers


def tight_calibration(path) -> SafetyFilter:
    cal = default_mock_calibration()
    cal.limits = Limits(max_translation_per_step=STEP_LIMIT, max_rotation_per_step=cal.limits.max_rotation_per_step)
    path.write_text(yaml.safe_dump(cal.model_dump(mode="json")))
    return SafetyFilter.from_calibration(cal)


@pytest.mark.slow  # ~35 s at load 4: three real processes (server and learner import torch) and 2 episodes
def test_scripted_operator_drives_through_the_safety_filter_and_its_steps_reach_the_learner(tmp_path, procs):
    import torch

    from bench.harness import publish_tiny
    from learner.dataset import intervention_spans, sft_step_spans
    from learner.episode_rules import is_sft_episode

    torch.set_num_threads(1)
    run = tmp_path / "run"
    publish_tiny(run)
    safety = tight_calibration(tmp_path / "calibration.yaml")
    server_port, learner_port = free_port(), free_port()
    procs.append(real_server(run, server_port, tmp_path / "server.log"))
    procs.append(real_learner(run, learner_port, tmp_path / "learner.log"))
    argv = [PY, "-m", "vlaloop.cli", "--run-dir", str(run), "robot", "--backend", "mock", "--task", TASK,
            "--server", f"http://127.0.0.1:{server_port}", "--learner", f"tcp://127.0.0.1:{learner_port}",
            "--calibration", str(tmp_path / "calibration.yaml"), "--teleop", "scripted", "--mode", "sample",
            "--episodes", str(EPISODES), "--rate", "20", "--seed", str(SEED)]
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "VLALOOP_ROBOT__REALTIME_PRIORITY": "0",
           "VLALOOP_ROBOT__SCRIPTED_OPERATOR": yaml.safe_dump(OPERATOR, default_flow_style=True)}
    r = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=180)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "OPERATOR DRIVING (scripted)" in r.stderr

    store = EpisodeStore(run / "episodes")
    metas = sorted([m for m in store.list_episodes(source="online") if m["robot_id"] == "mock0"], key=lambda m: m["extra"]["seed"])
    assert [m["extra"]["seed"] for m in metas] == [SEED + i for i in range(EPISODES)]
    takeovers = 0
    for meta in metas:
        episode = store.load("mock0", meta["episode_id"])
        steps = episode.steps
        driven = [s for s in steps if s.get("intervention")]
        counters = meta["extra"]["counters"]
        assert meta["intervention_steps"] == len(driven) == counters.get("intervention_steps", 0)
        assert counters.get("takeovers", 0) <= 2 and len(intervention_spans(episode)) == counters.get("takeovers", 0)
        takeovers += counters.get("takeovers", 0)
        for s in driven:
            assert s["intervention_source"] == "scripted" and s["on_policy"] is False
            assert s["log_prob"] is None and s["action_chunk"] is None
            assert np.linalg.norm(s["action"][:3]) <= STEP_LIMIT + 1e-9
        proposed = [s for s in driven if s["proposed_action"] is not None]  # None: no chunk covered the tick
        assert len(proposed) >= len(driven) / 2
        replay_and_check(meta, steps, safety)
        if driven:  # the learner's view: SFT takes the operator's segments (and a success's finish)
            assert is_sft_episode(meta)
            spans = sft_step_spans(meta, episode)
            if meta["outcome"] == "failure":
                assert spans == intervention_spans(episode)
    assert takeovers >= 1, "the untrained policy leaves the tube: the operator must have taken over"


def replay_and_check(meta: dict, steps: list[dict], safety: SafetyFilter) -> None:
    """On a fresh scene of the episode's seed, execute the stored actions in order: the arm must be
    where each step says, and an operator step's action must be the filtered expert action there."""
    robot = MockRobot(task=TASK, image_size=64, cameras=("front",))
    robot.new_episode(meta["extra"]["seed"])
    robot.arm.reset_home()
    clamped = 0
    for s in sorted(steps, key=lambda s: s["step"]):
        state = robot.arm.state()
        assert np.allclose(state.position, s["state"][:3], atol=1e-6), f"step {s['step']}: replay diverged"
        if s.get("intervention"):
            expert = robot.expert_action_pair(0.0)[1]
            safe = safety.filter(expert, state.position, state.gripper)
            assert np.allclose(s["action"], safe.action, atol=1e-6), f"step {s['step']}: not the expert's action"
            clamped += s["safety"].get("clamp_translation", 0)
        robot.arm.move_delta(np.asarray(s["action"]))
    if any(s.get("intervention") for s in steps):
        assert clamped > 0, "the expert's 2-4 cm steps must have been clamped to the 1 cm limit"


def test_a_greedy_episode_is_never_driven_and_the_budget_holds():
    """Without any server: the operator judges only sampled episodes, and over many episodes of a
    policy that never moves it stays within its budget and its takeovers per episode."""
    state = ArmState(position=np.array([0.5, 0.0, 0.2]), rpy=np.zeros(3), gripper=1.0, t=0.0)
    away = np.array([-0.02, 0.0, 0.0, 0, 0, 0, 1.0])
    expert = np.array([0.02, 0.0, 0.0, 0, 0, 0, 1.0])
    op = ScriptedOperator(lambda noise: expert, InterventionConfig(budget_fraction=0.1, max_takeovers=2))
    op.start_episode("e0", "greedy")
    assert all(op.command(state, away) is None for _ in range(50))
    driven, per_episode = 0, []
    for e in range(20):
        op.start_episode(f"s{e}", "sample")
        got = [op.command(state, away) for _ in range(30)]
        assert all(g is None or (g.source == "scripted" and np.array_equal(g.action, expert)) for g in got)
        driven += sum(g is not None for g in got)
        per_episode.append(int(op.intervener.episode_takeovers[0]))
    assert driven > 0 and driven <= 0.1 * 20 * 30 and max(per_episode) <= 2
    op.start_episode("s20", "sample")
    assert op.command(state, None) is None  # no policy action (the arm holds): nothing to judge


def test_teleop_scripted_needs_a_simulator_and_known_settings():
    from robot_client.cli import build_interventions

    with pytest.raises(RuntimeError, match="no expert"):
        build_interventions(RobotConfig(teleop="scripted"), None)
    with pytest.raises(ValueError, match="unknown field"):
        intervention_config({"budget": 0.1})
    assert intervention_config({"max_takeovers": 1}).max_takeovers == 1
