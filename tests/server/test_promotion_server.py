"""The promotion gate in a real server (uvicorn in a thread, the real registry, HTTP robots and
operator): a new version serves only its canary share, each episode sticks to one version, labels
promote a good version and roll back a bad one (refused in the registry, never served again, shown
in /v1/policy); the operator's pin serves one version to all and pauses the gate; a restart keeps
the promoted version, the refusal and the pin."""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest
import torch

from bench.harness import ServerThread, publish_head, publish_tiny
from deployment.config import DeploymentConfig
from deployment.promotion import PromotionConfig
from deployment.server import ServerConfig
from protocol.codec import packb, unpackb
from protocol.images import encode_jpeg
from protocol.messages import ActRequest

torch.set_num_threads(1)
ROBOT, OPERATOR = "robot-secret", "operator-secret"
IMAGE = encode_jpeg(np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8))
GATE = PromotionConfig(enabled=True, canary_fraction=0.5, min_episodes=4, max_canary_episodes=12,
                       margin=0.1, promote_confidence=0.7, rollback_confidence=0.9, seed=3)


def mark(version: int) -> float:
    return 0.01 * version


def server_for(run_dir) -> ServerThread:
    cfg = ServerConfig(robot_token=ROBOT, operator_token=OPERATOR, watch_interval_s=0.05, promotion=GATE)
    return ServerThread(DeploymentConfig(run_dir=str(run_dir), server=cfg))


def clients(srv):
    robot = httpx.Client(base_url=srv.url, headers={"authorization": f"Bearer {ROBOT}"}, timeout=30)
    operator = httpx.Client(base_url=srv.url, headers={"authorization": f"Bearer {OPERATOR}"}, timeout=30)
    return robot, operator


def act(robot, robot_id, episode_id, step) -> tuple[int, float]:
    req = ActRequest(request_id=f"{episode_id}-{step}", robot_id=robot_id, episode_id=episode_id, step=step,
                     t_capture=time.time(), instruction="reach the red block", images={"front": IMAGE},
                     state=[0.5, 0, 0.2, 0, 0, 0, 1])
    r = robot.post("/v1/act", content=packb(req.to_wire()), headers={"content-type": "application/msgpack"})
    assert r.status_code == 200, r.text
    body = unpackb(r.content)
    assert np.allclose(body["actions"], mark(body["policy_version"]), atol=1e-5)  # the weights that ran
    return body["policy_version"], body["actions"][0][0]


def episode(robot, operator, registry, robot_id, episode_id, outcome_of) -> int:
    """Two requests, then the operator labels it by the version that served it. One version serves
    the whole episode, unless a decision lands meanwhile: a refused canary hands over to the promoted
    version at once, and a promotion replaces the previous promoted version."""
    versions = [act(robot, robot_id, episode_id, s)[0] for s in range(2)]
    version = versions[0]
    assert (set(versions) == {version} or registry.is_refused(version)
            or registry.promoted() == versions[-1]), f"{episode_id} served by {versions}"
    robot.post(f"/v1/robots/{robot_id}/episodes/{episode_id}/awaiting", json={"n_steps": 3})
    r = operator.post(f"/v1/robots/{robot_id}/label", json={"episode_id": episode_id, "outcome": outcome_of(version)})
    assert r.status_code == 200, r.text
    return version


def wait_for(pred, timeout=30.0, what=""):
    deadline = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


@pytest.fixture
def run(tmp_path):
    model, registry, v1 = publish_tiny(tmp_path, mark=mark(1))
    return tmp_path, model, registry


