"""A lab's first day, rehearsed on the mock with the real processes: `vlaloop serve` holding no
checkpoint, `vlaloop learn` (the full learner: ingest, Stage 0, RL), the real robot client (mock
arm, `robot.record_demos: 10`, `robot.scene_reset: operator`; in the test process, so that the
stand-in gamepad can be plugged into it: hardware is the only stand-in) and the operator page in
headless Chromium.

The operator records 10 demonstrations by teleop with the server serving "teleop only": 8 from the
page (T takes over, W held drives, S labels success, N says the scene is reset) and 2 with the
gamepad at the robot (dead-man held, stick forward; its Start button is the ready). Stage 0 starts
by itself once the 10th demo is stored (`learner.bootstrap.min_demos`), publishes v1, the server
loads it, and the robot runs the policy: between its episodes the arm goes home and waits for the
operator's Ready (the page shows it), the operator labels each episode, and the RL round publishes
v2, and `vlaloop report` writes the run's report and success curve. The wall time and the operator's actions are printed (`pytest -s`) and quoted in docs/teleop.md.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import httpx
import pytest
from browser import IMG_DIR, js_errors
from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.by import By
from standins import PY, Proc, http_ok, wait_for

from calibration.schema import default_mock_calibration
from deployment.config import DeploymentConfig
from deployment.robot import RobotConfig
from episodes.store import EpisodeStore
from interface.teleop import GamepadReading
from robot_client.cli import RobotClient, build_rig
from robot_client.teleop import GamepadMapping, GamepadTeleop, TeleopSpeeds

ROBOT, OPERATOR = "robot-token-rehearsal", "operator-token-rehearsal"
RATE_HZ, MAX_STEPS, DEMOS, PAGE_DEMOS = 10, 10, 10, 8
pytestmark = [pytest.mark.slow, pytest.mark.timeout(720)]


class Pad:
    """Hardware stand-in: a gamepad; the test holds its dead-man (LB), pushes the left stick, taps Start."""

    def __init__(self):
        self.deadman = False
        self.forward = 0.0
        self.start = False
        self.presses = 0  # operator actions on the pad

    def read(self) -> GamepadReading:
        buttons = [False] * 11
        buttons[4], buttons[7] = self.deadman, self.start
        return GamepadReading((0.0, -self.forward, 0.0, 0.0, 0.0, 0.0), tuple(buttons), ((0, 0),))

    def tap_start(self) -> None:
        self.start = True
        time.sleep(0.1)  # read at 100 Hz: the press is seen
        self.start = False
        self.presses += 1

    def close(self):
        pass


class Page:
    """The operator page in Chromium; counts the operator's actions."""

    def __init__(self, driver, url: str):
        self.driver, self.actions = driver, 0
        driver.get(url + "/")
        wait_for(lambda: driver.find_element(By.ID, "login").is_displayed(), 10, "the login dialog")
        driver.find_element(By.ID, "token").send_keys(OPERATOR + "\n")
        self.actions += 1
        wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, '.robot[data-robot="arm0"]'), 60, "the robot card")

    def card(self):
        return self.driver.find_element(By.CSS_SELECTOR, '.robot[data-robot="arm0"]')

    def key(self, k: str) -> None:
        self.driver.find_element(By.TAG_NAME, "body").send_keys(k)
        self.actions += 1

    def hold(self, k: str, seconds: float) -> None:
        ActionChains(self.driver).key_down(k).pause(seconds).key_up(k).perform()
        self.actions += 1

    def state(self) -> str:
        return self.card().get_attribute("data-state") or ""

    def wait_state(self, state: str, timeout: float = 60) -> None:
        wait_for(lambda: self.state() == state, timeout, f"the card's state {state!r} (now {self.state()!r})")

    def awaiting(self) -> bool:
        return not self.card().find_element(By.CSS_SELECTOR, ".label-bar").get_attribute("hidden")

    def label_as_the_success_check_says(self) -> str:
        """The operator labels by what the episode did: the page shows the mock's success check."""
        wait_for(self.awaiting, 60, "the label bar")
        text = self.card().find_element(By.CSS_SELECTOR, '[data-field="awaiting"]').text
        outcome = "success" if "success check: success" in text else "failure"
        self.key(outcome[0])
        return outcome

    def ready(self, screenshot: str | None = None) -> None:
        self.wait_state("waiting_reset")
        badge = self.card().find_element(By.CSS_SELECTOR, '[data-field="state"]').text
        assert "scene reset" in badge.lower(), badge
        assert not self.card().find_element(By.CSS_SELECTOR, ".reset-bar").get_attribute("hidden")
        if screenshot:
            IMG_DIR.mkdir(parents=True, exist_ok=True)
            self.driver.save_screenshot(str(IMG_DIR / screenshot))
        self.key("n")

    def set_next_task(self, instruction: str) -> None:
        """Type an instruction into the card's task field and press Set next task."""
        field = self.card().find_element(By.CSS_SELECTOR, ".task-instruction")
        field.click()
        field.send_keys(instruction)
        self.card().find_element(By.CSS_SELECTOR, '[data-action="set-task"]').click()
        self.actions += 2
        wait_for(lambda: "next episode" in self.note(), 30, "the page to show the next task")

    def note(self) -> str:
        return self.card().find_element(By.CSS_SELECTOR, '[data-field="task-note"]').text


