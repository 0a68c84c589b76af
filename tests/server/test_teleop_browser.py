"""The operator page's teleop in headless Chromium against the real pipeline: the real server (uvicorn
in a thread; the tiny model published so every greedy action is 0.001 on every axis), the real robot
client with the mock arm (in a thread) and a real ZeroMQ learner writing the real EpisodeStore.

Checked: T takes over (the card shows "operator driving"), holding W drives the mock arm +x by the
page's speed, G closes the gripper, the page shows the latency, T hands back and the policy drives
again; a device at the robot taking over (the gamepad, a stand-in device) shows on the card too;
the stored steps say who drove. Screenshots: docs/img/teleop_driving.png, teleop_device.png."""

from __future__ import annotations

import threading
import time

import httpx
import numpy as np
import pytest
from browser import IMG_DIR, js_errors
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from standins import standin_learner, wait_for

from calibration.schema import default_mock_calibration
from deployment.config import DeploymentConfig
from deployment.robot import RobotConfig
from deployment.server import ServerConfig
from episodes.store import EpisodeStore
from interface.teleop import GamepadReading
from robot_client.cli import RobotClient
from robot_client.episode import Rig
from robot_client.teleop import GamepadTeleop, TeleopSpeeds
from sim.mock import MockRobot

ROBOT, OPERATOR = "robot-token-teleop-ui", "operator-token-teleop-ui"
RATE_HZ, SPEED = 10, 0.1  # 0.1 m/s at 10 Hz: 1 cm per tick while W is held
pytestmark = [pytest.mark.timeout(240)]


class Pad:
    """Hardware stand-in: a gamepad with its dead-man button (LB) held or not."""

    def __init__(self):
        self.held = False

    def read(self) -> GamepadReading:
        buttons = [False] * 11
        buttons[4] = self.held
        return GamepadReading((0.0, 0.0, 0.0, 0.0, 0.0, 0.0), tuple(buttons), ((0, 0),))

    def close(self):
        pass


class MovesArm:
    """The mock arm, logging every executed action with its time."""

    def __init__(self, inner):
        self.inner, self.moves = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def move_delta(self, action):
        self.moves.append((time.monotonic(), np.array(action)))
        self.inner.move_delta(action)


def card(driver, robot_id: str):
    return driver.find_element(By.CSS_SELECTOR, f'.robot[data-robot="{robot_id}"]')


def test_keyboard_teleop_drives_the_mock_arm(tmp_path, browser, procs):
    import torch

    from bench.harness import ServerThread, publish_tiny

    torch.set_num_threads(1)
    publish_tiny(tmp_path / "run", mark=0.001)
    config = DeploymentConfig(run_dir=str(tmp_path / "run"), server=ServerConfig(
        robot_token=ROBOT, operator_token=OPERATOR))
    learner = standin_learner(tmp_path, tmp_path / "episodes")
    procs.append(learner)
    IMG_DIR.mkdir(parents=True, exist_ok=True)
    with ServerThread(config) as server:
        server.wait_ready(60)
        sim = MockRobot(task="reach", image_size=96, cameras=("front",))
        arm = MovesArm(sim.arm)
        pad = Pad()
        cfg = RobotConfig(robot_id="arm0", server_url=server.url, token=ROBOT, rate_hz=RATE_HZ, max_steps=100000,
                          mode="greedy", realtime_priority=0, label_timeout_s=10, teleop_linear_speed=SPEED,
                          learner_addr=f"tcp://127.0.0.1:{learner.port}", outbox_dir=str(tmp_path / "outbox"))
        rig = Rig(arm=arm, cameras=dict(sim.cameras), task="reach", new_episode=lambda seed: sim.new_episode(seed))
        client = RobotClient(cfg, rig, default_mock_calibration(), cfg.outbox_dir, DeploymentConfig().config_hash(),
                             [GamepadTeleop(pad, TeleopSpeeds(1 / RATE_HZ, SPEED, 0.5))])
        results: list = []
        thread = threading.Thread(target=lambda: results.extend(client.run(1)), daemon=True)
        thread.start()
        try:
            drive_from_the_page(browser, server, client, arm, sim, pad)
        finally:
            client.stop()
            thread.join(30)
            client.close(10)
    (result, end), = results
    assert result.counters.get("intervention_steps", 0) > 5
    stored = EpisodeStore(tmp_path / "episodes").load("arm0", end.episode_id).steps
    by = {s.get("intervention_source") for s in stored if s.get("intervention")}
    assert by == {"page", "gamepad"}
    assert all(s["on_policy"] is False and s.get("log_prob") is None for s in stored if s.get("intervention"))


