"""Security of the HTTP API against a real `vlaloop serve` process with tokens configured:
every mutating endpoint (enumerated from the server's own OpenAPI document, so a new endpoint is
covered automatically) needs its role's token; nothing but health, metrics and the page's static
files is readable without one; bodies over server.max_body_bytes get 413 on every POST; ids and
camera names in paths cannot reach files outside the episode store; a non-loopback bind without
tokens is refused. (The ZeroMQ side: tests/learner/test_ingest_service.py checks that a hello without the
learner's token is refused and that messages over learner.max_message_bytes drop the peer.)"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from standins import Proc, free_port, http_ok

from episodes.store import EpisodeStore, StoreError

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
ROBOT, OPERATOR = "robot-secret-1", "operator-secret-2"
MAX_BODY = 64 * 1024
# Readable without a token, on purpose: liveness/readiness for orchestrators, Prometheus metrics,
# the API description and the operator page's static shell (its data calls need the token).
PUBLIC_GETS = {"/healthz", "/readyz", "/metrics", "/openapi.json", "/docs", "/docs/oauth2-redirect", "/redoc", "/"}
PARAMS = {"robot_id": "mock0", "episode_id": "ep1", "camera": "front", "step": "0"}
SECRET = b"\xff\xd8 outside the store \xff\xd9"


def example_body(op: dict, spec: dict) -> dict:
    """A body that passes the schema's required fields where easy (auth must be checked first anyway)."""
    schema = op.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema", {})
    if "$ref" in schema:
        schema = spec["components"]["schemas"][schema["$ref"].split("/")[-1]]
    body = {}
    for name in schema.get("required", []):
        prop = schema.get("properties", {}).get(name, {})
        body[name] = (prop.get("enum") or ["x"])[0] if prop.get("type") == "string" or "enum" in prop else 0
    return body


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import torch

    from bench.harness import publish_tiny

    torch.set_num_threads(1)
    run_dir = tmp_path_factory.mktemp("secrun")
    publish_tiny(run_dir)
    store = EpisodeStore(run_dir / "episodes")
    store.append_step("mock0", "ep1", 0, {"action": [0.0] * 7, "state": [0.0] * 7}, {"front": b"\xff\xd8jpg\xff\xd9"})
    store.finish("mock0", "ep1", {"source": "online", "outcome": "success", "label_source": "auto", "n_steps": 1,
                                  "instruction": "x", "task": "reach"})
    for where in (run_dir / "secret.jpg", run_dir / "episodes" / "secret.jpg", run_dir / "episodes" / "mock0" /
                  "secret.jpg", run_dir / "episodes" / "mock0" / "ep1" / "secret.jpg"):
        where.write_bytes(SECRET)
    port = free_port()
    env = {"OMP_NUM_THREADS": "1", "VLALOOP_SERVER__ROBOT_TOKEN": ROBOT, "VLALOOP_SERVER__OPERATOR_TOKEN": OPERATOR,
           "VLALOOP_SERVER__MAX_BODY_BYTES": str(MAX_BODY)}
    proc = Proc([PY, "-m", "vlaloop.cli", "--run-dir", str(run_dir), "serve", "--port", str(port)],
                run_dir / "server.log", port=port, ready=lambda: http_ok(f"http://127.0.0.1:{port}/readyz"),
                env=env).start()
    try:
        url = f"http://127.0.0.1:{port}"
        spec = httpx.get(f"{url}/openapi.json").json()
        yield url, spec, run_dir
    finally:
        proc.stop()


def operations(spec: dict, methods: set[str]):
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            if method.upper() in methods:
                url_path = re.sub(r"\{(\w+)\}", lambda m: PARAMS.get(m.group(1), "x"), path)
                yield method.upper(), path, url_path, op


def roles_of(op: dict, path: str) -> str:
    """Which token the route wants, from its path: operator routes act on robots or the store."""
    if path.startswith("/v1/act") or path == "/act" or re.search(r"/(status|awaiting)$", path) or \
            (path.endswith("/label") and "get" in op.get("operationId", "").lower()):
        return "robot"
    return "operator"


