"""openpi's own client (``openpi-client``: WebsocketClientPolicy, ActionChunkBroker) against a real
uvicorn vlaloop server on 127.0.0.1: metadata frame, chunks, bad input, auth, extras, hot swap."""

from __future__ import annotations

import re
import time

import httpx
import msgpack
import numpy as np
import pytest
import torch
import websockets.exceptions
import websockets.sync.client
from openpi_client import action_chunk_broker, msgpack_numpy, websocket_client_policy

from bench.harness import ServerThread, publish_head, publish_tiny
from deployment.config import DeploymentConfig, load_config
from deployment.dropin import OpenpiKeys
from deployment.server import ServerConfig
from server.decode import InputError
from server.openpi_ws import lookup, to_observation, unpack_observation

torch.set_num_threads(1)
ROBOT, OPERATOR = "robot-key", "operator-key"
IMAGE_KEY, STATE_KEY = "observation/exterior_image_1_left", "observation/state"


def _obs(seed: int = 0, **extra) -> dict:
    rng = np.random.default_rng(seed)
    return {IMAGE_KEY: rng.integers(0, 255, (224, 224, 3), dtype=np.uint8),
            STATE_KEY: np.array([0.5, 0.0, 0.2, 0.0, 0.0, 0.0, 1.0]),
            "prompt": "reach the red block", **extra}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    model, registry, _ = publish_tiny(run_dir)
    config = DeploymentConfig(run_dir=str(run_dir), server=ServerConfig(robot_token=ROBOT, operator_token=OPERATOR))
    with ServerThread(config) as srv:
        srv.wait_ready()
        client = websocket_client_policy.WebsocketClientPolicy("127.0.0.1", srv.port, api_key=ROBOT)
        yield srv, client, model, registry
        client._ws.close()  # openpi's client has no close(); an open socket would hold up the shutdown


def _requests_counted(srv) -> float:
    text = httpx.get(srv.url + "/metrics").text
    m = re.search(r'^vlaloop_act_requests_total\{encoding="openpi"\} (\S+)', text, re.M)
    return float(m.group(1)) if m else 0.0


def test_metadata_chunks_and_the_chunk_broker(served):
    srv, client, _, _ = served
    meta = client.get_server_metadata()
    assert meta["server"] == "vlaloop" and meta["policy_version"] == 1
    assert meta["action_horizon"] == 4 and meta["action_dim"] == 7 and meta["cameras"] == ["front"]
    assert meta["openpi_keys"]["cameras"] == {"front": IMAGE_KEY} and meta["policy"]["version"] == 1

    out = client.infer(_obs())
    actions = out["actions"]
    assert isinstance(actions, np.ndarray) and actions.shape == (4, 7) and actions.dtype == np.float32
    assert np.isfinite(actions).all() and out["vlaloop/policy_version"] == 1
    assert out["vlaloop/command"] == "run" and np.isfinite(out["vlaloop/log_prob"])
    t = out["server_timing"]
    assert 0 < t["infer_ms"] <= t["total_ms"] and "prev_total_ms" not in t  # first step of this connection
    assert client.infer(_obs())["server_timing"]["prev_total_ms"] > 0  # openpi's field, from step 2 on

    # Same observation, greedy: a chunk the broker hands out one row per call, re-querying after 4.
    before = _requests_counted(srv)
    broker = action_chunk_broker.ActionChunkBroker(client, action_horizon=4)
    rows = [broker.infer(_obs())["actions"] for _ in range(5)]
    assert _requests_counted(srv) - before == 2
    np.testing.assert_allclose(np.stack(rows[:4]), actions, atol=1e-6)
    np.testing.assert_allclose(rows[4], actions[0], atol=1e-6)
    # Other image sizes and CHW layout give the same answer path (the policy resizes).
    chw = client.infer({**_obs(), IMAGE_KEY: np.moveaxis(_obs()[IMAGE_KEY], -1, 0)})["actions"]
    np.testing.assert_allclose(chw, actions, atol=1e-6)
    assert client.infer({**_obs(), IMAGE_KEY: np.zeros((48, 64, 3), np.uint8)})["actions"].shape == (4, 7)


def _error(client, obs) -> str:
    with pytest.raises(RuntimeError, match="Error in inference server") as info:
        client.infer(obs)
    return str(info.value)


