"""A dry-run episode on the operator page (real uvicorn on 127.0.0.1, a real store on disk, headless
Chromium): listed and replayable, but with no "Correct the label" buttons, and the relabel endpoint
refuses it (409, nothing queued for the learner)."""

from __future__ import annotations

import httpx
import numpy as np
import pytest
from browser import js_errors
from selenium.webdriver.common.by import By
from standins import wait_for

from bench.harness import ServerThread
from deployment.config import load_config
from episodes.store import EpisodeStore
from protocol.images import encode_jpeg

OPERATOR = "op-secret"
pytestmark = [pytest.mark.timeout(120)]


class _NoPolicy:
    """A server with no checkpoint yet (the page endpoints need none)."""

    def latest(self) -> int | None:
        return None

    def load(self, version, base):  # pragma: no cover - never called: latest() is None
        raise AssertionError("no version to load")


def _store(store: EpisodeStore, episode: str, outcome: str, **meta) -> None:
    for step in range(3):
        store.append_step("mock0", episode, step, {"state": [0.0] * 7, "action": [0.01] * 7, "policy_version": 1},
                          {"front": encode_jpeg(np.full((24, 32, 3), 40 * step, dtype=np.uint8))})
    store.finish("mock0", episode, {"source": "online", "outcome": outcome, "label_source": "auto", "n_steps": 3,
                                    "instruction": "reach the red block", "purpose": "train", **meta})


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    config = load_config(environ={}, run_dir=str(run_dir))
    config.server.operator_token, config.server.robot_token = OPERATOR, "robot-secret"
    store = EpisodeStore(run_dir / "episodes")
    _store(store, "dry-1", "aborted", dry_run=True, extra={"dry_run": True, "end_reason": "max_steps"})
    _store(store, "ep-1", "failure")
    with ServerThread(config, loader=_NoPolicy()) as srv:
        srv.run_dir = run_dir
        yield srv


def test_the_relabel_endpoint_refuses_a_dry_run(server):
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {OPERATOR}"}, timeout=10) as c:
        listed = {e["episode_id"]: e for e in c.get("/v1/episodes").json()["episodes"]}
        assert listed["dry-1"]["dry_run"] is True and listed["ep-1"]["dry_run"] is False
        r = c.post("/v1/episodes/mock0/dry-1/relabel", json={"outcome": "success"})
        assert r.status_code == 409 and "dry run" in r.json()["detail"]
        assert not list((server.run_dir / "inbox").glob("relabel-*.json"))
        assert c.post("/v1/episodes/mock0/ep-1/relabel", json={"outcome": "success"}).status_code == 202


def test_the_page_offers_no_label_correction_for_a_dry_run(server, browser):
    driver = browser
    driver.get(server.url + "/")
    wait_for(lambda: driver.find_element(By.ID, "login").is_displayed(), 10, "the login dialog")
    driver.find_element(By.ID, "token").send_keys(OPERATOR + "\n")
    wait_for(lambda: not driver.find_element(By.ID, "login").is_displayed(), 10, "the login dialog to close")
    driver.find_element(By.CSS_SELECTOR, '.tab[data-view="episodes"]').click()

    def open_replay(episode: str) -> None:
        # in one script: the list re-renders while it polls, so a found element may go stale
        click = f'const li = document.querySelector(\'.episode[data-episode="{episode}"]\'); li && li.click(); return !!li'
        wait_for(lambda: driver.execute_script(click), 10, f"{episode} in the list")
        wait_for(lambda: episode in driver.execute_script("return document.querySelector('#replay h2')?.textContent || ''"),
                 10, f"{episode}'s replay")

    open_replay("ep-1")  # a trainable episode: the buttons are there
    assert len(driver.find_elements(By.CSS_SELECTOR, "#replay [data-relabel]")) == 3
    open_replay("dry-1")
    note = driver.find_element(By.CSS_SELECTOR, '#replay [data-field="dry-run"]').text
    assert "Dry run" in note and "never trained on" in note
    assert driver.find_elements(By.CSS_SELECTOR, "#replay [data-relabel]") == []
    assert "Correct the label" not in driver.find_element(By.ID, "replay").text
    assert js_errors(driver) == []
