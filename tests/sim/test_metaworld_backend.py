"""MetaWorld behind the robot client's interfaces: demos stored as the mock's are, the robot client
running a MetaWorld episode against the real server and learner, injected faults, and the batched
scenes the learner's evaluation drives (real MuJoCo, real processes and sockets)."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

import sim.metaworld  # noqa: F401  (sets MUJOCO_GL before mujoco is imported)

pytest.importorskip("metaworld")

from standins import PY, ROOT, free_port, real_learner, real_server  # noqa: E402

from episodes.store import EpisodeStore  # noqa: E402
from interface.robot import ArmError  # noqa: E402
from sim.metaworld.backend import FaultConfig, MetaWorldRobot  # noqa: E402
from sim.metaworld.demos import record_demos  # noqa: E402
from sim.metaworld.vec import MetaWorldVec  # noqa: E402


def test_demos_cli_stores_successful_expert_episodes_as_the_mock_does(tmp_path):
    r = subprocess.run([PY, "-m", "vlaloop.cli", "--run-dir", str(tmp_path), "demos", "--backend", "metaworld",
                        "--task", "drawer-close", "--n", "2"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "expert success 2/2" in r.stdout
    store = EpisodeStore(tmp_path / "episodes")
    metas = store.list_episodes(source="expert")
    assert sorted(m["episode_id"] for m in metas) == ["drawer-close-s0", "drawer-close-s1"]
    for m in metas:
        assert m["outcome"] == "success" and m["label_source"] == "auto" and m["backend"] == "metaworld"
        assert m["instruction"] in sim.metaworld.tasks.LANGUAGE["drawer-close"]
        ep = store.load(m["robot_id"], m["episode_id"])
        assert len(ep.steps) == m["n_steps"] > 10
        step = ep.steps[0]
        assert len(step["state"]) == 7 and len(step["action"]) == 7 and step["action"][3:6] == [0, 0, 0]
        assert max(abs(x) for x in step["action"][:3]) <= 0.01 + 1e-6
    bad = subprocess.run([PY, "-m", "vlaloop.cli", "--run-dir", str(tmp_path), "demos", "--backend", "metaworld",
                          "--task", "fly-to-the-moon"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "unknown metaworld task" in bad.stdout


def test_record_demos_resumes_and_is_deterministic(tmp_path):
    store = EpisodeStore(tmp_path / "a")
    first = record_demos(store, "button-press-topdown", n=1, seed=5)
    again = record_demos(store, "button-press-topdown", n=1, seed=5)
    assert again.attempts == 0 and again[0]["episode_id"] == first[0]["episode_id"]
    other = EpisodeStore(tmp_path / "b")
    record_demos(other, "button-press-topdown", n=1, seed=5)
    a = store.load("expert", "button-press-topdown-s5").steps
    b = other.load("expert", "button-press-topdown-s5").steps
    assert [s["action"] for s in a] == [s["action"] for s in b]


def test_faults_arm_error_until_recover_and_dropped_frames():
    robot = MetaWorldRobot("reach", image_size=48, faults=FaultConfig(arm_error_at_step=2, drop_frame_prob=1.0))
    try:
        robot.new_episode(seed=0)
        cam = robot.cameras["front"]
        f1, f2 = cam.read(), cam.read()
        assert f2.seq == f1.seq and f2.meta.get("dropped")  # a repeated frame
        robot.arm.move_delta(np.array([0.01, 0, 0, 0, 0, 0, 1.0]))
        robot.arm.move_delta(np.array([0.01, 0, 0, 0, 0, 0, 1.0]))
        with pytest.raises(ArmError):
            robot.arm.move_delta(np.zeros(7))
        assert robot.arm.state().error is not None
        with pytest.raises(ArmError):
            robot.arm.reset_home()
        robot.arm.recover()
        robot.arm.move_delta(np.array([0.0, 0, 0, 0, 0, 0, 1.0]))
        assert robot.arm.state().error is None
    finally:
        robot.close()


def test_an_instruction_selects_its_task_and_one_without_a_task_is_refused():
    robot = MetaWorldRobot("reach", image_size=48)
    try:
        assert robot.new_episode_for("Open the door.", seed=3) == "Open the door."
        assert robot.task_name == "door-open" and robot.instruction == "Open the door."
        with pytest.raises(ValueError, match="no task for the instruction 'make coffee'"):
            robot.new_episode_for("make coffee", seed=3)
    finally:
        robot.close()


def test_vec_over_worker_processes_matches_in_process_scenes():
    seeds = [3, 4, 5]

    def run(workers):
        with MetaWorldVec(3, image_size=32, seeds=seeds, task="mt10", workers=workers) as vec:
            names = list(vec.task_names)
            for _ in range(15):
                vec.step(vec.expert_actions(noise=0.1))
            return names, vec.states(), vec.render(32, "front")

    n0, s0, i0 = run(0)
    n2, s2, i2 = run(2)
    assert n0 == n2
    np.testing.assert_array_equal(s0, s2)
    np.testing.assert_array_equal(i0, i2)


def test_vec_workers_serve_a_second_reset_with_another_scene_count():
    """learner.evaluate keeps one MetaWorldVec per worker count across rollouts of any size."""
    with MetaWorldVec(3, image_size=32, seeds=[3, 4, 5], task="mt10", workers=2) as vec:
        vec.reset([7], "mt10")
        assert vec.n == 1 and vec.render(32).shape == (1, 32, 32, 3)
        for _ in range(5):
            vec.step(vec.expert_actions())
        pooled = vec.states()
    with MetaWorldVec(1, image_size=32, seeds=[7], task="mt10") as fresh:
        for _ in range(5):
            fresh.step(fresh.expert_actions())
        np.testing.assert_array_equal(pooled, fresh.states())


@pytest.mark.parametrize("workers", [0, 1])
def test_frames_drawn_later_from_snapshots_equal_the_frames_of_the_moment(tmp_path, workers):
    """The deferred recording of learner.evaluate: a success's frames drawn at the end from the
    snapshots taken at each step are the frames rendered at that step."""
    from learner.evaluate import _Recorder
    from protocol.images import encode_jpeg

    with MetaWorldVec(2, image_size=32, seeds=[3, 4], task="drawer-close", workers=workers) as vec:
        live_frames, states = [], []
        for _ in range(6):
            live_frames.append(vec.render(32, "front"))
            states.append(vec.snapshots())
            vec.step(vec.expert_actions(noise=0.1))
        drawn = vec.render_snapshots({1: [states[t][1] for t in (5, 0, 3)], 0: [states[2][0]]}, "front")
        for k, t in enumerate((5, 0, 3)):  # after the scene moved on, out of order
            np.testing.assert_array_equal(drawn[1][k], live_frames[t][1])
        np.testing.assert_array_equal(drawn[0][0], live_frames[2][0])
        np.testing.assert_array_equal(vec.render(32, "front"), vec.render(32, "front"))  # left as it was
        store = EpisodeStore(tmp_path / "episodes")
        rec = _Recorder(store, vec, "sim0", ["a", "b"], ["front"], 32, group_commit=True, deferred=True)
        rec.snaps = states[0]
        for t in range(6):
            rec.snaps = states[t]
            for i in range(2):
                msg = _step_msg(i, t, {"front": encode_jpeg(live_frames[t][i])} if t % 4 == 0 else {})
                rec.add(i, msg, decision=t % 4 == 0)
        rec.close(np.array([False, True]))
    failed, succeeded = store.load("sim0", "a"), store.load("sim0", "b")
    assert [bool(s["frames"]) for s in failed.steps] == [t % 4 == 0 for t in range(6)]  # decisions only
    assert all(s["frames"] for s in succeeded.steps)
    for t in range(6):
        assert succeeded.frame_bytes(t, "front") == encode_jpeg(live_frames[t][1])


def _step_msg(i: int, t: int, images: dict):
    from protocol.messages import StepMsg

    return StepMsg(robot_id="sim0", episode_id="ab"[i], step=t, images=images, state=[0.0] * 7, action=[0.0] * 7,
                   chunk_index=t % 4, instruction="close the drawer", t_capture=0.0, t_act=0.0)


def test_learner_rollout_on_metaworld_stores_episodes(tmp_path):
    import torch

    from bench.harness import publish_tiny
    from learner.evaluate import rollout
    from vla.policy import Policy

    torch.set_num_threads(1)
    _, registry, _ = publish_tiny(tmp_path / "run")
    policy = Policy.load(registry)
    store = EpisodeStore(tmp_path / "episodes")
    res = rollout(policy, [0, 1], "coffee-button", "sample", torch.Generator().manual_seed(0), store=store,
                  backend="metaworld", max_steps=24)
    assert res.steps.tolist() == [24, 24] or res.success.any()  # the cap, unless it succeeded
    metas = store.list_episodes()
    assert len(metas) == 2 and {m["task"] for m in metas} == {"coffee-button"}
    ep = store.load(metas[0]["robot_id"], metas[0]["episode_id"])
    assert len(ep.steps) == metas[0]["n_steps"] and ep.steps[0]["action_chunk"] is not None


@pytest.mark.slow
def test_robot_client_runs_a_metaworld_episode_against_the_real_server(tmp_path):
    import torch

    from bench.harness import publish_tiny

    torch.set_num_threads(1)
    run_dir = tmp_path / "stack"
    publish_tiny(run_dir)
    server_port, learner_port = free_port(), free_port()
    server = real_server(run_dir, server_port, run_dir / "server.log")
    learner = real_learner(run_dir, learner_port, run_dir / "learner.log")
    try:
        r = subprocess.run([PY, "-m", "vlaloop.cli", "--run-dir", str(tmp_path / "robot"), "robot", "--backend",
                            "metaworld", "--task", "button-press-topdown", "--robot-id", "mw0",
                            "--server", f"http://127.0.0.1:{server_port}",
                            "--learner", f"tcp://127.0.0.1:{learner_port}", "--episodes", "1",
                            "--max-steps", "12", "--rate", "20"],
                           cwd=ROOT, capture_output=True, text=True, timeout=240)
        assert r.returncode == 0, r.stderr[-3000:]
    finally:
        server.stop()
        learner.stop()
    store = EpisodeStore(run_dir / "episodes")
    metas = [m for m in store.list_episodes() if m["robot_id"] == "mw0"]
    assert len(metas) == 1
    meta = metas[0]
    assert meta["label_source"] == "auto" and meta["outcome"] in ("success", "failure")
    assert meta["instruction"] in sim.metaworld.tasks.LANGUAGE["button-press-topdown"]
    assert meta["calibration"]["workspace"]["min"] == [-0.525, 0.348, -0.0525]  # MetaWorld's box
    steps = store.load("mw0", meta["episode_id"]).steps
    assert len(steps) == 12 and steps[0]["policy_version"] == 1
    assert 0.3 < steps[0]["state"][1] < 1.0, json.dumps(steps[0]["state"])  # a MetaWorld hand position
