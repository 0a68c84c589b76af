"""Hostile input against a real uvicorn server (tokens on, 127.0.0.1): images whose header claims more
than the configured camera size are refused before decoding on every image route, the WebSocket
takes no compressed frames, per-robot state stays bounded, every malformed body is a 4xx naming
its field, and connections that never finish their request are closed."""

from __future__ import annotations

import base64
import json
import socket
import time

import httpx
import numpy as np
import pytest
import torch
import websockets.sync.client

from bench.fuzz_hostile import jpeg_claiming, png_claiming
from bench.harness import ServerThread, publish_tiny
from deployment.config import DeploymentConfig
from deployment.server import ServerConfig
from protocol.codec import packb
from protocol.images import encode_jpeg
from protocol.messages import ActRequest

torch.set_num_threads(1)
ROBOT, OPERATOR = "robot-secret", "operator-secret"
MSGPACK = {"content-type": "application/msgpack"}
JSON = {"content-type": "application/json"}
MAX_BODY = 4 * 1024 * 1024


def jpeg(w: int, h: int) -> bytes:
    return encode_jpeg(np.zeros((h, w, 3), np.uint8), quality=50)


def request(**kw) -> dict:
    fields = dict(request_id="r1", robot_id="rob0", episode_id="ep0", step=0, t_capture=time.time(),
                  instruction="reach the red block", images={"front": jpeg(96, 96)},
                  state=[0.5, 0.0, 0.2, 0.0, 0.0, 0.0, 1.0])
    fields.update(kw)
    return ActRequest(**fields).to_wire()


def as_json(wire: dict) -> bytes:
    out = dict(wire)
    out["images"] = {k: base64.b64encode(v).decode() for k, v in wire["images"].items()}
    return json.dumps(out).encode()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    publish_tiny(run_dir)
    config = DeploymentConfig(run_dir=str(run_dir), server=ServerConfig(
        robot_token=ROBOT, operator_token=OPERATOR, max_body_bytes=MAX_BODY, header_timeout_s=1.0,
        body_timeout_s=1.5, max_robots=8))
    with ServerThread(config) as srv:
        srv.wait_ready()
        with httpx.Client(base_url=srv.url, headers={"authorization": f"Bearer {ROBOT}"}, timeout=30) as client:
            yield srv, client


def post_act(client: httpx.Client, wire: dict, encoding: str) -> httpx.Response:
    if encoding == "json":
        return client.post("/v1/act", content=as_json(wire), headers=JSON)
    return client.post("/v1/act", content=packb(wire), headers=MSGPACK)


# ---- image size from the header, before decoding ---------------------------------------------

@pytest.mark.parametrize("encoding", ["msgpack", "json"])
@pytest.mark.parametrize("image", ["jpeg_4096", "jpeg_20000", "png_4096", "png_20000"])
def test_an_image_header_claiming_more_than_the_camera_size_is_refused_before_decoding(served, image, encoding):
    _, client = served
    kind, side = image.split("_")
    data = (jpeg_claiming if kind == "jpeg" else png_claiming)(int(side), int(side))
    assert len(data) < 1000
    r = post_act(client, request(images={"front": data}), encoding)
    assert r.status_code == 422, r.text
    assert r.json()["field"] == "images.front"
    assert "exceeds the configured camera size" in r.json()["detail"], r.text
    if side == "4096":  # (PIL itself refuses a 20000x20000 header, before it says the size)
        assert "image of 4096x4096" in r.json()["detail"], r.text
    assert post_act(client, request(), encoding).status_code == 200


def test_the_default_limit_is_the_robot_cameras_configured_size(served):
    srv, client = served
    limit = srv.app.state.image_limit
    assert (limit.max_side, limit.max_pixels) == (640, 640 * 480)  # robot.camera_width x camera_height
    assert post_act(client, request(images={"front": jpeg(640, 480)}), "msgpack").status_code == 200
    for w, h in ((641, 8), (8, 641), (640, 640)):
        r = post_act(client, request(images={"front": jpeg(w, h)}), "msgpack")
        assert r.status_code == 422 and "exceeds the configured camera size" in r.json()["detail"], (w, h, r.text)
    raw = np.zeros((700, 700, 3), np.uint8)  # a raw array over the limit, as the openpi/OpenVLA routes take
    r = post_act(client, request(images={"front": raw}), "msgpack")
    assert r.status_code == 422 and "700x700" in r.json()["detail"], r.text


