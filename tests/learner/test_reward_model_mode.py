"""The reward-model mode end to end: operator-labelled episodes in the real store -> the learner's
RewardModelTrainer fits and publishes -> a real server in mode "auto" scores episodes as robots end
them: confident ones come back labelled "reward_model" (with P(success)), uncertain ones wait for
the operator -> the robots' EpisodeEnds stored as the ingest stores them -> RL takes reward-model
labels only in mode "auto", and status.json's disagreement monitor counts model vs operator."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
import torch

from bench.harness import ServerThread, publish_tiny
from deployment.config import DeploymentConfig
from deployment.reward_model import RewardModelConfig
from deployment.server import ServerConfig
from episodes.status import StatusBoard
from episodes.store import EpisodeStore
from learner.episode_rules import is_rl_episode
from learner.evaluate import _NOT_IN_RECORD
from learner.features import FeatureCache
from learner.ingest import episode_meta
from learner.loop import PhaseLoop
from learner.reward_model import MODEL_FILE, RewardModelTrainer
from protocol.codec import packb, unpackb
from protocol.images import encode_jpeg
from protocol.messages import ActRequest, EpisodeEnd, StepMsg
from robot_client.server_client import ServerClient

torch.set_num_threads(1)
ROBOT, OPERATOR = "robot-secret", "operator-secret"
STATE = [0.5, 0.0, 0.2, 0.0, 0.0, 0.0, 1.0]
STEPS = 2  # decisions per episode (= last_k: the mixed episode pools one dark, one bright frame)


def _image(brightness: float, rng: np.random.Generator) -> np.ndarray:
    """A bright frame stands for a success, a dark one for a failure (the classifier must tell)."""
    noise = rng.normal(0, 6, (96, 96, 3))
    return np.clip(brightness + noise, 0, 255).astype(np.uint8)


def _store_episode(store: EpisodeStore, episode_id: str, images: list[np.ndarray], outcome: str,
                   label_source: str, extra: dict | None = None, operator_finished: bool = False) -> dict:
    """An online episode written as the ingest writes one: steps with decisions, then meta.json.
    `operator_finished`: an operator drove the last step (an intervention, no decision)."""
    for step, img in enumerate(images):
        teleop = operator_finished and step == len(images) - 1
        decision = {} if teleop else {"action_chunk": [[0.0] * 7] * 4, "log_prob": 0.0, "value": 0.0}
        msg = StepMsg(robot_id="sim0", episode_id=episode_id, step=step, images={"front": encode_jpeg(img)},
                      state=STATE, action=[0.0] * 7, chunk_index=0, policy_version=1,
                      instruction="reach the block", intervention=teleop, on_policy=not teleop,
                      intervention_source="page" if teleop else None, **decision)
        store.append_step("sim0", episode_id, step, msg.model_dump(exclude=_NOT_IN_RECORD), msg.images)
    end = EpisodeEnd(robot_id="sim0", episode_id=episode_id, outcome=outcome, label_source=label_source,
                     n_steps=len(images), instruction="reach the block", task="reach",
                     extra={"mode": "sample", "purpose": "train", **(extra or {})})
    store.finish("sim0", episode_id, episode_meta(store, end, "rl"))
    return store.read_meta("sim0", episode_id)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A run with a tiny policy and 12 operator-labelled episodes, and the reward model the learner's
    phase loop fitted on them (status.json's report)."""
    run = tmp_path_factory.mktemp("run")
    publish_tiny(run)
    store = EpisodeStore(run / "episodes")
    rng = np.random.default_rng(0)
    for i in range(12):
        success = i % 2 == 0
        images = [_image(200 if success else 40, rng) for _ in range(STEPS)]
        _store_episode(store, f"lab{i:02d}", images, "success" if success else "failure", "operator")
    # the simulator's and the model's own labels are never training labels: a wrong one changes nothing
    _store_episode(store, "simlabel", [_image(200, rng)] * STEPS, "failure", "auto")
    # an operator took over and finished: the label is about the operator's work, not a training label
    _store_episode(store, "operated", [_image(40, rng)] * (STEPS + 1), "success", "operator", operator_finished=True)
    # the learner's own path: its phase loop refits with the Trainer's feature cache and model
    config = DeploymentConfig(run_dir=str(run), reward_model=RewardModelConfig(mode="auto", min_labels=8))
    loop = PhaseLoop(config, run)
    loop.trainer.resume()
    loop._rescan()
    loop.refit_reward_model()
    report = json.loads((run / "status.json").read_text())["reward_model"]
    trainer, policy = loop.reward_model, loop.trainer.policy
    return run, store, report, trainer, policy