def drive_from_the_page(driver, server, client, arm, sim, pad):
    driver.get(server.url + "/")
    wait_for(lambda: driver.find_element(By.ID, "login").is_displayed(), 10, "the login dialog")
    driver.find_element(By.ID, "token").send_keys(OPERATOR + "\n")
    wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, '.robot[data-robot="arm0"]'), 30, "the robot card")
    wait_for(lambda: int(card(driver, "arm0").get_attribute("data-step") or 0) >= 3, 60, "the policy's steps")
    card(driver, "arm0").click()
    body = driver.find_element(By.TAG_NAME, "body")

    # T: take over; the card says who drives
    body.send_keys("t")
    wait_for(lambda: card(driver, "arm0").get_attribute("data-teleop") == "page", 10, "the driving state")
    wait_for(lambda: client.loop.episode.driving == "page", 10, "the robot to see the take-over")
    assert "OPERATOR DRIVING" in card(driver, "arm0").find_element(By.CSS_SELECTOR, '[data-field="teleop"]').text
    # hold W: +x by 1 cm per tick; G: close the gripper
    x0 = sim.arm.state().position[0]
    t0 = time.monotonic()
    ActionChains(driver).key_down("w").pause(1.0).key_up("w").perform()
    t1 = time.monotonic()
    pushed = [a for t, a in arm.moves if t0 <= t <= t1 and a[0] > 0]
    assert pushed and all(np.allclose(a[:6], [SPEED / RATE_HZ, 0, 0, 0, 0, 0]) for a in pushed)
    assert sim.arm.state().position[0] > x0 + 0.02
    body.send_keys("g")
    wait_for(lambda: sim.arm.state().gripper == 0.0, 10, "the gripper to close")
    # the latency shows once the robot reported an executed command
    latency = card(driver, "arm0").find_element(By.CSS_SELECTOR, '[data-field="latency"]')
    wait_for(lambda: latency.get_attribute("data-ms"), 10, "the latency")
    wait_for(lambda: not driver.find_element(By.ID, "toast").is_displayed(), 5, "no toast")
    ActionChains(driver).key_down("d").key_down("r").pause(0.4).perform()  # a moving screenshot
    driver.save_screenshot(str(IMG_DIR / "teleop_driving.png"))
    ActionChains(driver).key_up("d").key_up("r").perform()
    print(f"\npage shows: {latency.text}")

    # T again: hand back; the policy drives (0.001 on every axis)
    body.send_keys("t")
    wait_for(lambda: client.loop.episode.driving is None, 10, "the hand-back")
    wait_for(lambda: card(driver, "arm0").get_attribute("data-teleop") == "", 10, "the card to show the policy")
    t2 = time.monotonic()
    wait_for(lambda: len([a for t, a in arm.moves if t > t2 + 0.3]) >= 3, 20, "policy moves")
    assert all(np.allclose(a[2:6], 0.001) for t, a in arm.moves if t > t2 + 0.3)

    # the gamepad at the robot takes over: the card shows it too
    pad.held = True
    wait_for(lambda: card(driver, "arm0").get_attribute("data-teleop") == "device", 10, "the device's state")
    assert "gamepad" in card(driver, "arm0").find_element(By.CSS_SELECTOR, '[data-field="teleop"]').text
    wait_for(lambda: not driver.find_element(By.ID, "toast").is_displayed(), 5, "no toast")
    driver.save_screenshot(str(IMG_DIR / "teleop_device.png"))
    pad.held = False
    wait_for(lambda: card(driver, "arm0").get_attribute("data-teleop") == "", 10, "the policy again")
    assert js_errors(driver) == []
    robots = httpx.get(server.url + "/v1/robots", headers={"authorization": f"Bearer {OPERATOR}"}).json()
    assert robots[0]["teleop"] is None
