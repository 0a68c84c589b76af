"""The operator page's JSON endpoints (server/ui/router.py) against a real uvicorn server on
127.0.0.1 and a real episode store on disk: auth, OpenAPI, episode list, replay frames (no path
traversal), relabel inbox files, and the learning curves."""

from __future__ import annotations

import json
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

from bench.harness import ServerThread
from deployment.config import load_config
from episodes.store import EpisodeStore, write_json_atomic
from learner.inbox import Inbox
from protocol.images import encode_jpeg
from server.ui.router import learning_curves

OPERATOR = "op-secret"
ROBOT = "robot-secret"


class _NoPolicy:
    """The policy source of a server with no checkpoint yet (the page endpoints need none)."""

    def latest(self) -> int | None:
        return None

    def load(self, version, base):  # pragma: no cover - never called: latest() is None
        raise AssertionError("no version to load")


def _frame(value: int) -> bytes:
    return encode_jpeg(np.full((24, 32, 3), value, dtype=np.uint8))


def _store_episode(store: EpisodeStore, robot: str, episode: str, outcome: str, version: int | None,
                   n: int = 3, source: str = "online", purpose: str = "train", finished: float = 0.0,
                   meta_version: bool = True) -> None:
    for step in range(n):
        store.append_step(robot, episode, step,
                          {"state": [0.0] * 7, "action": [0.01] * 7, "policy_version": -1 if version is None else version,
                           "chunk_index": step % 2, "t_capture": 1.0 + step, "safety": {"clamp": step}},
                          {"front": _frame(40 * step + 10)})
    meta = {"source": source, "outcome": outcome, "label_source": "operator", "n_steps": n,
            "instruction": f"reach the red block ({episode})", "task": "reach", "purpose": purpose}
    if meta_version:
        meta["policy_version"] = version
    store.finish(robot, episode, meta)
    if finished:  # deterministic order for the curve
        d = store.episode_dir(robot, episode)
        m = json.loads((d / "meta.json").read_text())
        m["finished"] = finished
        write_json_atomic(d / "meta.json", m)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    config = load_config(environ={}, run_dir=str(run_dir))
    config.server.operator_token = OPERATOR
    config.server.robot_token = ROBOT
    store = EpisodeStore(run_dir / "episodes")
    _store_episode(store, "mock0", "demo-1", "success", None, source="expert", finished=100.0)
    _store_episode(store, "mock0", "ep-1", "failure", 1, finished=101.0)
    _store_episode(store, "mock0", "ep-2", "success", 1, finished=102.0, meta_version=False)
    _store_episode(store, "mock1", "ep-3", "aborted", 2, finished=103.0)
    _store_episode(store, "mock1", "ep-4", "success", 2, purpose="eval", source="eval", finished=104.0)
    store.append_step("mock1", "ep-running", 0, {"policy_version": 2}, {"front": _frame(5)})  # no meta yet
    (run_dir / "episodes" / "not a robot id").mkdir()  # foreign directories are ignored
    with ServerThread(config, loader=_NoPolicy()) as srv:
        srv.run_dir = run_dir
        yield srv


def _client(srv, token: str | None = OPERATOR) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=srv.url, headers=headers, timeout=10)


def test_page_and_static_files_are_served_without_token(server):
    with _client(server, None) as c:
        page = c.get("/")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        assert '<script src="/ui/static/app.js">' in page.text
        js = c.get("/ui/static/app.js")
        assert js.status_code == 200 and "javascript" in js.headers["content-type"]
        assert "Authorization" in js.text  # the page sends the token itself
        assert c.get("/ui/static/style.css").headers["content-type"].startswith("text/css")
        assert c.get("/ui/static/../router.py").status_code == 404


