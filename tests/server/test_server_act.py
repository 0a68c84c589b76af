"""/v1/act against a real uvicorn server on 127.0.0.1: encodings, auth, bad input, health, metrics, CLI."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import msgpack
import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from bench.harness import ServerThread, publish_tiny
from deployment.config import DeploymentConfig
from deployment.server import ServerConfig
from protocol.codec import packb, unpackb
from protocol.images import encode_jpeg
from protocol.messages import ActRequest
from server.auth import UnsafeBindError, check_bind_allowed
from vlaloop.cli import main as vlaloop_main

torch.set_num_threads(1)
ROBOT, OPERATOR = "robot-secret", "operator-secret"
MSGPACK = {"content-type": "application/msgpack"}
REPO = Path(__file__).resolve().parents[2]


def _image(h=96, w=96, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)


def _request(**kw) -> dict:
    fields = dict(request_id="r1", robot_id="rob0", episode_id="ep0", step=0, t_capture=time.time(),
                  instruction="reach the red block", images={"front": encode_jpeg(_image())},
                  state=[0.5, 0.0, 0.2, 0.0, 0.0, 0.0, 1.0])
    fields.update(kw)
    return ActRequest(**fields).to_wire()


def _json_body(wire: dict) -> dict:
    out = dict(wire)
    out["images"] = {k: base64.b64encode(v).decode() for k, v in wire["images"].items()}
    return out


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    publish_tiny(run_dir)
    config = DeploymentConfig(run_dir=str(run_dir), server=ServerConfig(
        robot_token=ROBOT, operator_token=OPERATOR, max_body_bytes=256 * 1024))
    with ServerThread(config) as srv:
        srv.wait_ready()
        with httpx.Client(base_url=srv.url, headers={"authorization": f"Bearer {ROBOT}"}, timeout=30) as client:
            yield srv, client


def test_msgpack_and_json_give_the_same_answer(served):
    _, client = served
    wire = _request()
    r = client.post("/v1/act", content=packb(wire), headers=MSGPACK)
    assert r.status_code == 200 and r.headers["content-type"] == "application/msgpack"
    packed = unpackb(r.content)
    r = client.post("/v1/act", json=_json_body(wire))
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    plain = r.json()
    for resp in (packed, plain):
        actions = np.asarray(resp["actions"])
        assert actions.shape == (4, 7) and np.isfinite(actions).all()
        assert resp["request_id"] == "r1" and resp["policy_version"] == 1 and resp["command"] == "run"
        assert np.isfinite(resp["log_prob"]) and np.isfinite(resp["value"])
        t = resp["timing"]
        assert 0 < t["infer_ms"] <= t["total_ms"] and t["decode_ms"] > 0 and t["queue_ms"] >= 0
    np.testing.assert_allclose(packed["actions"], plain["actions"], atol=1e-6)  # greedy: same obs, same chunk
    assert packed["log_prob"] == pytest.approx(plain["log_prob"], abs=1e-4)


def test_sample_mode_and_images_of_other_sizes(served):
    _, client = served
    greedy = unpackb(client.post("/v1/act", content=packb(_request()), headers=MSGPACK).content)
    samples = [unpackb(client.post("/v1/act", content=packb(_request(mode="sample")), headers=MSGPACK).content)
               for _ in range(2)]
    assert not np.allclose(samples[0]["actions"], samples[1]["actions"])
    assert not np.allclose(samples[0]["actions"], greedy["actions"])
    # Another resolution (the policy resizes), a raw uint8 array, and a PNG are all accepted.
    for image in (encode_jpeg(_image(48, 64)), _image(120, 160)):
        r = client.post("/v1/act", content=packb(_request(images={"front": image})), headers=MSGPACK)
        assert r.status_code == 200, r.text
    png = io.BytesIO()
    Image.fromarray(_image()).save(png, format="PNG")
    r = client.post("/v1/act", content=packb(_request(images={"front": png.getvalue()})), headers=MSGPACK)
    assert r.status_code == 200, r.text


def test_auth(served):
    srv, client = served
    body = packb(_request())
    anonymous = httpx.Client(base_url=srv.url)
    assert anonymous.post("/v1/act", content=body, headers=MSGPACK).status_code == 401
    assert anonymous.get("/v1/robots").status_code == 401
    bad = {**MSGPACK, "authorization": "Bearer nope"}
    assert anonymous.post("/v1/act", content=body, headers=bad).status_code == 403
    operator = {"authorization": f"Bearer {OPERATOR}"}
    assert anonymous.post("/v1/act", content=body, headers={**MSGPACK, **operator}).status_code == 403
    # operator endpoints refuse the robot token
    assert client.get("/v1/robots").status_code == 403
    assert client.post("/v1/robots/rob0/command", json={"command": "pause"}).status_code == 403
    assert client.post("/v1/robots/rob0/label", json={"episode_id": "ep0", "outcome": "success"}).status_code == 403
    assert client.get("/v1/robots/rob0/frames/front.jpg").status_code == 403
    assert anonymous.get("/v1/robots", headers=operator).status_code == 200
    assert anonymous.get("/v1/robots/rob0/frames/front.jpg", headers=operator).status_code == 200
    # open: liveness, readiness, metrics
    for path in ("/healthz", "/readyz", "/metrics"):
        assert anonymous.get(path).status_code == 200
    assert 'vlaloop_errors_total{kind="auth"}' in anonymous.get("/metrics").text
    anonymous.close()


def _gray_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(_image()[:, :, 0], "L").save(buf, format="JPEG")
    return buf.getvalue()


def _huge_jpeg() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (5000, 8)).save(buf, format="JPEG")
    return buf.getvalue()


def _msgpack(**kw):
    return packb(_request(**kw)), MSGPACK


def _with(key, value, encode="msgpack"):
    wire = _request()
    wire[key] = value
    if encode == "json":
        return json.dumps(_json_body(wire)).encode(), {"content-type": "application/json"}
    return packb(wire), MSGPACK


BAD_INPUTS = {
    "nan_state": (lambda: _with("state", [0.5, 0, float("nan"), 0, 0, 0, 1]), 422, "state"),
    "nan_state_json": (lambda: _with("state", [0.5, 0, float("nan"), 0, 0, 0, 1], "json"), 422, "state"),
    "short_state": (lambda: _msgpack(state=[0.0] * 5), 422, "state"),
    "nested_state": (lambda: _with("state", {"x": [1.0]}), 422, "state"),
    "long_instruction": (lambda: _with("instruction", "x" * 600), 422, "instruction"),
    "unknown_camera": (lambda: _msgpack(images={"front": encode_jpeg(_image()), "wrist": encode_jpeg(_image())}),
                       422, "images.wrist"),
    "missing_camera": (lambda: _msgpack(images={"side": encode_jpeg(_image())}), 422, "images.side"),
    "no_images": (lambda: _with("images", {}), 422, "images"),
    "not_an_image": (lambda: _msgpack(images={"front": b"definitely not a jpeg"}), 422, "images.front"),
    "gray_image": (lambda: _msgpack(images={"front": _gray_jpeg()}), 422, "images.front"),
    "huge_image": (lambda: _msgpack(images={"front": _huge_jpeg()}), 422, "images.front"),
    "four_channel_array": (lambda: _msgpack(images={"front": np.zeros((8, 8, 4), np.uint8)}), 422, "images.front"),
    "float_array": (lambda: _msgpack(images={"front": np.zeros((8, 8, 3), np.float32)}), 422, "images.front"),
    "bad_base64": (lambda: (json.dumps({**_json_body(_request()), "images": {"front": "%%%"}}).encode(),
                            {"content-type": "application/json"}), 422, "images.front"),
    "unknown_field": (lambda: _with("temperature", 3), 422, "temperature"),
    "unknown_field_json": (lambda: _with("temperature", 3, "json"), 422, "temperature"),
    "missing_field": (lambda: (packb({k: v for k, v in _request().items() if k != "instruction"}), MSGPACK),
                      422, "instruction"),
    "bad_mode": (lambda: _with("mode", "explore"), 422, "mode"),
    "bad_robot_id": (lambda: _with("robot_id", "../etc"), 422, "robot_id"),
    "wrong_schema": (lambda: _with("schema", 99), 422, "schema"),
    "malformed_msgpack": (lambda: (b"\xc1\xc1\xc1", MSGPACK), 400, "body"),
    "truncated_msgpack": (lambda: (packb(_request())[:-20], MSGPACK), 400, "body"),
    "malformed_json": (lambda: (b"{not json", {"content-type": "application/json"}), 400, "body"),
    "json_not_object": (lambda: (b"[1, 2]", {"content-type": "application/json"}), 400, "body"),
    "text_plain": (lambda: (b"hello", {"content-type": "text/plain"}), 415, "content-type"),
    "oversized": (lambda: _msgpack(images={"front": encode_jpeg(_image(700, 700), quality=100)}), 413, "body"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_a_4xx_naming_the_field(served, case):
    _, client = served
    make, status, field = BAD_INPUTS[case]
    body, headers = make()
    r = client.post("/v1/act", content=body, headers=headers)
    assert r.status_code == status, r.text
    detail = r.json()
    assert detail["field"] == field and detail["detail"].startswith(field), detail
    assert client.post("/v1/act", content=packb(_request()), headers=MSGPACK).status_code == 200


def test_policy_metadata_and_metrics(served):
    _, client = served
    info = client.get("/v1/policy").json()
    assert info["loaded"] and info["version"] == 1
    assert info["cameras"] == ["front"] and info["image_size"] == 96 and info["chunk"] == 4
    assert info["action_space"]["shape"] == [4, 7] and info["action_space"]["names"][-1] == "gripper"
    assert set(info["normalization"]) >= {"action_mean", "action_std"}
    assert info["backbone_id"] and info["backbone_hash"] and info["last_swap"]["ok"]
    assert info["last_swap_error"] is None
    client.post("/v1/act", content=packb(_request()), headers=MSGPACK)
    text = client.get("/metrics").text
    for needle in ('vlaloop_act_stage_seconds_bucket{le="0.005",stage="infer"}',
                   'vlaloop_act_stage_seconds_count{stage="total"}', "vlaloop_batch_size_count",
                   "vlaloop_queue_depth", "vlaloop_policy_swaps_total 1.0", "vlaloop_policy_version 1.0",
                   'vlaloop_act_requests_total{encoding="msgpack"}', "vlaloop_policy_swap_failures_total 0.0",
                   'vlaloop_errors_total{kind="invalid_field"}', 'vlaloop_errors_total{kind="malformed"}'):
        assert needle in text, needle


def test_not_ready_until_a_checkpoint_exists(tmp_path):
    with ServerThread(DeploymentConfig(run_dir=str(tmp_path))) as srv, httpx.Client(base_url=srv.url) as c:
        r = c.get("/readyz")
        assert r.status_code == 503 and "no checkpoint" in r.json()["reason"]
        r = c.post("/v1/act", content=packb(_request()), headers=MSGPACK)
        assert r.status_code == 503 and "checkpoints" in r.json()["detail"]
        assert c.get("/v1/policy").json()["loaded"] is False
        assert c.get("/healthz").status_code == 200


def test_refuses_to_listen_publicly_without_tokens(tmp_path, capsys):
    for host in ("127.0.0.1", "localhost", "::1"):
        check_bind_allowed(host, ServerConfig())
    with pytest.raises(UnsafeBindError, match="robot_token and operator_token"):
        check_bind_allowed("0.0.0.0", ServerConfig())
    with pytest.raises(UnsafeBindError, match="operator_token"):
        check_bind_allowed("192.168.1.5", ServerConfig(robot_token="x"))
    check_bind_allowed("0.0.0.0", ServerConfig(robot_token="x", operator_token="y"))
    rc = vlaloop_main(["--run-dir", str(tmp_path), "serve", "--host", "0.0.0.0", "--port", "0"])
    assert rc == 2 and "refusing to listen on 0.0.0.0" in capsys.readouterr().err


def test_vlaloop_serve_subprocess_starts_answers_and_stops_on_sigterm(served, tmp_path):
    srv, _ = served
    run_dir = srv.app.state.config.run_dir
    env = {**os.environ, "PYTHONPATH": str(REPO), "VLALOOP_SERVER__ROBOT_TOKEN": ROBOT}
    proc = subprocess.Popen([sys.executable, "-m", "vlaloop.cli", "--run-dir", run_dir, "serve", "--port", "0"],
                            stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
    try:
        url = None
        for line in proc.stderr:
            if "listening on http://" in line:
                url = line.split("listening on ")[1].split()[0]
                assert "LATEST=1" in line
                break
        assert url, "server did not log its address"
        with httpx.Client(base_url=url, headers={"authorization": f"Bearer {ROBOT}"}, timeout=30) as c:
            # loading and validating the policy takes seconds; 30 s ran out twice at load ~10
            deadline = time.monotonic() + 120
            while c.get("/readyz").status_code != 200:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            r = c.post("/v1/act", content=packb(_request()), headers=MSGPACK)
            assert r.status_code == 200 and unpackb(r.content)["policy_version"] == 1
        proc.send_signal(signal.SIGTERM)
        # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status tells the truth
        assert proc.wait(timeout=15) in (0, -signal.SIGTERM)
        assert "server stopped" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


_FIELDS = ["schema", "request_id", "robot_id", "episode_id", "step", "t_capture", "instruction", "images",
           "state", "mode", "extra"]
_LEAF = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(), st.text(max_size=5),
                  st.binary(max_size=8), st.just(encode_jpeg(_image(8, 8))))
_VALUE = st.recursive(_LEAF, lambda c: st.one_of(st.lists(c, max_size=4),
                                                  st.dictionaries(st.text(max_size=6), c, max_size=4)),
                      max_leaves=10)


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(body=st.dictionaries(st.sampled_from(_FIELDS), _VALUE, max_size=11), as_json=st.booleans())
def test_arbitrary_bodies_never_get_a_5xx(served, body, as_json):
    _, client = served
    if as_json:
        content = json.dumps(body, default=lambda o: o.hex() if isinstance(o, bytes) else str(o)).encode()
        headers = {"content-type": "application/json"}
    else:
        content, headers = msgpack.packb(body, use_bin_type=True), MSGPACK
    r = client.post("/v1/act", content=content, headers=headers)
    assert r.status_code < 500, (body, r.text)
