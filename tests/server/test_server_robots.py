"""The robot/operator channel against a real server: commands ride on /v1/act responses, label
long-poll (operator label, timeout -> 204, auto_label), awaiting list, relabel inbox, live state, frames."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import numpy as np
import pytest
import torch

from bench.harness import ServerThread, publish_tiny
from deployment.config import DeploymentConfig
from deployment.server import ServerConfig
from protocol.codec import packb, unpackb
from protocol.images import decode_jpeg, encode_jpeg
from protocol.messages import ActRequest
from server.robots import MAX_GONE, AwaitingIn, RobotRegistry, StatusIn

torch.set_num_threads(1)
ROBOT, OPERATOR = "robot-secret", "operator-secret"
IMAGE = np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("run")
    publish_tiny(path)
    return path


def _server(run_dir, **server):
    cfg = ServerConfig(robot_token=ROBOT, operator_token=OPERATOR, **server)
    return ServerThread(DeploymentConfig(run_dir=str(run_dir), server=cfg))


@pytest.fixture(scope="module")
def served(run_dir):
    with _server(run_dir) as srv:
        srv.wait_ready()
        robot = httpx.Client(base_url=srv.url, headers={"authorization": f"Bearer {ROBOT}"}, timeout=30)
        operator = httpx.Client(base_url=srv.url, headers={"authorization": f"Bearer {OPERATOR}"}, timeout=30)
        yield srv, robot, operator
        robot.close()
        operator.close()


def act(robot: httpx.Client, robot_id: str, episode_id: str, step: int, image=IMAGE) -> dict:
    req = ActRequest(request_id=f"{episode_id}-{step}", robot_id=robot_id, episode_id=episode_id, step=step,
                     t_capture=time.time(), instruction="push the blue block to the left",
                     images={"front": encode_jpeg(image)}, state=[0.5, 0, 0.2, 0, 0, 0, 1])
    r = robot.post("/v1/act", content=packb(req.to_wire()), headers={"content-type": "application/msgpack"})
    assert r.status_code == 200, r.text
    return unpackb(r.content)


def test_pause_persists_until_resume_and_end_episode_is_delivered_once(served):
    _, robot, operator = served
    assert act(robot, "cmd0", "e1", 0)["command"] == "run"
    assert operator.post("/v1/robots/cmd0/command", json={"command": "pause"}).json()["paused"]
    assert [act(robot, "cmd0", "e1", s)["command"] for s in (1, 2, 3)] == ["pause"] * 3
    operator.post("/v1/robots/cmd0/command", json={"command": "resume"})
    assert act(robot, "cmd0", "e1", 4)["command"] == "run"
    view = operator.post("/v1/robots/cmd0/command", json={"command": "end_episode"}).json()
    assert view["pending_command"] == "end_episode"
    assert [act(robot, "cmd0", "e1", s)["command"] for s in (5, 6)] == ["end_episode", "run"]
    # end_episode pressed for an episode that is already over never ends the next one
    operator.post("/v1/robots/cmd0/command", json={"command": "end_episode"})
    assert act(robot, "cmd0", "e2", 0)["command"] == "run"
    # a paused robot gets end_episode once, then stays paused
    operator.post("/v1/robots/cmd0/command", json={"command": "pause"})
    operator.post("/v1/robots/cmd0/command", json={"command": "end_episode"})
    assert [act(robot, "cmd0", "e2", s)["command"] for s in (1, 2)] == ["end_episode", "pause"]
    operator.post("/v1/robots/cmd0/command", json={"command": "resume"})
    r = operator.post("/v1/robots/ghost/command", json={"command": "pause"})
    assert r.status_code == 404 and "ghost" in r.json()["detail"]
    r = operator.post("/v1/robots/cmd0/command", json={"command": "explode"})
    assert r.status_code == 422 and r.json()["field"] == "command"


def _wait_label_in_thread(robot: httpx.Client, robot_id: str, episode_id: str, timeout_s: float):
    result = {}

    def run():
        t0 = time.monotonic()
        r = robot.get(f"/v1/robots/{robot_id}/label", params={"episode_id": episode_id, "timeout_s": timeout_s})
        result.update(status=r.status_code, body=r.json() if r.status_code == 200 else None,
                      waited=time.monotonic() - t0)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, result


def test_label_long_poll_gets_the_operator_label(served):
    _, robot, operator = served
    act(robot, "lab0", "ep7", 0)
    r = robot.post("/v1/robots/lab0/episodes/ep7/awaiting", json={"auto_outcome": "success", "n_steps": 12})
    assert r.status_code == 200 and r.json()["label"] is None  # auto_label is off: the operator decides
    awaiting = operator.get("/v1/labels/awaiting").json()
    assert [(a["robot_id"], a["episode_id"], a["n_steps"]) for a in awaiting] == [("lab0", "ep7", 12)]
    assert operator.get("/v1/robots").json()[-1]["awaiting_label"] == ["ep7"]
    thread, result = _wait_label_in_thread(robot, "lab0", "ep7", timeout_s=20)
    time.sleep(0.3)
    assert thread.is_alive()  # really waiting
    r = operator.post("/v1/robots/lab0/label", json={"episode_id": "ep7", "outcome": "failure"})
    assert r.status_code == 200
    thread.join(10)
    assert result["status"] == 200 and result["waited"] < 5
    assert result["body"] == {"episode_id": "ep7", "outcome": "failure", "label_source": "operator",
                              "reward_model_p": None}
    assert operator.get("/v1/labels/awaiting").json() == []
    # asking again (a retry after a dropped connection) gets the same label at once
    again = robot.get("/v1/robots/lab0/label", params={"episode_id": "ep7", "timeout_s": 5})
    assert again.status_code == 200 and again.json()["outcome"] == "failure"
    # a delivered label can only be corrected through the operator page's relabel (learner inbox)
    r = operator.post("/v1/robots/lab0/label", json={"episode_id": "ep7", "outcome": "success"})
    assert r.status_code == 409 and "/v1/episodes/lab0/ep7/relabel" in r.json()["detail"]


def test_awaiting_episode_leaves_the_list_when_the_robot_moves_on(served):
    _, robot, operator = served
    robot.post("/v1/robots/lab3/episodes/ep8/awaiting", json={"n_steps": 3})
    assert ("lab3", "ep8") in {(a["robot_id"], a["episode_id"]) for a in operator.get("/v1/labels/awaiting").json()}
    act(robot, "lab3", "ep9", 0)  # it gave up waiting (label timeout) and started the next episode
    assert "lab3" not in {a["robot_id"] for a in operator.get("/v1/labels/awaiting").json()}


def test_label_wait_times_out_with_204(served):
    _, robot, _ = served
    t0 = time.monotonic()
    r = robot.get("/v1/robots/lab1/label", params={"episode_id": "ep1", "timeout_s": 0.3})
    assert r.status_code == 204 and 0.25 < time.monotonic() - t0 < 5
    r = robot.get("/v1/robots/lab1/label", params={"episode_id": "../x", "timeout_s": 0.1})
    assert r.status_code == 422 and r.json()["field"] == "episode_id"


def test_label_given_before_the_robot_waits_and_discard(served):
    _, robot, operator = served
    operator.post("/v1/robots/lab2/label", json={"episode_id": "ep3", "outcome": "discard"})
    r = robot.get("/v1/robots/lab2/label", params={"episode_id": "ep3", "timeout_s": 5})
    assert r.status_code == 200 and r.json()["outcome"] == "discard"


def test_auto_label_answers_at_once(run_dir):
    with _server(run_dir, auto_label=True) as srv:
        srv.wait_ready()
        with httpx.Client(base_url=srv.url, headers={"authorization": f"Bearer {ROBOT}"}) as robot:
            r = robot.post("/v1/robots/auto0/episodes/ep1/awaiting", json={"auto_outcome": "success", "n_steps": 3})
            assert r.json()["label"]["label_source"] == "auto"
            t0 = time.monotonic()
            r = robot.get("/v1/robots/auto0/label", params={"episode_id": "ep1", "timeout_s": 10})
            assert r.status_code == 200 and time.monotonic() - t0 < 2
            assert r.json() == {"episode_id": "ep1", "outcome": "success", "label_source": "auto",
                                "reward_model_p": None}  # reward model off
            # no auto outcome: the operator must decide, even in auto mode
            robot.post("/v1/robots/auto0/episodes/ep2/awaiting", json={"auto_outcome": None, "n_steps": 3})
            r = robot.get("/v1/robots/auto0/label", params={"episode_id": "ep2", "timeout_s": 0.2})
            assert r.status_code == 204


def test_live_state_status_and_latest_frame(served):
    _, robot, operator = served
    frame = np.zeros((96, 96, 3), np.uint8)
    frame[:, :48] = 255
    act(robot, "live0", "ep1", 4, image=frame)
    r = robot.post("/v1/robots/live0/status", json={"state": "waiting_label", "episode_id": "ep1", "step": 5,
                                                    "task": "push", "loop_hz": 9.5, "detail": "waiting"})
    assert r.status_code == 200
    assert robot.post("/v1/robots/live0/status", json={"state": "dancing"}).json()["field"] == "state"
    view = next(v for v in operator.get("/v1/robots").json() if v["robot_id"] == "live0")
    assert view["state"] == "waiting_label" and view["step"] == 5 and view["task"] == "push"
    assert view["loop_hz"] == 9.5 and view["policy_version"] == 1 and view["cameras"] == ["front"]
    assert view["instruction"] == "push the blue block to the left" and not view["stale"]
    assert time.time() - view["last_seen"] < 5
    r = operator.get("/v1/robots/live0/frames/front.jpg")
    assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
    got = decode_jpeg(r.content).astype(int)
    assert got.shape == (96, 96, 3) and got[:, :40].mean() > 240 and got[:, 56:].mean() < 15
    assert operator.get("/v1/robots/live0/frames/wrist.jpg").status_code == 404
    assert operator.get("/v1/robots/nobody/frames/front.jpg").status_code == 404


def test_registry_publishes_events_to_subscribers():
    async def scenario():
        reg = RobotRegistry()
        q = reg.subscribe()
        reg.observe_act("r0", "e0", 0, "reach", {"front": b"jpeg"}, 3)
        reg.update_status("r0", StatusIn(state="waiting_label", episode_id="e0"))
        reg.mark_awaiting("r0", "e0", AwaitingIn(auto_outcome="failure", n_steps=4))
        waiter = asyncio.create_task(reg.wait_label("r0", "e0", 5))
        await asyncio.sleep(0.01)
        reg.submit_label("r0", "e0", "success")
        label = await waiter
        events = [q.get_nowait()["type"] for _ in range(q.qsize())]
        reg.unsubscribe(q)
        return label, events

    label, events = asyncio.run(scenario())
    assert label.outcome == "success" and label.label_source == "operator"
    assert events == ["act", "status", "awaiting", "label"]


def test_channel_bad_input_is_a_4xx_naming_the_field(served):
    _, robot, operator = served
    r = robot.post("/v1/robots/r9/status", content=b"{bad", headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["field"] == "body"
    for body, field in (({"state": "running", "loop_hz": -1}, "loop_hz"), ({"state": "running", "x": 1}, "x"),
                        ({"state": "running", "episode_id": "../x"}, "episode_id")):
        r = robot.post("/v1/robots/r9/status", json=body)
        assert r.status_code == 422 and r.json()["field"] == field, r.text
    r = robot.get("/v1/robots/r9/label", params={"episode_id": "e", "timeout_s": "nan"})
    assert r.status_code == 422 and r.json()["field"] == "timeout_s"
    r = operator.post("/v1/robots/r9/label", json={"episode_id": "e", "outcome": "maybe"})
    assert r.status_code == 422 and r.json()["field"] == "outcome"
    r = robot.post("/v1/robots/r9/episodes/e/awaiting", json={"auto_outcome": "great"})
    assert r.status_code == 422 and r.json()["field"] == "auto_outcome"


# ---- bounded per-robot state, whatever ids clients make up

def test_a_robot_not_heard_from_is_forgotten_and_listed_as_gone():
    reg = RobotRegistry(forget_s=30.0)
    forgotten = []
    reg.forget_listeners.append(forgotten.append)
    reg.observe_act("old", "e0", 0, "reach", {"front": b"jpeg" * 1000}, 1)
    reg.queue_command("old", "pause")
    reg.mark_awaiting("old", "e0", AwaitingIn(n_steps=3))
    reg.sweep(time.time() + 31.0)  # 31 s later
    assert "old" not in reg.robots and forgotten == ["old"] and not reg.awaiting
    (view,) = reg.views()
    assert view.robot_id == "old" and view.state == "gone" and view.gone and view.cameras == [] and view.paused
    reg.observe_act("old", "e1", 0, "reach", {"front": b"jpeg"}, 1)  # it comes back: still paused
    assert reg.command_for("old", "e1") == "pause" and not reg.views()[0].gone and "old" not in reg.gone


def test_no_more_than_max_robots_are_tracked_and_one_that_holds_something_is_never_evicted():
    reg = RobotRegistry(max_robots=4)
    reg.observe_act("paused", "e0", 0, "reach", {"front": b"jpeg"}, 1)
    reg.queue_command("paused", "pause")
    for i in range(10_000):
        reg.observe_act(f"made-up-{i}", f"e{i}", 0, "reach", {"front": b"jpeg"}, 1)
    assert len(reg.robots) == 4 and "paused" in reg.robots and "made-up-9999" in reg.robots
    assert len(reg.gone) <= MAX_GONE
    assert reg.command_for("paused", "e0") == "pause"


def test_label_long_polls_leave_nothing_behind():
    async def scenario():
        reg = RobotRegistry()
        await asyncio.gather(*(reg.wait_label("r0", f"ep{i}", 0.0) for i in range(2000)))
        assert not reg._label_events and not reg._label_waiters
        # Two waiters on one episode: one gives up, the other still gets the label.
        quick = asyncio.create_task(reg.wait_label("r0", "e", 0.01))
        patient = asyncio.create_task(reg.wait_label("r0", "e", 5))
        assert await quick is None
        reg.submit_label("r0", "e", "success")
        assert (await patient).outcome == "success"
        assert not reg._label_events and not reg._label_waiters

    asyncio.run(scenario())
