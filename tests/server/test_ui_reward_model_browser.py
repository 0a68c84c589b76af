"""The operator page's reward-model elements in headless Chromium against a real server:

  real server (uvicorn in a thread, tiny policy v1, reward_model.mode "shadow") with a classifier
  published for the serving trunk, and status.json written by the learner's StatusBoard.

Checks: an episode that ended shows the model's P(success) next to "your label?" (shadow mode: it
still waits for the operator); the Learning tab shows the reward-model card -- the disagreement
monitor's rate and counts, the fit, the ECE and one reliability row per calibration bin. The
screenshot goes to docs/img/ui_reward_model.png with VLALOOP_UPDATE_SCREENSHOTS=1.
"""

from __future__ import annotations

import json
import time

import httpx
import numpy as np
import pytest
from browser import IMG_DIR, js_errors
from selenium.webdriver.common.by import By
from standins import wait_for

from bench.harness import ServerThread, publish_tiny
from deployment.reward_model import RewardModelConfig
from episodes.status import StatusBoard
from protocol.codec import packb
from protocol.images import encode_jpeg
from protocol.messages import ActRequest
from vla.success_classifier import SuccessClassifierConfig, fit

OPERATOR, ROBOT = "operator-token-rm", "robot-token-rm"
pytestmark = [pytest.mark.timeout(180)]


def _episode(i: int, outcome: str, source: str, p: float | None, original: str | None = None) -> dict:
    meta = {"robot_id": "sim0", "episode_id": f"e{i}", "source": "online", "outcome": outcome,
            "label_source": source, "policy_version": 1, "learner_phase": "rl", "finished": 1000.0 + i,
            "extra": {"reward_model_p": p}}
    if original:
        meta["original_outcome"] = original
    return meta


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    import torch

    from vla.policy import Policy, trunk_key
    from vla.registry import CheckpointRegistry

    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("run")
    publish_tiny(run)
    policy = Policy.load(CheckpointRegistry(run / "checkpoints"))
    width = policy.spec.feature_dim + policy.spec.state_dim
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(20, width)), np.arange(20) % 2
    model = fit(x, y, SuccessClassifierConfig(), trunk_key=trunk_key(policy))
    (run / "reward_model.json").write_text(json.dumps({"classifier": model.to_json(), "report": {}}))
    board = StatusBoard(run / "status.json")
    # operator labels on 4 scored episodes (1 disagreement) + 2 auto labels, one corrected later
    board.record_episodes([_episode(0, "success", "operator", 0.8), _episode(1, "failure", "operator", 0.3),
                           _episode(2, "success", "operator", 0.2), _episode(3, "failure", "operator", 0.1),
                           _episode(4, "success", "reward_model", 0.95),
                           _episode(5, "success", "operator", 0.04, original="failure")], write=False)
    board.set_reward_model({"mode": "shadow", "state": "fitted", "n_labels": 40, "n_success": 14,
                            "cv_accuracy": 0.9, "cv_auto_fraction": 0.6, "cv_auto_error": 0.05, "ece": 0.071,
                            "auto_threshold": 0.9,
                            "calibration": {"n": 40, "ece": 0.071, "bins": [
                                {"lo": 0.0, "hi": 0.1, "n": 20, "mean_p": 0.04, "observed": 0.05},
                                {"lo": 0.5, "hi": 0.6, "n": 8, "mean_p": 0.55, "observed": 0.5},
                                {"lo": 0.9, "hi": 1.0, "n": 12, "mean_p": 0.96, "observed": 0.92}]}})
    return run


def _act(robot: httpx.Client, episode_id: str, step: int) -> None:
    image = np.random.default_rng(step).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    req = ActRequest(request_id=f"{episode_id}-{step}", robot_id="sim0", episode_id=episode_id, step=step,
                     t_capture=time.time(), instruction="reach the block", images={"front": encode_jpeg(image)},
                     state=[0.5, 0, 0.2, 0, 0, 0, 1])
    r = robot.post("/v1/act", content=packb(req.to_wire()), headers={"content-type": "application/msgpack"})
    assert r.status_code == 200, r.text


def test_reward_model_card_and_awaiting_hint(run_dir, browser):
    from deployment.config import load_config

    config = load_config(environ={}, run_dir=str(run_dir))
    config.server.operator_token, config.server.robot_token = OPERATOR, ROBOT
    config.reward_model = RewardModelConfig(mode="shadow")
    with ServerThread(config) as server:
        server.wait_ready(60)
        robot = httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {ROBOT}"}, timeout=30)
        for step in range(3):
            _act(robot, "ep-shadow", step)
        r = robot.post("/v1/robots/sim0/episodes/ep-shadow/awaiting", json={"n_steps": 3})
        assert r.json()["label"] is None  # shadow: the operator labels every episode
        robot.post("/v1/robots/sim0/status", json={"state": "waiting_label", "episode_id": "ep-shadow"})

        driver = browser
        driver.get(server.url + "/")
        wait_for(lambda: driver.find_element(By.ID, "login").is_displayed(), 10, "the login dialog")
        driver.find_element(By.ID, "token").send_keys(OPERATOR + "\n")
        awaiting = wait_for(lambda: next((e for e in driver.find_elements(
            By.CSS_SELECTOR, 'article[data-robot="sim0"] [data-field="awaiting"]') if "reward model" in e.text),
            None), 20, "the awaiting label with the model's probability")
        assert "reward model: P(success) 0." in awaiting.text or "reward model: P(success) 1." in awaiting.text

        driver.find_element(By.CSS_SELECTOR, '.tab[data-view="learning"]').click()
        card = wait_for(lambda: (c := driver.find_element(By.ID, "reward-model")).is_displayed() and c, 15,
                     "the reward-model card")
        # 5 episodes labelled by both (e5 was auto-labelled... by p=0.04 -> failure, corrected to success)
        assert driver.find_element(By.ID, "rm-disagreement").text == "40%"  # e2 and e5 of 5
        sub = driver.find_element(By.ID, "rm-disagreement-sub").text
        assert "2 of 5" in sub and "1 auto-labelled, 1 corrected" in sub
        assert driver.find_element(By.ID, "rm-ece").text == "0.071"
        assert len(card.find_elements(By.CSS_SELECTOR, "#rm-bins tr.rm-bin")) == 3
        assert "40 operator labels" in driver.find_element(By.ID, "rm-fit-sub").text
        assert "mode shadow" in driver.find_element(By.ID, "rm-mode").text
        assert js_errors(driver) == []
        IMG_DIR.mkdir(parents=True, exist_ok=True)
        driver.execute_script("arguments[0].scrollIntoView()", card)
        driver.save_screenshot(str(IMG_DIR / "ui_reward_model.png"))
        robot.close()