def test_the_openvla_route_checks_the_image_size_first(served):
    _, client = served
    big = np.zeros((700, 700, 3), np.uint8)
    body = {"image": {"__numpy__": base64.b64encode(big.tobytes()).decode(), "dtype": "|u1", "shape": [700, 700, 3]},
            "instruction": "reach"}
    r = client.post("/act", json=body)
    assert r.status_code == 422 and "700x700 exceeds the configured camera size" in r.text, r.text


def test_the_websocket_takes_no_compressed_frames_and_checks_the_image_size(served):
    from openpi_client import msgpack_numpy

    srv, _ = served
    with websockets.sync.client.connect(f"ws://127.0.0.1:{srv.port}", compression="deflate",
                                        additional_headers={"Authorization": f"Api-Key {ROBOT}"}) as ws:
        assert "permessage-deflate" not in (ws.response.headers.get("sec-websocket-extensions") or "")
        ws.recv()  # metadata
        obs = {"observation/exterior_image_1_left": np.zeros((700, 700, 3), np.uint8), "observation/state": np.zeros(7, np.float32),
               "prompt": "reach"}
        ws.send(msgpack_numpy.packb(obs))
        reply = ws.recv()
        assert isinstance(reply, str) and reply.startswith("422") and "700x700" in reply, reply


# ---- header and body timeouts ----------------------------------------------------------------

def _closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """(whether the server closed the connection within `seconds`, what it sent before)."""
    sock.settimeout(seconds)
    received = b""
    try:
        while chunk := sock.recv(4096):
            received += chunk
    except TimeoutError:
        return False, received
    except ConnectionResetError:
        pass
    return True, received