def test_bad_observations_are_refused_by_name_and_the_connection_survives(served):
    srv, client, _, _ = served
    no_image = {k: v for k, v in _obs().items() if k != IMAGE_KEY}
    assert f"422 {IMAGE_KEY}: missing" in _error(client, no_image)
    assert "422 prompt: missing" in _error(client, {k: v for k, v in _obs().items() if k != "prompt"})
    nan_state = _obs(**{STATE_KEY: np.array([0.5, np.nan, 0.2, 0, 0, 0, 1.0])})
    assert f"422 {STATE_KEY}: state contains NaN" in _error(client, nan_state)
    assert "needs 7" in _error(client, _obs(**{STATE_KEY: np.zeros(6)}))
    float_image = _obs(**{IMAGE_KEY: np.zeros((96, 96, 3), np.float32)})
    assert f"422 {IMAGE_KEY}: image must be uint8" in _error(client, float_image)
    assert "must be HxWx3" in _error(client, _obs(**{IMAGE_KEY: np.zeros((96, 96), np.uint8)}))
    assert "422 vlaloop/episode: unknown vlaloop key" in _error(client, _obs(**{"vlaloop/episode": "e1"}))
    assert "vlaloop/step: must be a non-negative int" in _error(client, _obs(**{"vlaloop/step": -1}))
    # Keys the mapping does not use are ignored (labs send more than a policy needs).
    assert client.infer(_obs(**{"observation/wrist_image_left": np.zeros((8, 8, 3), np.uint8)}))["actions"].shape == (4, 7)

    # Frames openpi's packer would never produce: an object array, a short buffer, text, garbage.
    uri = f"ws://127.0.0.1:{srv.port}"
    with websockets.sync.client.connect(uri, additional_headers={"Authorization": f"Api-Key {ROBOT}"}) as ws:
        ws.recv()  # metadata
        obs = {k: v for k, v in _obs().items() if k != STATE_KEY}
        state_obj = {b"__ndarray__": True, b"data": b"\x80\x04" + b"x" * 54, b"dtype": "|O", b"shape": [7]}
        ws.send(msgpack_numpy.packb({**obs, STATE_KEY: state_obj}))
        assert ws.recv() == f"422 {STATE_KEY}: array dtype '|O' refused: only bool/int/uint/float arrays are accepted"
        short = {b"__ndarray__": True, b"data": b"\0" * 8, b"dtype": "<f8", b"shape": [7]}
        ws.send(msgpack_numpy.packb({**obs, STATE_KEY: short}))
        assert "array data has 8 bytes" in ws.recv()
        ws.send("hello")
        assert ws.recv().startswith("400 observation: send msgpack-numpy in a binary frame")
        ws.send(b"\xc1\xc1")
        assert ws.recv().startswith("400 observation: malformed msgpack")
        ws.send(msgpack_numpy.packb([1, 2]))
        assert ws.recv().startswith("400 observation: must be a dict")
        ws.send(msgpack_numpy.packb(_obs()))  # still answering
        assert msgpack_numpy.unpackb(ws.recv())["actions"].shape == (4, 7)
    assert client.infer(_obs())["actions"].shape == (4, 7)
    assert 'vlaloop_errors_total{kind="invalid_field"}' in httpx.get(srv.url + "/metrics").text


