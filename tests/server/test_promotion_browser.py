"""The operator page's promotion panel in headless Chromium against a real server (uvicorn in a
thread, the gate on, the real registry): the running canary and its tallies, the rollback of a bad
version (refused list and decisions), Pin and Unpin from the page (the server serves the pinned
version to every robot), and a refused version that cannot be pinned. Robots are HTTP clients in the
test; their episodes are labelled through the API. Screenshot: docs/img/ui_promotion.png."""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest
import torch
from browser import IMG_DIR, js_errors
from selenium.webdriver.common.by import By
from standins import wait_for

from bench.harness import ServerThread, publish_head, publish_tiny
from deployment.config import DeploymentConfig
from deployment.promotion import PromotionConfig
from deployment.server import ServerConfig
from protocol.codec import packb, unpackb
from protocol.images import encode_jpeg
from protocol.messages import ActRequest

ROBOT, OPERATOR = "robot-token-ui", "operator-token-ui"
GATE = PromotionConfig(enabled=True, canary_fraction=0.5, min_episodes=4, max_canary_episodes=12, seed=5)
pytestmark = [pytest.mark.timeout(240)]
torch.set_num_threads(1)


class Fleet:
    """Two robots as HTTP clients: each episode is two /v1/act requests, then a label."""

    def __init__(self, url: str) -> None:
        self.robot = httpx.Client(base_url=url, headers={"authorization": f"Bearer {ROBOT}"}, timeout=30)
        self.operator = httpx.Client(base_url=url, headers={"authorization": f"Bearer {OPERATOR}"}, timeout=30)
        self.image = encode_jpeg(np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8))
        self.n = 0

    def act(self, robot_id: str, episode_id: str, step: int) -> int:
        req = ActRequest(request_id=f"{episode_id}-{step}", robot_id=robot_id, episode_id=episode_id, step=step,
                         t_capture=time.time(), instruction="reach the blue block", images={"front": self.image},
                         state=[0.5, 0, 0.2, 0, 0, 0, 1])
        r = self.robot.post("/v1/act", content=packb(req.to_wire()), headers={"content-type": "application/msgpack"})
        assert r.status_code == 200, r.text
        return unpackb(r.content)["policy_version"]

    def episode(self, robot_id: str, bad: int | None) -> int:
        self.n += 1
        episode_id = f"ep{self.n}"
        version = [self.act(robot_id, episode_id, s) for s in range(2)][0]
        self.operator.post(f"/v1/robots/{robot_id}/label",
                           json={"episode_id": episode_id, "outcome": "failure" if version == bad else "success"})
        return version


def text(driver, css: str) -> str:
    return driver.find_element(By.CSS_SELECTOR, css).text


def test_promotion_panel_shows_the_rollback_and_pins_from_the_page(tmp_path, browser):
    model, registry, v1 = publish_tiny(tmp_path / "run", mark=0.01)
    config = DeploymentConfig(run_dir=str(tmp_path / "run"), server=ServerConfig(
        robot_token=ROBOT, operator_token=OPERATOR, watch_interval_s=0.1, promotion=GATE))
    IMG_DIR.mkdir(parents=True, exist_ok=True)
    with ServerThread(config) as server:
        server.wait_ready(60)
        fleet, driver = Fleet(server.url), browser
        fleet.episode("arm0", None)
        driver.get(server.url + "/")
        wait_for(lambda: driver.find_element(By.ID, "login").is_displayed(), 10, "the login dialog")
        driver.find_element(By.ID, "token").send_keys(OPERATOR + "\n")
        driver.find_element(By.CSS_SELECTOR, '.tab[data-view="learning"]').click()
        wait_for(lambda: "promoted v1" in text(driver, "#promotion-summary"), 20, "the gate's summary")
        assert "gate on" in text(driver, "#promotion-summary")

        # ---- a bad version: its canary shows with its tallies, then the rollback
        bad = publish_head(model, registry, mark=0.02)
        wait_for(lambda: server.app.state.holder.promotion_status()["canary"], 20, "the canary")
        wait_for(lambda: driver.find_element(By.ID, "promotion").get_attribute("data-canary") == str(bad), 10,
                 "the page to show the canary")
        assert f"Canary v{bad}" in text(driver, "#promotion-canary")
        for i in range(40):
            fleet.episode(f"arm{i % 2}", bad)
            if registry.is_refused(bad):
                break
        assert registry.is_refused(bad)
        fleet.act("arm0", "after", 0)  # the robot cards show the version serving them now
        row = wait_for(lambda: next(iter(driver.find_elements(
            By.CSS_SELECTOR, f'#promotion-refused tr[data-version="{bad}"]')), None), 10, "the refused row")
        assert "worse by more than 0.1" in row.text
        assert f"rolled back v{bad}" in text(driver, "#promotion-decisions")
        assert driver.find_element(By.ID, "promotion").get_attribute("data-canary") == ""
        wait_for(lambda: not driver.find_element(By.ID, "toast").is_displayed(), 5, "no toast")
        driver.save_screenshot(str(IMG_DIR / "ui_promotion.png"))

        # ---- a refused version cannot be pinned
        box = driver.find_element(By.ID, "pin-version")
        box.send_keys(str(bad))
        driver.find_element(By.CSS_SELECTOR, '[data-action="pin"]').click()
        wait_for(lambda: "was refused" in text(driver, "#toast"), 10, "the refusal toast")
        assert registry.pinned() is None

        # ---- Pin v1 from the page: served to every robot, gating paused; Unpin resumes
        good = publish_head(model, registry, mark=0.03)
        wait_for(lambda: (server.app.state.holder.promotion_status()["canary"] or {}).get("version") == good, 20,
                 "the next canary")
        box.clear()
        box.send_keys("1")
        driver.find_element(By.CSS_SELECTOR, '[data-action="pin"]').click()
        wait_for(lambda: registry.pinned() == 1, 10, "the pin to reach the registry")
        wait_for(lambda: driver.find_element(By.ID, "promotion").get_attribute("data-pinned") == "true", 10,
                 "the page to show the pin")
        assert "pinned v1" in text(driver, "#promotion-summary")
        assert {fleet.act("arm1", f"pinned{i}", 0) for i in range(8)} == {1}
        driver.find_element(By.ID, "unpin").click()
        wait_for(lambda: registry.pinned() is None, 10, "the unpin to reach the registry")
        wait_for(lambda: driver.find_element(By.ID, "promotion").get_attribute("data-pinned") == "false", 10,
                 "the page to show no pin")
        assert not driver.find_element(By.ID, "unpin").is_displayed()
        assert js_errors(driver) == []