def test_every_mutating_endpoint_requires_its_token(server):
    url, spec, _ = server
    mutating = list(operations(spec, {"POST", "PUT", "PATCH", "DELETE"}))
    assert len(mutating) >= 6, [p for _, p, _, _ in mutating]  # act, status, awaiting, command, label, relabel...
    checked = []
    with httpx.Client(base_url=url, timeout=10) as c:
        for method, path, url_path, op in mutating:
            body = example_body(op, spec)
            r = c.request(method, url_path, json=body)
            assert r.status_code == 401, (method, path, r.status_code, r.text)
            assert "token" in r.json()["detail"], r.text
            r = c.request(method, url_path, json=body, headers={"Authorization": "Bearer not-the-token"})
            assert r.status_code == 403, (method, path, r.status_code, r.text)
            statuses = {}
            for role, tok in (("robot", ROBOT), ("operator", OPERATOR)):
                statuses[role] = c.request(method, url_path, json=body,
                                           headers={"Authorization": f"Bearer {tok}"}).status_code
            # exactly one role's token gets past auth; the other role's token is refused (403)
            assert sorted(s == 403 for s in statuses.values()) == [False, True], (method, path, statuses)
            checked.append((method, path, next(r for r, s in statuses.items() if s != 403)))
    print("\nmutating endpoints and the role that may call them:")
    for m, p, role in checked:
        print(f"  {m:6s} {p:55s} {role}")
    by_path = {p: role for _, p, role in checked}
    assert by_path["/v1/act"] == "robot" and by_path["/v1/robots/{robot_id}/status"] == "robot"
    assert by_path["/v1/robots/{robot_id}/command"] == "operator"
    assert by_path["/v1/robots/{robot_id}/label"] == "operator"


def test_nothing_but_health_metrics_and_static_is_readable_without_a_token(server):
    url, spec, _ = server
    with httpx.Client(base_url=url, timeout=10) as c:
        for _, path, url_path, _ in operations(spec, {"GET"}):
            r = c.get(url_path)
            if path in PUBLIC_GETS:
                assert r.status_code in (200, 503), (path, r.status_code)
            else:
                assert r.status_code == 401, (path, r.status_code, r.text[:200])
        # the operator page's data routes hidden from the schema, too
        for path in ("/v1/robots", "/v1/robots/mock0/frames/front.jpg", "/v1/episodes",
                     "/v1/episodes/mock0/ep1/frames/0/front.jpg", "/v1/learning"):
            assert c.get(path).status_code == 401, path


def test_openpi_websocket_needs_the_robot_token(server):
    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect

    url, _, _ = server
    ws_url = url.replace("http://", "ws://") + "/"
    for headers in ({}, {"Authorization": "Api-Key wrong"}):
        try:
            with connect(ws_url, additional_headers=headers, open_timeout=5) as ws:
                with pytest.raises(ConnectionClosed):  # closed with a policy violation, no metadata
                    ws.recv(timeout=5)
        except InvalidStatus as e:  # or refused at the handshake
            assert e.response.status_code in (401, 403)
    with connect(ws_url, additional_headers={"Authorization": f"Api-Key {ROBOT}"}, open_timeout=5) as ws:
        assert isinstance(ws.recv(timeout=10), bytes)  # the metadata frame


def test_every_post_refuses_an_oversized_body_with_413(server):
    url, spec, _ = server
    big = b"{" + b" " * (MAX_BODY + 10) + b"}"
    results = {}
    with httpx.Client(base_url=url, timeout=30) as c:
        for method, path, url_path, _ in operations(spec, {"POST", "PUT", "PATCH"}):
            tok = OPERATOR if roles_of({}, path) == "operator" else ROBOT
            for ctype in ("application/json", "application/msgpack"):
                r = c.request(method, url_path, content=big,
                              headers={"Authorization": f"Bearer {tok}", "Content-Type": ctype})
                results[(path, ctype)] = r.status_code
                if r.status_code == 403:  # the other role's endpoint: auth first, body never read
                    tok2 = ROBOT if tok == OPERATOR else OPERATOR
                    r = c.request(method, url_path, content=big,
                                  headers={"Authorization": f"Bearer {tok2}", "Content-Type": ctype})
                    results[(path, ctype)] = r.status_code
    bad = {k: v for k, v in results.items() if v != 413}
    assert not bad, f"oversized bodies not refused with 413: {bad}"