@pytest.mark.parametrize("method,path,body", [
    ("GET", "/v1/learning", None),
    ("GET", "/v1/episodes", None),
    ("GET", "/v1/episodes/mock0/ep-1", None),
    ("GET", "/v1/episodes/mock0/ep-1/frames/0/front.jpg", None),
    ("POST", "/v1/episodes/mock0/ep-1/relabel", {"outcome": "success"}),
])
def test_every_page_endpoint_requires_the_operator_token(server, method, path, body):
    inbox = server.run_dir / "inbox"
    before = set(inbox.glob("*")) if inbox.exists() else set()
    for token, expected in ((None, 401), ("wrong", 403), (ROBOT, 403)):
        with _client(server, token) as c:
            r = c.request(method, path, json=body)
            assert r.status_code == expected, (token, path)
            assert b"reach the red block" not in r.content
    after = set(inbox.glob("*")) if inbox.exists() else set()
    assert after == before  # a refused relabel leaves nothing in the inbox
    if method == "GET":
        with _client(server) as c:
            assert c.get(path).status_code == 200, path


def test_openapi_documents_the_page_endpoints_with_response_models(server):
    with _client(server, None) as c:
        spec = c.get("/openapi.json").json()
    paths = spec["paths"]
    expected = {
        ("/v1/episodes", "get"): "EpisodeList",
        ("/v1/episodes/{robot_id}/{episode_id}", "get"): "EpisodeDetail",
        ("/v1/episodes/{robot_id}/{episode_id}/relabel", "post"): "RelabelQueued",
        ("/v1/learning", "get"): "LearningView",
    }
    for (path, method), model in expected.items():
        op = paths[path][method]
        ok = op["responses"].get("200") or op["responses"].get("202")
        assert ok["content"]["application/json"]["schema"]["$ref"].endswith("/" + model), path
        assert op["security"] or any(p["name"] == "authorization" for p in op.get("parameters", [])), path
    frame = paths["/v1/episodes/{robot_id}/{episode_id}/frames/{step}/{camera}.jpg"]["get"]
    assert "image/jpeg" in frame["responses"]["200"]["content"]
    schemas = spec["components"]["schemas"]
    assert {"EpisodeSummary", "CurvePoint", "VersionPoint", "LearnerStatus", "RelabelRequest"} <= set(schemas)
    assert "/" not in paths  # the HTML page is not part of the JSON API


def test_episode_list_newest_first_with_versions_and_filters(server):
    with _client(server) as c:
        data = c.get("/v1/episodes").json()
        online = c.get("/v1/episodes", params={"source": "online"}).json()
        mock1 = c.get("/v1/episodes", params={"robot_id": "mock1", "limit": 1}).json()
        bad = c.get("/v1/episodes", params={"robot_id": "../x"})
    ids = [e["episode_id"] for e in data["episodes"]]
    assert ids == ["ep-4", "ep-3", "ep-2", "ep-1", "demo-1"] and data["total"] == 5
    by_id = {e["episode_id"]: e for e in data["episodes"]}
    assert by_id["ep-2"]["policy_version"] == 1  # not in meta.json: computed from the steps
    assert by_id["ep-3"]["policy_version"] == 2 and by_id["demo-1"]["policy_version"] is None
    assert by_id["ep-1"]["cameras"] == ["front"]
    assert (by_id["ep-1"]["first_step"], by_id["ep-1"]["last_step"], by_id["ep-1"]["n_steps"]) == (0, 2, 3)
    assert by_id["ep-4"]["purpose"] == "eval" and by_id["ep-1"]["label_source"] == "operator"
    assert [e["episode_id"] for e in online["episodes"]] == ["ep-3", "ep-2", "ep-1"]
    assert mock1["total"] == 2 and [e["episode_id"] for e in mock1["episodes"]] == ["ep-4"]
    assert bad.status_code == 422