def test_bad_canary_is_rolled_back_refused_for_good_and_a_good_one_promoted(run):
    run_dir, model, registry = run
    with server_for(run_dir) as srv:
        assert srv.wait_ready() == 1
        robot, operator = clients(srv)
        holder = srv.app.state.holder
        wait_for(lambda: registry.promoted() == 1, what="v1 promoted (the first version)")
        bad = publish_head(model, registry, mark=mark(2))
        wait_for(lambda: holder.promotion_status()["canary"] is not None, what="canary started")
        served = []
        for i in range(40):
            served.append(episode(robot, operator, registry, "r0", f"a{i}", lambda v: "success" if v == 1 else "failure"))
            if registry.is_refused(bad):
                break
        assert registry.is_refused(bad), holder.promotion_status()
        n_canary = served.count(bad)
        assert GATE.min_episodes <= n_canary <= GATE.max_canary_episodes and served.count(1) >= GATE.min_episodes
        wait_for(lambda: holder.promotion_status()["canary"] is None, what="canary closed")
        # never served again, to new episodes or to episodes that had it
        assert {act(robot, "r1", f"after{i}", 0)[0] for i in range(12)} == {1}
        info = operator.get("/v1/policy").json()
        assert bad in info["refused_versions"] and "worse by more than 0.1" in info["refused"][str(bad)]
        assert info["promotion"]["promoted"] == 1 and info["promotion"]["decisions"][-1]["action"] == "rollback"
        record = registry.refused()[bad]
        # every canary episode labelled before the decision counted (one may have been in flight)
        assert record["canary"]["successes"] == 0 and n_canary - 1 <= record["canary"]["failures"] <= n_canary

        good = publish_head(model, registry, mark=mark(3))
        wait_for(lambda: (holder.promotion_status()["canary"] or {}).get("version") == good, what="second canary")
        for i in range(60):
            episode(robot, operator, registry, "r0", f"b{i}", lambda v: "success")
            if registry.promoted() == good:
                break
        assert registry.promoted() == good, holder.promotion_status()
        wait_for(lambda: holder.policy.version == good, what="good version serves everyone")
        assert {act(robot, "r1", f"late{i}", 0)[0] for i in range(6)} == {good}
        robot.close()
        operator.close()
    # a restart keeps the promoted version and the refusal
    with server_for(run_dir) as srv:
        assert srv.wait_ready() == good
        assert bad in srv.app.state.holder.status()["refused_versions"]


def test_pin_serves_one_version_to_all_and_pauses_the_gate(run):
    run_dir, model, registry = run
    with server_for(run_dir) as srv:
        srv.wait_ready()
        robot, operator = clients(srv)
        holder = srv.app.state.holder
        wait_for(lambda: registry.promoted() == 1, what="v1 promoted")
        v2 = publish_head(model, registry, mark=mark(2))
        wait_for(lambda: holder.promotion_status()["canary"] is not None, what="canary started")
        assert robot.post("/v1/policy/pin", json={"version": 1}).status_code == 403  # operator only
        r = operator.post("/v1/policy/pin", json={"version": v2})
        assert r.status_code == 200 and r.json()["pinned"] == v2 and registry.pinned() == v2
        assert {act(robot, "r0", f"p{i}", 0)[0] for i in range(10)} == {v2}
        for i in range(10):  # labels while pinned never count for the canary
            episode(robot, operator, registry, "r0", f"q{i}", lambda v: "failure")
        assert holder.promotion_status()["canary"]["canary"]["failures"] == 0
        assert "paused" in holder.promotion_status()["canary"]["state"]
        assert operator.post("/v1/policy/pin", json={"version": 99}).status_code == 409
        robot.close()
        operator.close()
    with server_for(run_dir) as srv:  # the pin survives a restart
        assert srv.wait_ready() == v2
        robot, operator = clients(srv)
        assert operator.get("/v1/policy").json()["promotion"]["pinned"] == v2
        r = operator.delete("/v1/policy/pin")
        assert r.status_code == 200 and r.json()["pinned"] is None and registry.pinned() is None
        wait_for(lambda: srv.app.state.holder.policy.version == 1, what="promoted v1 serves again")
        wait_for(lambda: srv.app.state.holder.promotion_status()["canary"] is not None, what="canary resumed")
        assert {act(robot, "r0", f"u{i}", 0)[0] for i in range(20)} == {1, v2}  # the canary share again
        robot.close()
        operator.close()


def test_a_restart_resumes_the_canary_with_its_tallies(run):
    run_dir, model, registry = run
    with server_for(run_dir) as srv:
        srv.wait_ready()
        robot, operator = clients(srv)
        wait_for(lambda: registry.promoted() == 1, what="v1 promoted")
        v2 = publish_head(model, registry, mark=mark(2))
        wait_for(lambda: srv.app.state.holder.promotion_status()["canary"] is not None, what="canary started")
        for i in range(6):  # below min_episodes on at least one arm: undecided
            episode(robot, operator, registry, "r0", f"c{i}", lambda v: "failure" if v == v2 else "success")
        status = srv.app.state.holder.promotion_status()["canary"]
        counted = (status["canary"]["failures"], status["promoted"]["successes"])
        assert sum(counted) == 6 and not registry.is_refused(v2)
        wait_for(lambda: (registry.read_canary() or {}).get("canary", {}).get("failures") == counted[0],
                 what="the tallies saved")
        robot.close()
        operator.close()
    publish_head(model, registry, mark=mark(3))  # the learner moved on meanwhile: v2 is finished first
    with server_for(run_dir) as srv:  # as after a crash: the canary goes on where it was
        srv.wait_ready()
        wait_for(lambda: srv.app.state.holder.promotion_status()["canary"] is not None, what="canary resumed")
        status = srv.app.state.holder.promotion_status()["canary"]
        assert status["version"] == v2 and (status["canary"]["failures"], status["promoted"]["successes"]) == counted
