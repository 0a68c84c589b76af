"""The server's teleop channel against a real server (uvicorn in a thread, the tiny model): the
operator's endpoints (auth, clear 4xx on bad input), the command riding on the robot's /v1/act
reply, the robot's execution report, and the hand-back when the episode changes. The robot is an
HTTP client here; the real robot client is in tests/robot_client/test_robot_teleop.py."""

from __future__ import annotations

import json
import math
import time

import httpx
import numpy as np
import pytest

from bench.harness import ServerThread, publish_tiny
from deployment.config import DeploymentConfig
from deployment.server import ServerConfig
from protocol.codec import packb, unpackb
from protocol.images import encode_jpeg
from protocol.messages import ActRequest, ActResponse, TeleopAck

ROBOT, OPERATOR = "robot-token-api", "operator-token-api"
pytestmark = [pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("run")
    publish_tiny(run)
    config = DeploymentConfig(run_dir=str(run), server=ServerConfig(robot_token=ROBOT, operator_token=OPERATOR,
                                                                   teleop_lock_s=1.0))
    with ServerThread(config) as srv:
        srv.wait_ready(60)
        yield srv


@pytest.fixture
def clients(server):
    robot = httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {ROBOT}"}, timeout=30)
    operator = httpx.Client(base_url=server.url, headers={"authorization": f"Bearer {OPERATOR}"}, timeout=30)
    yield robot, operator
    robot.close()
    operator.close()


IMAGE = encode_jpeg(np.zeros((32, 32, 3), dtype=np.uint8))


def act(robot: httpx.Client, robot_id: str, episode_id: str, step: int, ack: TeleopAck | None = None) -> dict:
    req = ActRequest(request_id=f"{episode_id}-{step}", robot_id=robot_id, episode_id=episode_id, step=step,
                     t_capture=time.time(), instruction="reach the red block", images={"front": IMAGE},
                     state=[0.5, 0, 0.2, 0, 0, 0, 1], teleop_ack=ack)
    r = robot.post("/v1/act", content=packb(req.to_wire()), headers={"content-type": "application/msgpack"})
    assert r.status_code == 200, r.text
    wire = unpackb(r.content)
    ActResponse.model_validate(wire)
    return wire


def command(seq: int, translation=(1, 0, 0), **kw) -> dict:
    return {"seq": seq, "t_sent": time.time(), "translation": list(translation), **kw}


def test_take_over_drive_hand_back_and_the_reply_field(clients):
    robot, op = clients
    wire = act(robot, "arm1", "ep1", 0)
    assert "teleop" not in wire  # no operator: the reply older robot clients know, key for key

    assert op.post("/v1/robots/arm1/teleop/take_over").status_code == 200
    first = act(robot, "arm1", "ep1", 1)["teleop"]
    assert first["seq"] == -1 and first["translation"] == [0, 0, 0] and first["gripper"] is None  # none yet

    r = op.post("/v1/robots/arm1/teleop", json=command(10, (1, -0.5, 0), rotation=[0, 0, 1], gripper=0))
    assert r.status_code == 200 and r.json()["accepted"] is True
    assert op.post("/v1/robots/arm1/teleop", json=command(9, (0, 1, 0))).json()["accepted"] is False  # older seq
    time.sleep(0.05)
    got = act(robot, "arm1", "ep1", 2, ack=TeleopAck(seq=10, server_to_exec_ms=42.0))["teleop"]
    assert got["seq"] == 10 and got["translation"] == [1, -0.5, 0] and got["rotation"] == [0, 0, 1]
    assert got["gripper"] == 0 and got["age_s"] >= 0.04 and got["source"] == "page"

    view = next(v for v in op.get("/v1/robots").json() if v["robot_id"] == "arm1")
    assert view["teleop"]["executed_seq"] == 10 and view["teleop"]["server_to_exec_ms"] == 42.0
    assert view["teleop"]["seq"] == 10 and view["teleop"]["commands"] == 1

    assert op.post("/v1/robots/arm1/teleop/hand_back").status_code == 200
    assert "teleop" not in act(robot, "arm1", "ep1", 3)
    assert op.post("/v1/robots/arm1/teleop", json=command(11)).status_code == 409  # not taken over any more
    assert op.post("/v1/robots/arm1/teleop/hand_back").status_code == 200  # idempotent


def test_a_take_over_ends_with_its_episode(clients):
    robot, op = clients
    act(robot, "arm2", "epA", 0)
    assert op.post("/v1/robots/arm2/teleop/take_over").status_code == 200
    assert "teleop" in act(robot, "arm2", "epA", 1)
    assert "teleop" not in act(robot, "arm2", "epB", 0)  # a new episode never starts under an old command
    view = next(v for v in op.get("/v1/robots").json() if v["robot_id"] == "arm2")
    assert view["teleop"] is None


def test_bad_requests_are_clear_4xx(clients, server):
    robot, op = clients
    act(robot, "arm3", "ep1", 0)
    anon = httpx.Client(base_url=server.url, timeout=10)
    assert anon.post("/v1/robots/arm3/teleop/take_over").status_code == 401
    assert robot.post("/v1/robots/arm3/teleop/take_over").status_code == 403  # the robot token is not an operator
    r = op.post("/v1/robots/ghost/teleop/take_over")
    assert r.status_code == 404 and "unknown robot" in r.json()["detail"]
    assert op.post("/v1/robots/ghost/teleop", json=command(1)).status_code == 404
    assert op.post("/v1/robots/arm3/teleop", json=command(1)).status_code == 409  # not taken over

    # a robot between episodes (waiting for its label) cannot be taken over
    robot.post("/v1/robots/arm4/status", json={"state": "waiting_label", "episode_id": "ep9"})
    r = op.post("/v1/robots/arm4/teleop/take_over")
    assert r.status_code == 409 and "no episode running" in r.json()["detail"]

    assert op.post("/v1/robots/arm3/teleop/take_over").status_code == 200
    bad = {
        "nan": command(2, (math.nan, 0, 0)),
        "wrong length": command(3, (1, 0)),
        "out of range": command(4, (2, 0, 0)),
        "rotation length": command(5, rotation=[0, 0, 0, 1]),
        "gripper": command(6, gripper=1.5),
        "t_sent inf": {**command(7), "t_sent": math.inf},
        "negative seq": command(-1),
        "unknown key": {**command(8), "speed": 3},
        "not numbers": command(9, ("a", "b", "c")),
    }
    for what, body in bad.items():
        # Python's json writes NaN / Infinity (httpx refuses to), and the server's parser reads them
        r = op.post("/v1/robots/arm3/teleop", content=json.dumps(body), headers={"content-type": "application/json"})
        assert r.status_code == 422, (what, r.status_code, r.text)
    assert op.post("/v1/robots/arm3/teleop", json=command(10)).status_code == 200  # and a good one still works
    assert op.post("/v1/robots/bad..id/teleop/take_over").status_code in (404, 422)


def test_one_operator_holds_a_robot_at_a_time(clients, server):
    """alice takes over; bob's take-over, commands and hand-back are refused with alice's name until
    she hands back (or falls silent for teleop_lock_s, 1 s here); the page shows who holds it."""
    robot, op = clients
    alice, bob = {"x-operator": "alice"}, {"x-operator": "bob"}
    act(robot, "arm5", "ep5", 0)
    assert op.post("/v1/robots/arm5/teleop/take_over", headers=alice).status_code == 200
    view = next(v for v in op.get("/v1/robots").json() if v["robot_id"] == "arm5")
    assert view["teleop"]["operator"] == "alice"
    for r in (op.post("/v1/robots/arm5/teleop/take_over", headers=bob),
              op.post("/v1/robots/arm5/teleop", json=command(1), headers=bob),
              op.post("/v1/robots/arm5/teleop/hand_back", headers=bob)):
        assert r.status_code == 409 and "held by 'alice'" in r.json()["detail"], r.text
    assert op.post("/v1/robots/arm5/teleop", json=command(2), headers=alice).json()["accepted"] is True
    assert act(robot, "arm5", "ep5", 1)["teleop"]["seq"] == 2  # alice's command, not bob's
    assert op.post("/v1/robots/arm5/teleop/hand_back", headers=alice).status_code == 200
    assert op.post("/v1/robots/arm5/teleop/take_over", headers=bob).status_code == 200  # free again

    time.sleep(1.2)  # bob falls silent past the lock: alice may take over
    assert op.post("/v1/robots/arm5/teleop/take_over", headers=alice).status_code == 200
    view = next(v for v in op.get("/v1/robots").json() if v["robot_id"] == "arm5")
    assert view["teleop"]["operator"] == "alice" and view["teleop"]["commands"] == 0
    assert op.post("/v1/robots/arm5/teleop/take_over", headers={"x-operator": "-bad;name"}).status_code == 422
