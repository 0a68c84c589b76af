"""Demonstrations recorded by teleop (robot.record_demos) as the learner sees them: stored like the
ingest stores them (real EpisodeStore, meta.json from learner.ingest.episode_meta), they are expert
demos (Stage 0 and SFT train on them, RL never does), and with learner.bootstrap.min_demos Stage 0
waits for that many of them instead of recording scripted ones."""

import numpy as np
import pytest

from deployment.config import DeploymentConfig
from deployment.learner import LearnerConfig
from episodes.store import EpisodeStore
from learner.bootstrap import ensure_demos, expert_demos
from learner.episode_rules import is_expert, is_rl_episode, is_sft_episode
from learner.ingest import episode_meta
from protocol.images import encode_jpeg
from protocol.messages import EpisodeEnd

N = 5


def store_demo(store: EpisodeStore, episode_id: str, outcome: str = "success") -> dict:
    """A recorded demonstration: every step the operator's (no chunk, no log-prob)."""
    frame = encode_jpeg(np.zeros((8, 8, 3), np.uint8))
    for step in range(N):
        record = {"state": [step / 100, 0, 0, 0, 0, 0, 1], "chunk_index": 0,
                  "action": [0.01, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0], "action_chunk": None, "log_prob": None,
                  "value": None, "policy_version": -1, "on_policy": False, "intervention": True,
                  "intervention_source": "page", "proposed_action": None, "instruction": "reach the red block"}
        store.append_step("arm0", episode_id, step, record, {"front": frame})
    end = EpisodeEnd(robot_id="arm0", episode_id=episode_id, outcome=outcome, label_source="operator", n_steps=N,
                     instruction="reach the red block", task="reach",
                     extra={"mode": "record", "purpose": "demo", "reset": "operator", "reset_s": 4.2,
                            "demo": {"drivers": {"page": ["alice"]}, "devices": ["page"]}})
    store.finish("arm0", episode_id, episode_meta(store, end, "bootstrap"))
    return store.read_meta("arm0", episode_id)


@pytest.fixture
def store(tmp_path):
    return EpisodeStore(tmp_path / "episodes")


def test_a_recorded_demo_is_an_expert_demo_never_rl_data(store):
    demo = store_demo(store, "d0")
    assert demo["source"] == "expert" and demo["purpose"] == "demo" and demo["mode"] == "record"
    assert demo["extra"]["demo"]["drivers"] == {"page": ["alice"]} and demo["extra"]["reset_s"] == 4.2
    assert is_expert(demo) and is_sft_episode(demo) and not is_rl_episode(demo)
    failed = store_demo(store, "d1", outcome="failure")
    assert not is_expert(failed) and not is_sft_episode(failed)  # the operator said it went wrong


def test_stage0_waits_for_the_configured_number_of_recorded_demos(store):
    config = DeploymentConfig(learner=LearnerConfig(bootstrap={"min_demos": 3}))  # robot.backend: the mock
    for i in range(2):
        store_demo(store, f"d{i}")
    with pytest.raises(RuntimeError, match="2 of the 3 expert demonstrations"):
        ensure_demos(store, config)
    assert len(expert_demos(store)) == 2  # nothing scripted was recorded to make up the difference
    store_demo(store, "d2")
    assert [m["episode_id"] for m in ensure_demos(store, config)] == ["d0", "d1", "d2"]