def test_fit_publishes_a_calibrated_classifier_and_refits_only_on_new_labels(fitted):
    run, store, report, trainer, policy = fitted
    assert report["mode"] == "auto" and report["state"] == "fitted" and report["n_labels"] == 12 and report["n_success"] == 6
    assert report["cv_accuracy"] == 1.0
    assert sum(b["n"] for b in report["calibration"]["bins"]) == 12 and report["ece"] is not None
    published = json.loads((run / MODEL_FILE).read_text())
    assert published["report"]["trunk_key"] == published["classifier"]["trunk_key"]
    cache = FeatureCache(run / "features")
    assert isinstance(trainer, RewardModelTrainer)
    assert trainer.refit_if_needed(store.list_episodes(), store, cache, policy) is None  # nothing new


def _act(robot, robot_id: str, episode_id: str, step: int, image: np.ndarray) -> None:
    req = ActRequest(request_id=f"{episode_id}-{step}", robot_id=robot_id, episode_id=episode_id, step=step,
                     t_capture=time.time(), instruction="reach the block", images={"front": encode_jpeg(image)},
                     state=STATE)
    r = robot._http.post("/v1/act", content=packb(req.to_wire()), headers={"content-type": "application/msgpack"})
    assert r.status_code == 200, r.text
    unpackb(r.content)


def test_auto_mode_labels_confident_episodes_and_leaves_uncertain_ones_to_the_operator(fitted):
    run, store, _, _, _ = fitted
    config = DeploymentConfig(run_dir=str(run), server=ServerConfig(robot_token=ROBOT, operator_token=OPERATOR),
                              reward_model=RewardModelConfig(mode="auto", auto_threshold=0.9))
    rng = np.random.default_rng(1)
    with ServerThread(config) as srv:
        srv.wait_ready()
        robot = ServerClient(srv.url, ROBOT, robot_id="sim0", timeout_s=30)
        import httpx

        operator = httpx.Client(base_url=srv.url, headers={"authorization": f"Bearer {OPERATOR}"}, timeout=30)
        labels = {}
        for episode_id, frames in (("bright", [200] * STEPS), ("dark", [40] * STEPS),
                                   ("mixed", [40] * (STEPS - 1) + [200])):  # last-2 pooled: half/half
            for step, b in enumerate(frames):
                _act(robot, "sim0", episode_id, step, _image(b, rng))
            r = robot._http.post(f"/v1/robots/sim0/episodes/{episode_id}/awaiting", json={"n_steps": STEPS})
            labels[episode_id] = r.json()["label"]
        assert labels["bright"]["label_source"] == "reward_model" and labels["bright"]["outcome"] == "success"
        assert labels["bright"]["reward_model_p"] >= 0.9
        assert labels["dark"]["label_source"] == "reward_model" and labels["dark"]["outcome"] == "failure"
        assert labels["dark"]["reward_model_p"] <= 0.1
        assert labels["mixed"] is None  # uncertain: waits for the operator, the model's guess shown
        waiting = operator.get("/v1/labels/awaiting").json()
        assert [w["episode_id"] for w in waiting] == ["mixed"]
        p_mixed = waiting[0]["reward_model_p"]
        assert 0.1 < p_mixed < 0.9
        assert robot.wait_label("bright", timeout_s=1)["label_source"] == "reward_model"
        operator.post("/v1/robots/sim0/label", json={"episode_id": "mixed", "outcome": "success"})
        got = robot.wait_label("mixed", timeout_s=5)
        assert got["label_source"] == "operator" and got["reward_model_p"] == pytest.approx(p_mixed)
        operator.close()
        robot.close()

    # the robots' EpisodeEnds, stored as the ingest stores them (p travels in extra.reward_model_p)
    metas = {}
    for episode_id, frames, label in (("bright", [200] * STEPS, labels["bright"]),
                                      ("dark", [40] * STEPS, labels["dark"]),
                                      ("mixed", [40] * (STEPS - 1) + [200], got)):
        metas[episode_id] = _store_episode(store, episode_id, [_image(b, rng) for b in frames], label["outcome"],
                                           label["label_source"], {"reward_model_p": label["reward_model_p"]})
    assert metas["bright"]["label_source"] == "reward_model"
    # RL: reward-model labels only where the mode allows it; the operator's always
    assert is_rl_episode(metas["bright"], reward_model_labels=True)
    assert not is_rl_episode(metas["bright"], reward_model_labels=False)
    assert is_rl_episode(metas["mixed"], reward_model_labels=False)

    # the operator corrects the dark episode's auto label: a disagreement the monitor counts
    store.relabel("sim0", "dark", "success")
    board = StatusBoard(run / "status.json")
    board.record_episodes(store.list_episodes(), write=False)
    board.set_reward_model({"mode": "auto", "state": "fitted"})
    monitor = json.loads((run / "status.json").read_text())["reward_model"]["disagreement"]
    # both labelled: mixed (operator success; model p < 0.9, agrees iff p >= 0.5) and dark (model 'failure')
    expected = int(p_mixed < 0.5) + 1
    assert monitor["n"] == 2 and monitor["disagreements"] == expected
    assert monitor["auto_labels"] == 1 and monitor["auto_labels_corrected"] == 1