def test_auth_and_the_operator_page_on_the_same_root(served):
    srv, _, _, _ = served
    with pytest.raises(websockets.exceptions.InvalidStatus) as info:
        websocket_client_policy.WebsocketClientPolicy("127.0.0.1", srv.port, api_key="wrong")
    assert info.value.response.status_code == 403
    with pytest.raises(websockets.exceptions.InvalidStatus):
        websocket_client_policy.WebsocketClientPolicy("127.0.0.1", srv.port)  # no key at all
    with pytest.raises(websockets.exceptions.InvalidStatus):  # the operator's token is not a robot key
        websocket_client_policy.WebsocketClientPolicy("127.0.0.1", srv.port, api_key=OPERATOR)
    with websockets.sync.client.connect(f"ws://127.0.0.1:{srv.port}",
                                        additional_headers={"Authorization": f"Bearer {ROBOT}"}) as bearer:
        assert msgpack_numpy.unpackb(bearer.recv())["server"] == "vlaloop"
    page = httpx.get(srv.url + "/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert httpx.get(srv.url + "/healthz").json() == {"ok": True}


def test_extras_reach_the_operator_page(served):
    srv, client, _, _ = served
    for step in range(3):
        client.infer(_obs(**{"vlaloop/robot_id": "lab-arm-1", "vlaloop/episode_id": "ep-7", "vlaloop/step": np.int64(step)}))
    operator = {"authorization": f"Bearer {OPERATOR}"}
    robots = {r["robot_id"]: r for r in httpx.get(srv.url + "/v1/robots", headers=operator).json()}
    arm = robots["lab-arm-1"]
    assert arm["episode_id"] == "ep-7" and arm["step"] == 2 and arm["policy_version"] == 1
    assert arm["instruction"] == "reach the red block" and arm["cameras"] == ["front"]
    frame = httpx.get(srv.url + "/v1/robots/lab-arm-1/frames/front.jpg", headers=operator)
    assert frame.status_code == 200 and frame.content[:2] == b"\xff\xd8"
    # a client without extras shows up under its connection's address
    assert any(r.startswith("openpi-127-0-0-1-") for r in robots)
    # the operator's pause reaches an openpi client in the response extras
    httpx.post(srv.url + "/v1/robots/lab-arm-1/command", json={"command": "pause"}, headers=operator)
    out = client.infer(_obs(**{"vlaloop/robot_id": "lab-arm-1", "vlaloop/episode_id": "ep-7"}))
    assert out["vlaloop/command"] == "pause"


def test_mapping_nested_keys_and_unit_checks():
    assert lookup({"images": {"cam_high": 1}}, "images/cam_high") == 1
    assert lookup({"observation/state": 2}, "observation/state") == 2
    keys = OpenpiKeys(cameras={"front": "images/cam_high"}, state=["joints", "gripper"], instruction="task")
    frame = msgpack_numpy.packb({"images": {"cam_high": np.zeros((3, 32, 40), np.uint8)},
                                 "joints": np.zeros(6, np.float32), "gripper": np.float64(1.0), "task": "pick"})
    images, state, instruction, extras = to_observation(unpack_observation(frame), keys, ["front"], 7, 4096)
    assert images["front"].shape == (32, 40, 3) and state.tolist() == [0] * 6 + [1] and instruction == "pick"
    assert extras == {"robot_id": None, "episode_id": None, "step": None, "mode": "greedy"}
    for dtype in ("|O", "|V8", "<U4", "|S4", "<M8[s]", "<c8"):
        bad = msgpack.packb({"joints": {b"__ndarray__": True, b"data": b"", b"dtype": dtype, b"shape": [0]},
                             "gripper": 1.0, "task": "x", "images": {"cam_high": np.zeros((8, 8, 3), np.uint8)}},
                            default=msgpack_numpy.pack_array)
        with pytest.raises(InputError, match="refused"):
            to_observation(unpack_observation(bad), keys, ["front"], 7, 4096)


def test_mapping_from_the_deployment_config():
    config = load_config(environ={"VLALOOP_SERVER__DROPIN__OPENPI__INSTRUCTION": "task",
                                  "VLALOOP_SERVER__DROPIN__OPENPI__CAMERAS": "{front: observation/image}"})
    keys = config.server.dropin.openpi
    assert keys.instruction == "task" and keys.cameras == {"front": "observation/image"}
    assert keys.state == ["observation/state"]


def test_hot_swap_is_visible_through_openpi_client(served):
    srv, client, model, registry = served
    v2 = publish_head(model, registry, mark=0.25)
    deadline = time.monotonic() + 20
    while True:
        out = client.infer(_obs())
        if out["vlaloop/policy_version"] == v2:
            break
        assert time.monotonic() < deadline, "swap not visible"
        time.sleep(0.05)
    np.testing.assert_allclose(out["actions"], 0.25, atol=1e-5)  # the stamped head ran
    fresh = websocket_client_policy.WebsocketClientPolicy("127.0.0.1", srv.port, api_key=ROBOT)
    assert fresh.get_server_metadata()["policy_version"] == v2
    fresh._ws.close()
