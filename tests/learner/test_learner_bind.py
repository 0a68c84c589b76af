"""The learner refuses to listen beyond loopback without a token (as the server does): robots'
hellos would go unchecked and anyone on the network could write episodes into the store."""

from __future__ import annotations

import os
import subprocess

import pytest
from standins import PY, ROOT, free_port

from deployment.network import learner_bind_refusal, zmq_bind_host


@pytest.mark.parametrize("bind, host", [("tcp://127.0.0.1:5555", "127.0.0.1"), ("tcp://*:5555", "*"),
                                        ("tcp://[::1]:5555", "[::1]"), ("ipc:///tmp/learner", None)])
def test_the_bind_host_of_an_endpoint(bind, host):
    assert zmq_bind_host(bind) == host


@pytest.mark.parametrize("bind", ["tcp://0.0.0.0:5555", "tcp://*:5555", "tcp://eth0:5555", "tcp://10.0.0.2:5555"])
def test_a_network_bind_needs_a_token(bind):
    refusal = learner_bind_refusal(bind, token="")
    assert refusal and bind in refusal and "learner.token" in refusal
    assert learner_bind_refusal(bind, token="s3cret") is None


@pytest.mark.parametrize("bind", ["tcp://127.0.0.1:5555", "tcp://localhost:5555", "tcp://[::1]:5555",
                                  "ipc:///tmp/learner.sock"])
def test_loopback_and_local_transports_need_none(bind):
    assert learner_bind_refusal(bind, token="") is None


def test_vlaloop_learn_refuses_a_network_bind_without_a_token_at_once(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("VLALOOP_")}
    env["VLALOOP_LEARNER__BIND"] = f"tcp://0.0.0.0:{free_port()}"
    r = subprocess.run([PY, "-m", "vlaloop.cli", "--run-dir", str(tmp_path / "run"), "learn", "--no-train"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 2, r.stderr[-2000:]
    (line,) = [ln for ln in r.stderr.splitlines() if "refusing" in ln]
    assert "learner.token is not configured" in line and "Traceback" not in r.stderr