def bound(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def latest_version(run: Path) -> int:
    try:
        return int((run / "checkpoints" / "LATEST").read_text().strip().lstrip("v"))
    except (OSError, ValueError):
        return 0


def test_first_day_rehearsal_teleop_demos_stage0_reset_label_rl_round(tmp_path, browser, procs):
    t_start = time.monotonic()
    run = tmp_path / "run"
    run.mkdir()
    from standins import free_port

    sport, lport = free_port(), free_port()
    env = {"OMP_NUM_THREADS": "1", "VLALOOP_SERVER__ROBOT_TOKEN": ROBOT, "VLALOOP_SERVER__OPERATOR_TOKEN": OPERATOR,
           "VLALOOP_LEARNER__BIND": f"tcp://127.0.0.1:{lport}", "VLALOOP_LEARNER__BOOTSTRAP_MIN_DEMOS": str(DEMOS),
           "VLALOOP_LEARNER__BOOTSTRAP_STEPS": "20", "VLALOOP_LEARNER__BOOTSTRAP_BATCH_SIZE": "8",
           "VLALOOP_LEARNER__EPISODES_PER_ROUND": "2", "VLALOOP_LEARNER__RL_ROUNDS_PER_PHASE": "1",
           "VLALOOP_LEARNER__CRITIC_WARMUP_ROUNDS": "0", "VLALOOP_LEARNER__SFT_STEPS": "5"}
    base = [PY, "-m", "vlaloop.cli", "--run-dir", str(run)]
    server = Proc([*base, "serve", "--port", str(sport)], tmp_path / "server.log", port=sport, env=env,
                  ready=lambda: http_ok(f"http://127.0.0.1:{sport}/healthz"))
    learner = Proc([*base, "learn"], tmp_path / "learner.log", port=lport, env=env, ready=lambda: bound(lport))
    for proc in (server, learner):
        proc.env.pop("VLALOOP_UPDATE_SCREENSHOTS", None)  # the tests' switch, not a deployment setting
        procs.append(proc.start())
    url = f"http://127.0.0.1:{sport}"
    ready = httpx.get(f"{url}/readyz", timeout=5)
    assert ready.status_code == 503 and ready.json()["teleop_only"] is True, ready.text
    assert ready.json()["reason"].startswith("teleop only")

    config = DeploymentConfig()
    cfg = RobotConfig(robot_id="arm0", backend="mock", task="reach", server_url=url, token=ROBOT,
                      learner_addr=f"tcp://127.0.0.1:{lport}", outbox_dir=str(tmp_path / "outbox"), rate_hz=RATE_HZ,
                      max_steps=MAX_STEPS, record_demos=DEMOS, scene_reset="operator", operator="bob",
                      realtime_priority=0, label_timeout_s=120, teleop_linear_speed=0.1)
    cal = default_mock_calibration()
    rig = build_rig(cfg, config.model.cameras, config.model.image_size, cal)
    pad = Pad()
    client = RobotClient(cfg, rig, cal, cfg.outbox_dir, config.config_hash(),
                         [GamepadTeleop(pad, TeleopSpeeds(1 / RATE_HZ, 0.1, 0.5), GamepadMapping())])
    thread = threading.Thread(target=client.run, daemon=True)
    thread.start()
    try:
        page = Page(browser, url)
        record_demos(page, pad, client)
        t_demos = time.monotonic()
        # Stage 0 starts by itself: v1 appears, trained on the 10 recorded demos, and the server serves it
        # (generous limits: on a loaded 2-core machine Stage 0 and the server's load take minutes)
        wait_for(lambda: latest_version(run) >= 1, 300, "Stage 0 to publish v1")
        wait_for(lambda: httpx.get(f"{url}/readyz", timeout=5).status_code == 200, 180, "the server to load v1")
        t_stage0 = time.monotonic()
        # the next episode's task from the page: the mock refuses an instruction it has no task for
        # (the card says why, the task stays), and takes one it has at the next episode
        page.set_next_task("make coffee")
        page.ready(screenshot="scene_reset.png")
        wait_for(lambda: "task refused" in page.note(), 60, "the refusal on the card")
        assert "no task for the instruction 'make coffee'" in page.note()
        labels = [page.label_as_the_success_check_says()]
        page.set_next_task("reach the blue block")
        while latest_version(run) < 2:  # policy episodes: ready, label; until the RL round publishes
            page.ready()
            labels.append(page.label_as_the_success_check_says())
            assert len(labels) <= 7, "the RL round did not publish after 7 labelled episodes"
        t_rl = time.monotonic()
        assert js_errors(browser) == []
        # the robot stops only once the last label reached it and its episode is in the learner's store
        stored = EpisodeStore(run / "episodes")
        # (the policy's episodes: sampled, or greedy while the learner is in its SFT phase)
        wait_for(lambda: len([m for m in stored.list_episodes() if m.get("mode") != "record"]) >= len(labels), 60,
                 "every labelled episode in the learner's store")
    finally:
        client.stop()
        thread.join(30)
        client.close(10)

    store = EpisodeStore(run / "episodes")
    metas = sorted(store.list_episodes(), key=lambda m: m.get("finished", 0))
    demos = [m for m in metas if m.get("purpose") == "demo"]
    assert len([m for m in demos if m["outcome"] == "success"]) == DEMOS
    assert all(m["source"] == "expert" and m["mode"] == "record" for m in demos)
    drivers = [m["extra"]["demo"]["drivers"] for m in demos if m["outcome"] == "success"]
    assert all(list(d) == ["page"] for d in drivers[:PAGE_DEMOS]), drivers
    assert all(d == {"gamepad": ["bob"]} for d in drivers[PAGE_DEMOS:]), drivers
    for m in demos:  # every recorded step is the operator's
        steps = store.load("arm0", m["episode_id"]).steps
        assert steps and all(s["intervention"] and s["on_policy"] is False for s in steps)
        assert m["extra"]["reset"] == "operator" and m["extra"]["reset_s"] > 0
    # Stage 0 waited for the 10th demo: v1 was published after it was stored
    v1 = json.loads((run / "checkpoints" / "v000001" / "meta.json").read_text())
    assert v1["phase"] == "bootstrap"
    assert (run / "checkpoints" / "v000001").stat().st_mtime >= demos[-1]["finished"]
    online = [m for m in metas if m.get("mode") != "record"]  # the policy's: sampled, or greedy during SFT
    assert len([m for m in online if m["source"] == "online"]) >= 2
    assert all(m["extra"]["reset"] == "operator" for m in online)
    assert [m["outcome"] for m in online[:len(labels)]] == labels
    assert "coffee" not in online[0]["instruction"] and online[0]["task"] == "reach"
    assert all(m["instruction"] == "reach the blue block" and m["task"] == "reach" for m in online[1:len(labels)])
    v2 = json.loads((run / "checkpoints" / "v000002" / "meta.json").read_text())
    assert v2["phase"] == "rl"
    # the lab's own run gets the demo's report and success curve
    import subprocess
    report = subprocess.run([PY, "-m", "vlaloop.cli", "--log-file", "none", "report", str(run)],
                            capture_output=True, text=True, timeout=300)
    assert report.returncode == 0, report.stderr
    assert (run / "success_curve.png").stat().st_size > 0 and "v2" in (run / "report.md").read_text()
    total = time.monotonic() - t_start
    print(f"\nrehearsal: {total:.0f} s wall ({t_demos - t_start:.0f} s to 10 demos, Stage 0 +{t_stage0 - t_demos:.0f} s,"
          f" RL round +{t_rl - t_stage0:.0f} s after {len(labels)} labelled episodes); operator actions: "
          f"{page.actions} on the page, {pad.presses} on the gamepad")


def record_demos(page: Page, pad: Pad, client: RobotClient) -> None:
    """10 demos: the page drives 8 (T, hold W, S, N), the gamepad 2 (dead-man + stick, S on the page, Start)."""
    for i in range(DEMOS):
        if i < PAGE_DEMOS:
            page.ready()
        else:
            page.wait_state("waiting_reset")
            pad.tap_start()
        page.wait_state("running")
        detail = page.card().find_element(By.CSS_SELECTOR, '[data-field="detail"]').text
        assert f"recording demonstration {i + 1} of {DEMOS}" in detail, detail
        if i < PAGE_DEMOS:
            page.key("t")
            wait_for(lambda: page.card().get_attribute("data-teleop") == "page", 30, "the take-over")
            page.hold("w", 1.4)  # 10 steps at 10 Hz: the episode ends at its step limit
            wait_for(lambda: page.card().get_attribute("data-teleop") == "", 30, "the page to stop driving")
        else:
            pad.deadman, pad.forward = True, 1.0
            pad.presses += 1
            wait_for(page.awaiting, 30, "the episode's end")
            pad.deadman, pad.forward = False, 0.0
        wait_for(page.awaiting, 30, "the label bar")
        page.key("s")  # the operator judges the demo a success
        wait_for(lambda n=i + 1: client.runner.demos_recorded == n, 30, f"demo {i + 1} to count")
