"""Dead or busy? The robot's liveness check against real sockets: a server whose /healthz answers
late (a loaded machine) must not abort a healthy episode; a refused connection is a dead server at
once; a server that accepts connections but answers nothing is dead after `server_silence_s`."""

from __future__ import annotations

import socket
import time

from standins import free_port, standin_learner, standin_server
from test_robot_client import make_client, run_in_thread

from robot_client.server_client import ActionLink, ServerClient


def test_slow_healthz_on_a_busy_machine_does_not_abort_a_healthy_episode(tmp_path, procs):
    # Every /healthz answer takes 0.35 s, longer than the link's 0.2 s probe timeout; /v1/act is fine.
    server = standin_server(tmp_path, slow_healthz_s=0.35)
    procs.append(server)
    learner = standin_learner(tmp_path, tmp_path / "episodes")
    procs.append(learner)
    client, arm, _ = make_client(tmp_path, server.port, learner.port, max_steps=40)
    thread, results = run_in_thread(client, episodes=1)
    thread.join(90)
    link = client.loop.link
    assert client.close(15)
    (result, end), = results
    assert not result.aborted, (result.end_reason, result.detail)  # the old link aborted: server_lost
    assert link.slow_probes >= 1  # probes did time out while the arm was between chunks
    assert result.n_steps == 40 and end.outcome in ("success", "failure")


def _wait_down(link: ActionLink, timeout: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if link.down:
            return time.monotonic() - t0
        time.sleep(0.005)
    raise AssertionError(f"link not down after {timeout} s")


def test_a_refused_connection_is_a_dead_server_at_once():
    port = free_port()  # nothing listens there
    link = ActionLink(ServerClient(f"http://127.0.0.1:{port}"), 0.5, 0.025, silence_s=30.0).start()
    try:
        _wait_down(link, 10.0)  # far below silence_s: refused is definitive
        assert "refused" in link.down
    finally:
        link.stop()


def test_a_server_that_answers_nothing_is_dead_after_the_silence_budget():
    with socket.socket() as sock:  # accepts TCP connections (kernel backlog), never answers
        sock.bind(("127.0.0.1", 0))
        sock.listen(16)
        link = ActionLink(ServerClient(f"http://127.0.0.1:{sock.getsockname()[1]}"), 0.5, 0.025,
                          silence_s=0.6).start()
        try:
            waited = _wait_down(link, 20.0)
            assert "silent" in link.down and waited >= 0.6
            assert link.slow_probes >= 1
        finally:
            link.stop()
