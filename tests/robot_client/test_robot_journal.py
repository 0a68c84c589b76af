"""Steps a killed robot executed but never stored are counted: the execution journal (written
before every move) survives the kill, and the restarted client closes the episode with
`executed_steps`, which the fault audit (bench.faults.executed_not_stored) compares with the store.
In process, against the scripted stand-in server; the kill is a BaseException the loop cannot
catch, raised at a chosen tick, and the steps the streamer "had not written yet" are dropped."""

from __future__ import annotations

import pytest
from standins import standin_server

from bench.faults import executed_not_stored
from calibration.schema import default_mock_calibration
from deployment.robot import RobotConfig
from interface.robot import Arm
from robot_client.episode import EpisodeRunner, Rig, StatusReporter
from robot_client.loop import ControlLoop
from robot_client.outbox import Outbox
from robot_client.safety import SafetyFilter
from robot_client.server_client import ActionLink, ServerClient
from robot_client.streamer import Streamer
from sim.mock import MockRobot


class Killed(BaseException):
    """Stands in for SIGKILL: nothing in the client catches it."""


class KilledAfterMoves(Arm):
    def __init__(self, inner: Arm, moves: int):
        self.inner, self.left = inner, moves

    def reset_home(self):
        self.inner.reset_home()

    def state(self):
        if self.left == 0:
            raise Killed()
        return self.inner.state()

    def move_delta(self, action):
        self.left -= 1
        self.inner.move_delta(action)

    def hold(self):
        self.inner.hold()

    def recover(self):
        self.inner.recover()


@pytest.fixture
def server(tmp_path):
    p = standin_server(tmp_path)
    yield p
    p.stop()


def _runner(robot, arm, cfg, marker, emit, link) -> EpisodeRunner:
    client = ServerClient(cfg.server_url)
    loop = ControlLoop(arm, dict(robot.cameras), SafetyFilter.from_calibration(default_mock_calibration()), link,
                       cfg, emit=emit)
    rig = Rig(arm=arm, cameras=dict(robot.cameras), task="reach", new_episode=robot.new_episode,
              success=lambda: False)
    return EpisodeRunner(rig, loop, client, emit, cfg, StatusReporter(client), marker=marker)


def test_steps_executed_but_not_stored_before_a_kill_are_counted(tmp_path, server):
    robot = MockRobot(task="reach", image_size=32, cameras=("front",))
    cfg = RobotConfig(robot_id="k1", server_url=f"http://127.0.0.1:{server.port}", rate_hz=20, max_steps=40)
    link = ActionLink(ServerClient(cfg.server_url), 1.0, cfg.probe_interval_s).start()
    marker = tmp_path / "episode_in_progress.json"
    stored = []  # what reached the outbox before the kill: the first 3 steps only

    def streamer(msg):
        if getattr(msg, "step", 99) < 3:
            stored.append(msg)

    try:
        with pytest.raises(Killed):
            _runner(robot, KilledAfterMoves(robot.arm, 7), cfg, marker, streamer, link).run_one(seed=0)
        assert marker.exists()
        closed = []  # the restarted client
        _runner(robot, robot.arm, cfg, marker, closed.append, link).close_crashed_episode()
    finally:
        link.stop()
    (end,) = closed
    assert end.outcome == "aborted" and end.extra["end_reason"] == "client_crashed"
    assert end.extra.get("executed_steps") == 7 and end.n_steps == 7  # the old client reported 0 steps
    meta = {"extra": end.extra, "n_steps": end.n_steps}
    assert executed_not_stored(meta, n_stored=len(stored)) == 4  # the audit sees the 4 lost moves
    assert not marker.exists() and not marker.with_name(marker.name + ".executed").exists()


def test_a_kill_before_the_close_reaches_the_outbox_keeps_the_crash_marker(tmp_path, server):
    """The episode's close is handed to the streamer, whose thread has not written it to the outbox
    when the client is killed (here: the thread never runs, so the close stays in memory). The crash
    marker must outlive that window, so the restarted client closes the episode; deleting it right
    after the hand-over lost the close for good."""
    robot = MockRobot(task="reach", image_size=32, cameras=("front",))
    cfg = RobotConfig(robot_id="k2", server_url=f"http://127.0.0.1:{server.port}", rate_hz=20, max_steps=6)
    link = ActionLink(ServerClient(cfg.server_url), 1.0, cfg.probe_interval_s).start()
    marker = tmp_path / "episode_in_progress.json"
    outbox = Outbox(tmp_path / "outbox")
    streamer = Streamer(outbox, "tcp://127.0.0.1:9", "k2", "cfg")  # its thread is never started
    try:
        runner = _runner(robot, robot.arm, cfg, marker, streamer.submit, link)
        runner.persisted, runner.persist_timeout_s = streamer.persisted, 0.2
        result, end = runner.run_one(seed=0)
        assert len(outbox) == 0  # the close exists only in memory
        assert marker.exists()  # ... so the marker stays
        closed = []  # the restarted client (the killed one's memory is gone)
        _runner(robot, robot.arm, cfg, marker, closed.append, link).close_crashed_episode()
    finally:
        link.stop()
    (crashed,) = closed
    assert crashed.episode_id == end.episode_id and crashed.extra["end_reason"] == "client_crashed"
    assert not marker.exists()


def test_a_close_on_disk_removes_the_crash_marker(tmp_path, server):
    """The normal case: the streamer writes the close to the outbox, then the marker goes."""
    robot = MockRobot(task="reach", image_size=32, cameras=("front",))
    cfg = RobotConfig(robot_id="k3", server_url=f"http://127.0.0.1:{server.port}", rate_hz=20, max_steps=6)
    link = ActionLink(ServerClient(cfg.server_url), 1.0, cfg.probe_interval_s).start()
    marker = tmp_path / "episode_in_progress.json"
    outbox = Outbox(tmp_path / "outbox")
    streamer = Streamer(outbox, "tcp://127.0.0.1:9", "k3", "cfg").start()  # no learner: nothing is acked
    try:
        runner = _runner(robot, robot.arm, cfg, marker, streamer.submit, link)
        runner.persisted = streamer.persisted
        runner.run_one(seed=0)
    finally:
        streamer.stop()
        link.stop()
    assert not marker.exists() and len(outbox) >= 1  # the close waits in the outbox for the learner
