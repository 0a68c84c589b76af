"""A refused token fails fast: `vlaloop robot` with a token the real server (uvicorn, robot_token
set) or the real learner ingest (ZeroMQ ROUTER, learner.token set) refuses exits 2 at once with
one line naming the fix, before the arm is touched ("at once" is judged by the client's own log:
no episode started, not by the wall clock); a learner that refuses the hello later (it was
not up at the start) stops the client with the same line."""

from __future__ import annotations

import os
import subprocess
import time

import pytest
from standins import PY, ROOT

from bench.harness import ServerThread
from deployment.config import load_config
from episodes.store import EpisodeStore
from learner.ingest import Ingest

SERVER_TOKEN, LEARNER_TOKEN = "robot-secret", "learner-secret"


class _NoPolicy:
    """A server with no checkpoint yet: the token checks need none."""

    def latest(self) -> int | None:
        return None

    def load(self, version, base):  # pragma: no cover - never called: latest() is None
        raise AssertionError("no version to load")


@pytest.fixture(scope="module")
def peers(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("tokens")
    config = load_config(environ={}, run_dir=str(run_dir))
    config.server.robot_token, config.server.operator_token = SERVER_TOKEN, "operator-secret"
    ingest = Ingest(EpisodeStore(run_dir / "episodes"), config.config_hash(), bind="tcp://127.0.0.1:0",
                    token=LEARNER_TOKEN)
    endpoint = ingest.start()
    with ServerThread(config, loader=_NoPolicy()) as server:
        yield server.url, endpoint
    ingest.stop()


def _robot(tmp_path, server_url: str, learner: str, token: str | None, timeout: float = 60):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLALOOP_")}
    if token is not None:
        env["VLALOOP_ROBOT__TOKEN"] = token
    return subprocess.run([PY, "-m", "vlaloop.cli", "--run-dir", str(tmp_path / "run"), "robot", "--backend", "mock",
                        "--server", server_url, "--learner", learner, "--episodes", "1", "--max-steps", "10"],
                       cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


def _last_line(stderr: str) -> str:
    return stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("token, why", [(None, "missing bearer token"), ("wrong", "token not valid")])
def test_a_token_the_server_refuses_exits_at_once(tmp_path, peers, token, why):
    server_url, learner = peers
    r = _robot(tmp_path, server_url, learner, token)
    assert r.returncode == 2, r.stderr[-2000:]
    line = _last_line(r.stderr)
    assert line.startswith("vlaloop robot: the server at") and why in line and "robot.token" in line
    assert "Traceback" not in r.stderr and "episode" not in r.stderr  # no episode was started


def test_a_token_the_learner_refuses_exits_at_once(tmp_path, peers):
    server_url, learner = peers
    r = _robot(tmp_path, server_url, learner, SERVER_TOKEN)  # the server takes it, the learner does not
    assert r.returncode == 2, r.stderr[-2000:]
    line = _last_line(r.stderr)
    assert line.startswith("vlaloop robot: the learner refused the robot's token (bad token")
    assert "learner.token" in line and "Traceback" not in r.stderr and "episode" not in r.stderr


def test_a_learner_that_comes_up_later_and_refuses_the_token_stops_the_client(tmp_path, peers):
    import socket

    server_url, _ = peers
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLALOOP_")}
    env["VLALOOP_ROBOT__TOKEN"] = SERVER_TOKEN
    proc = subprocess.Popen([PY, "-m", "vlaloop.cli", "--run-dir", str(tmp_path / "run"), "robot", "--backend",
                             "mock", "--server", server_url, "--learner", f"tcp://127.0.0.1:{port}",
                             "--episodes", "0"], cwd=ROOT, stderr=subprocess.PIPE, text=True, env=env)
    ingest = None
    try:
        outbox = tmp_path / "run" / "outbox"
        deadline = time.monotonic() + 60
        while not any(outbox.glob("*/*.msg")) and time.monotonic() < deadline:  # running: it streams steps
            time.sleep(0.1)
        ingest = Ingest(EpisodeStore(tmp_path / "episodes"), load_config(environ={}).config_hash(),
                        bind=f"tcp://127.0.0.1:{port}", token=LEARNER_TOKEN)
        ingest.start()
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if ingest is not None:
            ingest.stop()
    assert proc.returncode == 2, err[-2000:]
    assert _last_line(err).startswith("vlaloop robot: the learner refused the robot's token (bad token")
