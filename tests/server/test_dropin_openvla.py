"""OpenVLA's deploy.py REST convention against a real uvicorn vlaloop server on 127.0.0.1, driven the
way OpenVLA's README drives it: ``json_numpy.patch()`` then ``requests.post(url + "/act", json=...)``."""

from __future__ import annotations

import base64
import io
import json

import httpx
import json_numpy
import numpy as np
import pytest
import requests
import torch
from PIL import Image

from bench.harness import ServerThread, publish_tiny
from deployment.config import DeploymentConfig
from deployment.server import ServerConfig

torch.set_num_threads(1)
ROBOT, OPERATOR = "robot-key", "operator-key"
AUTH = {"Authorization": f"Bearer {ROBOT}"}
INSTRUCTION = "push the blue block to the left"


def _image(seed=0, h=224, w=224) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    publish_tiny(run_dir)
    config = DeploymentConfig(run_dir=str(run_dir), server=ServerConfig(robot_token=ROBOT, operator_token=OPERATOR))
    with ServerThread(config) as srv:
        srv.wait_ready()
        yield srv


@pytest.fixture
def patched_json():
    """json_numpy.patch() as OpenVLA's client does it — undone afterwards (it patches the json module)."""
    saved = (json.dumps, json.loads, json.dump, json.load)
    json_numpy.patch()
    yield
    json.dumps, json.loads, json.dump, json.load = saved


def _v1_act_first_action(srv, image: np.ndarray, state: list[float]) -> np.ndarray:
    """The same observation through /v1/act (PNG: lossless), first row of the chunk."""
    png = io.BytesIO()
    Image.fromarray(image).save(png, format="PNG")
    body = {"request_id": "x", "robot_id": "ref", "episode_id": "ref", "step": 0, "t_capture": 0.0,
            "instruction": INSTRUCTION, "images": {"front": base64.b64encode(png.getvalue()).decode()},
            "state": state}
    r = httpx.post(srv.url + "/v1/act", json=body, headers=AUTH)
    assert r.status_code == 200, r.text
    return np.asarray(r.json()["actions"][0])


def test_deploy_py_client_gets_one_action(served, patched_json):
    srv = served
    image = _image()
    # OpenVLA README: json_numpy.patch(); requests.post("http://0.0.0.0:8000/act", json={...}).json()
    action = requests.post(f"{srv.url}/act", json={"image": image, "instruction": INSTRUCTION},
                           headers=AUTH).json()
    assert isinstance(action, np.ndarray) and action.shape == (7,) and action.dtype == np.float64
    # the first action of the chunk /v1/act gives for the same frame (no state sent: the mean demo state)
    np.testing.assert_allclose(action, _v1_act_first_action(srv, image, [0.0] * 7), atol=1e-5)

    state = [0.5, 0.1, 0.2, 0.0, 0.0, 0.3, 1.0]
    r = requests.post(f"{srv.url}/act", json={"image": image, "instruction": INSTRUCTION, "state": np.array(state),
                                              "unnorm_key": "vlaloop"}, headers=AUTH)
    assert r.headers["X-Vlaloop-Policy-Version"] == "1" and r.headers["X-Vlaloop-Command"] == "run"
    np.testing.assert_allclose(r.json(), _v1_act_first_action(srv, image, state), atol=1e-5)

    # nested lists (no json_numpy on the client), CHW layout, and OpenVLA's "encoded" double encoding
    plain = httpx.post(f"{srv.url}/act", content=json_numpy.dumps({"image": image.tolist(),
                                                                   "instruction": INSTRUCTION}),
                       headers={**AUTH, "content-type": "application/json"})
    np.testing.assert_allclose(json_numpy.loads(plain.text), action, atol=1e-6)
    chw = requests.post(f"{srv.url}/act", json={"image": np.moveaxis(image, -1, 0), "instruction": INSTRUCTION},
                        headers=AUTH).json()
    np.testing.assert_allclose(chw, action, atol=1e-6)
    encoded = requests.post(f"{srv.url}/act", headers=AUTH, json={
        "encoded": json_numpy.dumps({"image": image, "instruction": INSTRUCTION})})
    np.testing.assert_allclose(json_numpy.loads(encoded.json()), action, atol=1e-6)


def _refused(srv, payload: dict, status: int = 422) -> dict:
    r = requests.post(f"{srv.url}/act", json=payload, headers=AUTH)
    assert r.status_code == status, (payload.keys(), r.status_code, r.text)
    return r.json()


