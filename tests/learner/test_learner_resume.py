"""The full learner (`vlaloop learn`, real Trainer, tiny model, small settings) as a process:
Stage 0 on an empty registry, RL rounds on episodes streamed over ZeroMQ, kill -9 during an RL round
and during SFT, restart each time: the store, the registry and learner_state.json stay consistent
and training continues to the end of the iteration."""

from __future__ import annotations

import hashlib
import json
import time

import pytest
from ingest_harness import hello

from bench.learner_ingest import IngestClient
from episodes.store import EpisodeStore
from protocol.images import encode_jpeg
from protocol.messages import EpisodeEnd, StepMsg
from vla.registry import CheckpointRegistry

pytestmark = pytest.mark.slow  # minutes, not seconds: `pytest -m "not slow"` skips it

SMALL = {  # everything tiny: this is about the service's crash consistency, not learning
    "VLALOOP_LEARNER__BOOTSTRAP__DEMOS": "4", "VLALOOP_LEARNER__BOOTSTRAP__STEPS": "8",
    "VLALOOP_LEARNER__SFT__STEPS": "6", "VLALOOP_LEARNER__EPISODES_PER_ROUND": "2",
    "VLALOOP_LEARNER__RL_ROUNDS_PER_PHASE": "2", "VLALOOP_LEARNER__MAX_ITERATIONS": "1",
    "VLALOOP_LEARNER__PPO__UPDATE_EPOCHS": "1", "VLALOOP_LEARNER__CRITIC_WARMUP_ROUNDS": "0",
    "VLALOOP_ROBOT__TASK": "reach",
}


def online_episode(robot_id: str, episode_id: str, seed: int, version: int, chunk: int = 4) -> list:
    """A mock 'reach' episode as a robot running a sampled policy streams it: decisions every
    `chunk` steps carry the executed chunk, a log-prob and a value."""
    from sim.mock.backend import MockRobot
    from sim.mock.demos import record_episode

    robot = MockRobot(task="reach", image_size=96, cameras=("front",), expert_noise=0.5)
    steps, ok = record_episode(robot, seed, "reach")
    actions = [r["action"] for r, _ in steps]
    msgs = []
    for i, (rec, frames) in enumerate(steps):
        decision = i % chunk == 0
        chunk_actions = [actions[min(j, len(actions) - 1)] for j in range(i, i + chunk)] if decision else None
        msgs.append(StepMsg(robot_id=robot_id, episode_id=episode_id, step=i,
                            images={n: encode_jpeg(f.image) for n, f in frames.items()}, state=rec["state"],
                            action=rec["action"], action_chunk=chunk_actions, chunk_index=i % chunk,
                            log_prob=-20.0 if decision else None, value=0.0 if decision else None,
                            policy_version=version, instruction=rec["instruction"], t_capture=rec["t_capture"],
                            t_act=rec["t_act"]))
    msgs.append(EpisodeEnd(robot_id=robot_id, episode_id=episode_id, outcome="success" if ok else "failure",
                           label_source="auto", n_steps=len(steps), instruction=steps[0][0]["instruction"],
                           task="reach", extra={"mode": "sample", "purpose": "train"}))
    return msgs


def stream(endpoint: str, episodes: list[str], version: int) -> None:
    c = IngestClient(endpoint)
    try:
        assert c.request(hello("m1")).ok
        for k, ep in enumerate(episodes):
            for msg in online_episode("m1", ep, 500 + int(ep[1:]) + k, version):
                ack = c.request(msg, timeout=20)
                assert ack.ok, ack.error
    finally:
        c.close()


def status(run_dir) -> dict:
    try:
        return json.loads((run_dir / "status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def wait_status(run_dir, pred, proc, timeout=90.0) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = status(run_dir)
        if st and pred(st):
            return st
        assert proc.poll() is None, f"learner exited {proc.returncode}"
        time.sleep(0.02)
    raise AssertionError(f"status never matched; last: {status(run_dir)}")


def assert_consistent(run_dir) -> dict:
    """LATEST names a complete version (files match their published checksums); learner_state.json
    counts every episode at most once and only in rounds whose version exists."""
    reg = CheckpointRegistry(run_dir / "checkpoints")
    latest = reg.latest()
    meta = reg.read_meta(latest)
    for name, info in meta["files"].items():
        data = (reg.path(latest) / name).read_bytes()
        assert len(data) == info["bytes"] and hashlib.sha256(data).hexdigest() == info["sha256"], name
    state = json.loads((run_dir / "learner_state.json").read_text())
    counted = [k for r in state["rounds"] for k in r["episodes"]]
    assert len(counted) == len(set(counted)) and set(counted) == set(state["consumed"])
    store = EpisodeStore(run_dir / "episodes")
    for r in state["rounds"]:
        assert reg.read_meta(r["version"])["phase"] == r["phase"] and r["version"] <= latest
    for key in counted:
        robot, ep = key.split("/")
        assert store.read_meta(robot, ep)["source"] == "online"
    return state


def test_kill9_during_rl_and_sft_then_training_continues(tmp_path, learner_factory):
    run_dir = tmp_path / "run"
    env = {**SMALL}
    reg = CheckpointRegistry(run_dir / "checkpoints")

    # 1st learner: empty registry -> Stage 0 (records the mock demos itself), round 0 on e0,e1;
    # killed while round 1 (e2,e3) trains
    lr = learner_factory(run_dir=run_dir, env=env)
    stream(lr.endpoint, ["e0", "e1"], 1)  # ingest runs while Stage 0 trains
    wait_status(run_dir, lambda s: s.get("round", 0) >= 1 and s.get("policy_version", 0) >= 2, lr.proc)
    assert reg.read_meta(1)["kind"] == "full" and reg.read_meta(1)["phase"] == "bootstrap"
    stream(lr.endpoint, ["e2", "e3"], 2)
    wait_status(run_dir, lambda s: str(s.get("detail", "")).startswith("RL round 1"), lr.proc)
    lr.kill9()
    state = assert_consistent(run_dir)
    assert state["iteration"] == 0 and {"m1/e0", "m1/e1"} <= set(state["consumed"])

    # 2nd learner: resumes, finishes round 1 (or adopts its published version), killed during SFT
    lr2 = learner_factory(run_dir=run_dir, env=env, port=lr.port)
    wait_status(run_dir, lambda s: s.get("phase") == "sft" and s.get("pid") == lr2.proc.pid, lr2.proc)
    before_sft = reg.latest()
    lr2.kill9()
    state = assert_consistent(run_dir)
    assert set(state["consumed"]) == {"m1/e0", "m1/e1", "m1/e2", "m1/e3"} and state["iteration"] == 0

    # 3rd learner: redoes SFT, publishes a full version and exits after max_iterations=1
    lr3 = learner_factory(run_dir=run_dir, env=env, port=lr.port)
    assert lr3.proc.wait(120) == 0, lr3.logs()[-3000:]
    state = assert_consistent(run_dir)
    assert state["iteration"] == 1 and state["pending"] is None
    assert reg.latest() > before_sft and reg.read_meta(reg.latest())["kind"] == "full"
    assert reg.read_meta(reg.latest())["phase"] == "sft"
    assert [r["phase"] for r in state["rounds"]] == ["rl", "rl", "sft"]
    assert status(run_dir)["phase"] == "idle"