def test_episode_detail_and_replay_frames_come_from_the_store(server):
    with _client(server) as c:
        detail = c.get("/v1/episodes/mock0/ep-1").json()
        frames = [c.get(f"/v1/episodes/mock0/ep-1/frames/{s}/front.jpg") for s in range(3)]
        missing_step = c.get("/v1/episodes/mock0/ep-1/frames/7/front.jpg")
        missing_cam = c.get("/v1/episodes/mock0/ep-1/frames/0/wrist.jpg")
        missing_ep = c.get("/v1/episodes/mock0/nope")
    assert [s["step"] for s in detail["steps"]] == [0, 1, 2]
    assert detail["steps"][2]["safety"] == {"clamp": 2} and detail["meta"]["outcome"] == "failure"
    stored = EpisodeStore(server.run_dir / "episodes").load("mock0", "ep-1")
    for step, r in enumerate(frames):
        assert r.status_code == 200 and r.headers["content-type"] == "image/jpeg"
        assert r.content == stored.frame_bytes(step, "front")
    assert missing_step.status_code == missing_cam.status_code == missing_ep.status_code == 404


@pytest.mark.parametrize("raw_path", [
    "/v1/episodes/%2e%2e/mock0/frames/0/front.jpg",
    "/v1/episodes/mock0/%2e%2e/frames/0/front.jpg",
    "/v1/episodes/mock0/ep-1/frames/0/%2e%2e%2fmeta.jpg",
    "/v1/episodes/mock0/ep-1/frames/0/..%2f..%2f..%2fstatus.jpg",
    "/v1/episodes/mock0/ep-1/frames/-1/front.jpg",
    "/v1/episodes/mock0/ep-1%2f..%2fep-2/frames/0/front.jpg",
    "/v1/episodes/mock0/.hidden",
])
def test_replay_ids_are_validated_no_path_traversal(server, raw_path):
    (server.run_dir / "secret.jpg").write_bytes(b"not for the browser")
    with httpx.Client(timeout=10) as c:
        req = c.build_request("GET", server.url, headers={"Authorization": f"Bearer {OPERATOR}"})
        req.url = req.url.copy_with(raw_path=raw_path.encode())  # keep the encoded dots as sent
        r = c.send(req)
    assert r.status_code in (404, 422), (raw_path, r.status_code)
    assert b"not for the browser" not in r.content


def test_relabel_drops_an_atomic_inbox_file_the_learner_applies(server):
    inbox = server.run_dir / "inbox"
    with _client(server) as c:
        r = c.post("/v1/episodes/mock0/ep-1/relabel", json={"outcome": "discard"})
        assert r.status_code == 202, r.text
        queued = r.json()
        listed = {e["episode_id"]: e for e in c.get("/v1/episodes").json()["episodes"]}
        assert c.post("/v1/episodes/mock0/unknown/relabel", json={"outcome": "success"}).status_code == 404
        assert c.post("/v1/episodes/mock0/ep-1/relabel", json={"outcome": "great"}).status_code == 422
        assert c.post("/v1/episodes/mock0/ep-1/relabel",
                      json={"outcome": "success", "extra": 1}).status_code == 422
    assert queued["outcome"] == "aborted"  # "discard" is stored as aborted: kept, never trained on
    files = sorted(p.name for p in inbox.iterdir())
    assert files == [queued["inbox_file"]]  # no temp file left behind
    content = json.loads((inbox / queued["inbox_file"]).read_text())
    assert (content["robot_id"], content["episode_id"], content["outcome"]) == ("mock0", "ep-1", "aborted")
    assert listed["ep-1"]["relabel_pending"] == "aborted"
    # the learner's inbox applies it to the store and deletes the file
    store = EpisodeStore(server.run_dir / "episodes")
    assert Inbox(inbox, store).scan() == 1
    assert store.read_meta("mock0", "ep-1")["outcome"] == "aborted"
    with _client(server) as c:
        ep = c.get("/v1/episodes/mock0/ep-1").json()["summary"]
    assert ep["outcome"] == "aborted" and ep["relabeled"] and ep["relabel_pending"] is None
    # put it back for the other tests
    store.relabel("mock0", "ep-1", "failure")