def raw_get(url: str, path: str) -> tuple[int, bytes]:
    """GET with the path sent verbatim (no client-side '..' normalization)."""
    import socket

    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {OPERATOR}\r\n"
                  f"Connection: close\r\n\r\n".encode())
        data = b""
        while chunk := s.recv(65536):
            data += chunk
    return int(data.split(b" ", 2)[1]), data


BAD_IDS = ["..", "%2e%2e", "..%2f..", "%2e%2e%2f%2e%2e", "secret", "a/../..", "..%5c..", "%00", "a%00b",
           "." * 70, "-x", "a b"]


def test_paths_cannot_escape_the_episode_store(server):
    url, _, run_dir = server
    auth = {"Authorization": f"Bearer {OPERATOR}"}
    with httpx.Client(base_url=url, timeout=10, headers=auth) as c:
        assert c.get("/v1/episodes/mock0/ep1/frames/0/front.jpg").status_code == 200  # the legit one works
        for bad in BAD_IDS:
            for path in (f"/v1/episodes/{bad}/ep1/frames/0/front.jpg", f"/v1/episodes/mock0/{bad}/frames/0/front.jpg",
                         f"/v1/episodes/mock0/ep1/frames/0/{bad}.jpg", "/v1/episodes/mock0/ep1/frames/0/..%2fsecret.jpg",
                         f"/v1/episodes/{bad}/{bad}", f"/v1/robots/{bad}/frames/front.jpg",
                         f"/v1/robots/mock0/frames/{bad}.jpg", "/v1/episodes/mock0/ep1/frames/0/..%2f..%2fsecret.jpg"):
                r = c.get(path)
                assert SECRET not in r.content, path
                if r.url.raw_path.decode().split("?")[0] == path:  # httpx did not normalize '..' away
                    assert r.status_code in (400, 404, 422), (path, r.status_code)
                status, content = raw_get(url, path)  # exactly these bytes on the wire
                assert status in (400, 404, 422) and SECRET not in content, (path, status)
            r = c.post(f"/v1/episodes/mock0/{bad}/relabel", json={"outcome": "failure"})
            assert r.status_code in (400, 404, 422), (bad, r.status_code)
    queued = [json.loads(f.read_text()) for f in (run_dir / "inbox").glob("*.json")] \
        if (run_dir / "inbox").exists() else []
    assert all(q["robot_id"] == "mock0" and q["episode_id"] == "ep1" for q in queued), queued
    # the store itself refuses such ids and camera names, whoever calls it
    store = EpisodeStore(run_dir / "episodes")
    for bad in ["..", "../x", "a/b", "", ".", "x\x00", "/etc", "." * 70]:
        with pytest.raises(StoreError):
            store.episode_dir(bad, "ep1")
        with pytest.raises(StoreError):
            store.episode_dir("mock0", bad)
        with pytest.raises(StoreError):
            store.append_step("mock0", "ep2", 0, {}, {bad: b"x"})
    assert not (run_dir / "episodes" / "mock0" / "ep2" / "frames").exists() or \
        not list((run_dir / "episodes" / "mock0" / "ep2" / "frames").iterdir())


def test_non_loopback_bind_without_tokens_is_refused(tmp_path):
    for env in ({}, {"VLALOOP_SERVER__ROBOT_TOKEN": "x"}, {"VLALOOP_SERVER__OPERATOR_TOKEN": "y"}):
        r = subprocess.run([PY, "-m", "vlaloop.cli", "--run-dir", str(tmp_path), "serve", "--host", "0.0.0.0",
                            "--port", "0"], cwd=ROOT, capture_output=True, text=True, timeout=60,
                           env={**__import__("os").environ, **env, "OMP_NUM_THREADS": "1"})
        assert r.returncode == 2, (env, r.returncode, r.stderr[-500:])
        assert "refusing to listen on 0.0.0.0" in r.stderr and "token" in r.stderr