def test_connections_that_never_finish_their_request_are_closed(served):
    srv, client = served
    t0 = time.monotonic()
    stalled = []
    for i in range(20):  # unfinished headers, a connection that says nothing, an unfinished body
        s = socket.create_connection((srv.host, srv.port))
        if i % 3 == 0:
            s.sendall(b"POST /v1/act HTTP/1.1\r\nhost: x\r\n")
        elif i % 3 == 1:
            s.sendall(b"POST /v1/act HTTP/1.1\r\nhost: x\r\ncontent-type: application/msgpack\r\n"
                      b"authorization: Bearer " + ROBOT.encode() + b"\r\ncontent-length: 1000\r\n\r\n" + b"\x80" * 10)
        stalled.append(s)
    assert post_act(client, request(), "msgpack").status_code == 200  # others are served meanwhile
    for i, s in enumerate(stalled):
        closed, sent = _closed_within(s, 5.0)
        assert closed, f"connection {i} still open after {time.monotonic() - t0:.1f} s"
        if i % 3 != 1:
            assert sent.startswith(b"HTTP/1.1 408"), sent
        s.close()
    assert time.monotonic() - t0 < 5.0  # header_timeout_s 1, body_timeout_s 1.5
    # A request that is merely slow but finishes in time is answered.
    s = socket.create_connection((srv.host, srv.port))
    s.sendall(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")
    time.sleep(0.3)
    s.sendall(b"\r\n")
    s.settimeout(5)
    assert s.recv(4096).startswith(b"HTTP/1.1 200")
    s.close()


# ---- per-robot state bounded ------------------------------------------------------------------

def test_made_up_robot_ids_do_not_pile_up_and_evicted_ones_are_listed_as_gone(served):
    _, client = served
    for i in range(40):
        assert post_act(client, request(robot_id=f"made-up-{i}", images={"front": jpeg(640, 480)}),
                        "msgpack").status_code == 200
    robots = client.get("/v1/robots", headers={"authorization": f"Bearer {OPERATOR}"}).json()
    live = [r for r in robots if not r["gone"]]
    gone = [r for r in robots if r["gone"]]
    assert len(live) == 8 and "made-up-39" in {r["robot_id"] for r in live}
    assert gone and all(r["state"] == "gone" and r["cameras"] == [] for r in gone)


# ---- every malformed body a 4xx naming its field ---------------------------------------------

DEEP = b"[" * 100_000 + b"]" * 100_000


def test_deeply_nested_json_is_a_400_on_every_json_route(served):
    _, client = served
    for path in ("/v1/act", "/act", "/v1/robots/r9/status"):
        r = client.post(path, content=DEEP, headers=JSON)
        assert r.status_code == 400 and r.json()["field"] == "body" and "nested too deeply" in r.text, (path, r.text)
    nested_state = b'{"state": ' + DEEP + b"}"
    r = client.post("/v1/act", content=nested_state, headers=JSON)
    assert r.status_code == 400 and "nested too deeply" in r.text, r.text


@pytest.mark.parametrize("state", ["huge_int", "1e308", "float32_max", "-1e5"])
def test_a_state_outside_the_accepted_range_is_a_422_naming_state(served, state):
    _, client = served
    wire = request()
    body = json.loads(as_json(wire))
    values = {"huge_int": None, "1e308": [1e308] * 7, "float32_max": [3e38] * 7, "-1e5": [0.0] * 6 + [-1e5]}[state]
    if values is None:
        raw = as_json(wire).replace(b'"state": [', b'"state": [' + b"9" * 4000 + b", ", 1)
        raw = raw.replace(b", 1.0]", b"]", 1)
    else:
        body["state"] = values
        raw = json.dumps(body).encode()
    r = client.post("/v1/act", content=raw, headers=JSON)
    assert r.status_code == 422 and r.json()["field"] == "state", r.text
    r = client.post("/v1/act", content=packb({**wire, "state": values or [1e300] * 7}), headers=MSGPACK)
    assert r.status_code == 422 and r.json()["field"] == "state", r.text


def test_an_extreme_float32_state_over_the_websocket_is_a_422(served):
    from openpi_client import msgpack_numpy

    srv, _ = served
    with websockets.sync.client.connect(f"ws://127.0.0.1:{srv.port}",
                                        additional_headers={"Authorization": f"Api-Key {ROBOT}"}) as ws:
        ws.recv()
        obs = {"observation/exterior_image_1_left": np.zeros((96, 96, 3), np.uint8),
               "observation/state": np.full(7, 3e38, np.float32), "prompt": "reach"}
        ws.send(msgpack_numpy.packb(obs))
        reply = ws.recv()
        assert isinstance(reply, str) and reply.startswith("422 observation/state"), reply
        obs["observation/state"] = np.zeros(7, np.float32)
        ws.send(msgpack_numpy.packb(obs))
        assert not isinstance(ws.recv(), str)  # the session goes on


def test_a_chunked_body_over_the_limit_is_a_413_on_every_route(served):
    _, client = served

    def chunks():
        for _ in range(MAX_BODY // 65536 + 2):
            yield b" " * 65536

    for path in ("/v1/act", "/act", "/v1/robots/r9/status"):
        r = client.post(path, content=chunks(), headers=JSON)
        assert r.status_code == 413 and r.json()["field"] == "body", (path, r.status_code, r.text[:200])


def test_readyz_without_a_token_names_no_local_path(tmp_path):
    checkpoints = tmp_path / "run" / "checkpoints"
    checkpoints.mkdir(parents=True)
    (checkpoints / "LATEST").write_text("7\n")  # a version that is not there: the error names its path
    config = DeploymentConfig(run_dir=str(tmp_path / "run"), server=ServerConfig(
        robot_token=ROBOT, operator_token=OPERATOR, watch_interval_s=0.02))
    with ServerThread(config) as srv:
        deadline = time.monotonic() + 20
        while srv.app.state.holder.last_swap_error is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        r = httpx.get(f"{srv.url}/readyz")
        assert r.status_code == 503 and "version 7 failed" in r.text, r.text
        assert str(tmp_path) not in r.text and "/checkpoints" not in r.text, r.text
