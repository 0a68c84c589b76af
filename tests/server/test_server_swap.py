"""Hot swap under load against a real server: 20 head-only versions while 4 clients hammer /v1/act,
then a NaN checkpoint published as LATEST is refused while the old version keeps serving."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import threading
import time

import httpx
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from bench.harness import ServerThread, publish_head, publish_tiny
from deployment.config import DeploymentConfig
from deployment.server import ServerConfig
from protocol.codec import packb, unpackb
from protocol.images import encode_jpeg
from protocol.messages import ActRequest

torch.set_num_threads(1)
MSGPACK = {"content-type": "application/msgpack"}


def mark(version: int) -> float:
    """Every version is stamped: its greedy actions all equal this value."""
    return 0.01 * version


class Hammer:
    """N client threads sending /v1/act back to back; records (version, actions) and failures."""

    def __init__(self, url: str, n: int = 4) -> None:
        self.url, self.stop = url, threading.Event()
        self.seen: list[list[tuple[int, float, float]]] = [[] for _ in range(n)]
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(n)]

    def _run(self, i: int) -> None:
        image = encode_jpeg(np.random.default_rng(i).integers(0, 255, (96, 96, 3), dtype=np.uint8))
        with httpx.Client(base_url=self.url, timeout=30) as c:
            step = 0
            while not self.stop.is_set():
                req = ActRequest(request_id=f"{i}-{step}", robot_id=f"rob{i}", episode_id="ep0", step=step,
                                 t_capture=time.time(), instruction="reach the red block",
                                 images={"front": image}, state=[0.5, 0, 0.2, 0, 0, 0, 1])
                try:
                    r = c.post("/v1/act", content=packb(req.to_wire()), headers=MSGPACK)
                    if r.status_code != 200:
                        self.failures.append(f"{r.status_code} {r.text}")
                        continue
                    resp = unpackb(r.content)
                    a = np.asarray(resp["actions"])
                    self.seen[i].append((resp["policy_version"], float(a.min()), float(a.max())))
                except Exception as e:  # a dropped connection is a failure too
                    self.failures.append(repr(e))
                step += 1

    def __enter__(self) -> Hammer:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    model, registry, v1 = publish_tiny(run_dir, mark=mark(1))
    config = DeploymentConfig(run_dir=str(run_dir), server=ServerConfig(watch_interval_s=0.02))
    with ServerThread(config) as srv:
        assert srv.wait_ready() == v1
        yield srv, model, registry


def _wait_version(srv, version: int, timeout: float = 20.0) -> None:
    holder = srv.app.state.holder
    deadline = time.monotonic() + timeout
    while holder.policy.version != version:
        assert time.monotonic() < deadline, f"version {version} not served: {holder.status()}"
        time.sleep(0.005)


def _wait_refused(srv, version: int, timeout: float = 20.0) -> None:
    holder = srv.app.state.holder
    deadline = time.monotonic() + timeout
    while version not in holder.status()["refused_versions"]:
        assert time.monotonic() < deadline, f"version {version} not refused: {holder.status()}"
        time.sleep(0.005)


def _wait_answered_by(hammer: Hammer, version: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not any(seen and seen[-1][0] >= version for seen in hammer.seen):
        assert time.monotonic() < deadline and not hammer.failures, hammer.failures[:3]
        time.sleep(0.002)


def _check_consistent(hammer: Hammer) -> set[int]:
    """No failures; every response's actions are the stamp of the version it names; per client the
    versions never go back."""
    assert not hammer.failures, hammer.failures[:5]
    versions = set()
    for seen in hammer.seen:
        assert len(seen) >= 2
        got = [v for v, _, _ in seen]
        assert got == sorted(got), "a client saw an older version after a newer one"
        for v, lo, hi in seen:
            assert lo == pytest.approx(mark(v), abs=1e-5) and hi == pytest.approx(mark(v), abs=1e-5), (v, lo, hi)
        versions.update(got)
    return versions


def test_twenty_swaps_under_concurrent_load(served):
    srv, model, registry = served
    with Hammer(srv.url) as hammer:
        _wait_answered_by(hammer, 1)
        published = []
        for _ in range(20):
            v = publish_head(model, registry, mark=mark(max(registry.versions()) + 1))
            published.append(v)
            _wait_version(srv, v)
            _wait_answered_by(hammer, v)  # clients really get answers from every version
    versions = _check_consistent(hammer)
    assert len(published) == 20 and published == sorted(published)
    assert set(published) <= versions
    status = srv.app.state.holder.status()
    assert status["swaps"] == 21 and status["swap_failures"] == 0
    assert status["last_swap"]["version"] == published[-1]


def _publish_nan_version(registry) -> int:
    """What a learner that diverged would leave: a complete, checksummed version whose head has NaN."""
    good = max(registry.versions())
    bad = good + 1
    tmp = registry.root / f".tmp-bad-{os.getpid()}"
    shutil.copytree(registry.path(good), tmp)
    head = load_file(str(tmp / "head.safetensors"))
    name = sorted(head)[0]
    head[name] = head[name].clone()
    head[name].view(-1)[0] = float("nan")
    save_file(head, str(tmp / "head.safetensors"))
    meta = json.loads((tmp / "meta.json").read_text())
    data = (tmp / "head.safetensors").read_bytes()
    meta["files"]["head.safetensors"] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    meta["version"] = bad
    (tmp / "meta.json").write_text(json.dumps(meta))
    os.rename(tmp, registry.path(bad))
    latest_tmp = registry.root / ".tmp-LATEST-bad"
    latest_tmp.write_text(f"{bad}\n")
    os.replace(latest_tmp, registry.root / "LATEST")
    return bad


def test_nan_checkpoint_is_refused_and_the_old_version_keeps_serving(served):
    srv, model, registry = served
    good = srv.app.state.holder.policy.version
    with Hammer(srv.url) as hammer:
        _wait_answered_by(hammer, good)
        bad = _publish_nan_version(registry)
        _wait_refused(srv, bad)
        time.sleep(0.3)  # still serving, still the old version
        assert srv.app.state.holder.policy.version == good
        after = publish_head(model, registry, mark=mark(bad + 1))  # the learner recovers: next version is taken
        _wait_version(srv, after)
        _wait_answered_by(hammer, after)
    versions = _check_consistent(hammer)
    assert bad not in versions and {good, after} <= versions
    with httpx.Client(base_url=srv.url) as c:
        info = c.get("/v1/policy").json()
        metrics = c.get("/metrics").text
    err = info["last_swap_error"]
    assert err["version"] == bad and not err["ok"] and "NaN" in err["error"], err
    assert bad in info["refused_versions"] and info["version"] == after
    assert "vlaloop_policy_swap_failures_total 1.0" in metrics
    assert f"vlaloop_policy_version {float(after)}" in metrics


def test_a_checkpoint_that_ships_code_is_refused_unimported_and_the_old_version_keeps_serving(served, tmp_path):
    from hostile_checkpoint import publish_evil_version

    srv, model, registry = served
    good = srv.app.state.holder.policy.version
    marker = tmp_path / "imported.txt"
    with Hammer(srv.url) as hammer:
        _wait_answered_by(hammer, good)
        bad = publish_evil_version(registry, marker, outside=tmp_path / "evil_model")
        _wait_refused(srv, bad)
        assert srv.app.state.holder.policy.version == good
        seen_at_refusal = [len(seen) for seen in hammer.seen]
        deadline = time.monotonic() + 20
        while any(len(seen) < n + 2 for seen, n in zip(hammer.seen, seen_at_refusal, strict=True)):
            assert time.monotonic() < deadline and not hammer.failures, hammer.failures[:3]
            time.sleep(0.005)  # every client is still answered after the refusal
    assert bad not in _check_consistent(hammer)
    assert not marker.exists(), "the checkpoint's code ran in the server"
    error = srv.app.state.holder.status()["last_swap_error"]
    assert error["version"] == bad and "outside the registry" in error["error"], error