def test_learning_view_status_json_and_curves(server):
    status_path = server.run_dir / "status.json"
    with _client(server) as c:
        status_path.unlink(missing_ok=True)
        before = c.get("/v1/learning").json()
        write_json_atomic(status_path, {"phase": "rl", "iteration": 3, "round": 2, "progress": 0.4,
                                        "losses": {"policy": 0.12, "value": 0.5}, "policy_version": 2,
                                        "updated": time.time(), "ingest": {"steps": 10}})
        after = c.get("/v1/learning").json()
    assert before["status"] is None and before["status_age_s"] is None
    st = after["status"]
    assert (st["phase"], st["iteration"], st["round"], st["progress"]) == ("rl", 3, 2, 0.4)
    assert st["losses"] == {"policy": 0.12, "value": 0.5} and st["ingest"] == {"steps": 10}
    assert 0 <= after["status_age_s"] < 60
    # counted: ep-1 failure (v1), ep-2 success (v1), ep-4 success (v2, eval); ep-3 aborted, demo expert
    assert [(p["episode_id"], p["success"]) for p in after["curve"]] == [
        ("ep-1", False), ("ep-2", True), ("ep-4", True)]
    assert [p["moving_average"] for p in after["curve"]] == pytest.approx([0.0, 0.5, 2 / 3])
    v = {p["policy_version"]: p for p in after["versions"]}
    assert (v[1]["episodes"], v[1]["successes"], v[1]["success_rate"], v[1]["eval_success_rate"]) == (2, 1, 0.5, None)
    assert (v[2]["episodes"], v[2]["eval_episodes"], v[2]["eval_success_rate"]) == (1, 1, 1.0)
    assert after["outcome_counts"] == {"success": 2, "failure": 1, "aborted": 1}
    assert after["expert_episodes"] == 1
    # the learner writes NaN for a loss over zero samples (Python's json allows it; JSON does not)
    status_path.write_text('{"phase": "sft", "losses": {"loss_eval": NaN, "loss_train": 1.5}, '
                           '"history": [{"x": Infinity}]}')
    with _client(server) as c:
        r = c.get("/v1/learning")
    assert r.status_code == 200, r.text
    assert r.json()["status"]["losses"] == {"loss_eval": None, "loss_train": 1.5}
    assert r.json()["status"]["history"] == [{"x": None}]


def test_moving_average_window():
    from server.ui.router import EpisodeSummary

    def ep(i: int, ok: bool) -> EpisodeSummary:
        return EpisodeSummary(robot_id="r", episode_id=f"e{i}", source="online",
                              outcome="success" if ok else "failure", label_source="auto", policy_version=i // 4,
                              n_steps=1, finished=float(i), cameras=[], first_step=0, last_step=0, relabeled=False)

    outcomes = [False, False, True, True, True, False, True, True]
    curve, versions, total = learning_curves([ep(i, o) for i, o in enumerate(outcomes)][::-1], window=3)
    assert total == 8
    assert [p.index for p in curve] == list(range(1, 9))
    expected = [np.mean(outcomes[max(0, i - 2): i + 1]) for i in range(len(outcomes))]
    assert [p.moving_average for p in curve] == pytest.approx(expected)
    assert [(v.policy_version, v.episodes, v.success_rate) for v in versions] == [(0, 4, 0.5), (1, 4, 0.75)]
    thin, _, total = learning_curves([ep(i, o) for i, o in enumerate(outcomes)], window=3, max_points=3)
    assert total == 8 and [p.index for p in thin] == [1, 5, 8]  # newest kept, averages from all episodes
    assert [p.moving_average for p in thin] == pytest.approx([expected[0], expected[4], expected[7]])


def test_served_files_are_the_package_files():
    from server.ui.router import STATIC_DIR

    assert {p.name for p in Path(STATIC_DIR).iterdir()} >= {"index.html", "app.js", "style.css"}