def test_bad_requests_get_4xx_naming_the_field(served, patched_json):
    srv = served
    good = {"image": _image(), "instruction": INSTRUCTION}
    assert _refused(srv, {"image": _image()}) == {"detail": "instruction: field required", "field": "instruction"}
    assert _refused(srv, {"instruction": INSTRUCTION})["field"] == "image"
    unknown = _refused(srv, {**good, "proprio": [0.0] * 7})
    assert unknown["field"] == "proprio" and "unknown field" in unknown["detail"]
    wrong_key = _refused(srv, {**good, "unnorm_key": "bridge_orig"})
    assert wrong_key["field"] == "unnorm_key" and "'bridge_orig' is not known" in wrong_key["detail"]
    assert "uint8" in _refused(srv, {**good, "image": _image().astype(np.float32)})["detail"]
    assert "HxWx3" in _refused(srv, {**good, "image": np.zeros((64, 64), np.uint8)})["detail"]
    assert "0..255" in _refused(srv, {**good, "image": [[[300, 0, 0]]]})["detail"]
    nan = _refused(srv, {**good, "state": np.array([0.5, np.nan, 0.2, 0, 0, 0, 1.0])})
    assert nan == {"detail": "state: state contains NaN or inf", "field": "state"}
    assert "needs 7" in _refused(srv, {**good, "state": [0.0] * 3})["detail"]
    assert _refused(srv, {**good, "mode": "explore"})["field"] == "mode"
    assert _refused(srv, {**good, "robot_id": "no spaces allowed"})["field"] == "robot_id"
    # an object array, json_numpy-encoded: refused from its dtype, never built (no unpickling)
    objects = np.empty((4, 4, 3), dtype=object)
    objects[:] = 0
    obj = _refused(srv, {**good, "image": objects})
    assert obj == {"detail": "image: array dtype '|O' refused: only bool/int/uint/float arrays are accepted",
                   "field": "image"}
    bad_size = {"__numpy__": base64.b64encode(b"\0" * 10).decode(), "dtype": "|u1", "shape": [2, 2, 3]}
    assert "10 bytes" in _refused(srv, {**good, "image": bad_size})["detail"]
    r = httpx.post(f"{srv.url}/act", content=b"{not json", headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 400 and r.json()["field"] == "body"
    assert httpx.post(f"{srv.url}/act", json={"instruction": INSTRUCTION}).status_code == 401
    assert httpx.post(f"{srv.url}/act", json={"instruction": INSTRUCTION},
                      headers={"Authorization": f"Bearer {OPERATOR}"}).status_code == 403
    assert "vlaloop_errors_total{kind=\"invalid_field\"}" in httpx.get(srv.url + "/metrics").text


def test_extras_reach_the_operator_page(served, patched_json):
    srv = served
    for step in range(2):
        r = requests.post(f"{srv.url}/act", headers=AUTH, json={
            "image": _image(step), "instruction": INSTRUCTION, "robot_id": "widowx-2", "episode_id": "e-11",
            "step": step})
        assert r.status_code == 200 and r.headers["X-Vlaloop-Robot-Id"] == "widowx-2"
    requests.post(f"{srv.url}/act", headers=AUTH, json={"image": _image(), "instruction": INSTRUCTION})
    operator = {"authorization": f"Bearer {OPERATOR}"}
    robots = {r["robot_id"]: r for r in httpx.get(srv.url + "/v1/robots", headers=operator).json()}
    assert robots["widowx-2"]["episode_id"] == "e-11" and robots["widowx-2"]["step"] == 1
    assert robots["widowx-2"]["instruction"] == INSTRUCTION and robots["widowx-2"]["policy_version"] == 1
    assert "openvla-127-0-0-1" in robots  # no robot_id: named by its address
    httpx.post(srv.url + "/v1/robots/widowx-2/command", json={"command": "end_episode"}, headers=operator)
    r = requests.post(f"{srv.url}/act", headers=AUTH, json={
        "image": _image(), "instruction": INSTRUCTION, "robot_id": "widowx-2", "episode_id": "e-11"})
    assert r.headers["X-Vlaloop-Command"] == "end_episode"


def test_no_policy_yet_is_503_on_both_protocols(tmp_path):
    from openpi_client import websocket_client_policy

    config = DeploymentConfig(run_dir=str(tmp_path), server=ServerConfig())
    with ServerThread(config) as srv:
        r = httpx.post(f"{srv.url}/act", json={"image": [[[0, 0, 0]]], "instruction": "x"})
        assert r.status_code == 503 and "no policy loaded yet" in r.json()["detail"]
        client = websocket_client_policy.WebsocketClientPolicy("127.0.0.1", srv.port)
        assert client.get_server_metadata()["policy_version"] is None
        with pytest.raises(RuntimeError, match="503 no policy loaded yet"):
            client.infer({"prompt": "x"})
        client._ws.close()
