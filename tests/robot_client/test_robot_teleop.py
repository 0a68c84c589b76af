"""Interventions through the real control loop: the real server (uvicorn in a thread, the tiny model
published so every greedy action is 0.001 on every axis), the real robot client with the mock arm,
a real ZeroMQ learner writing the real EpisodeStore. The operator page is played by HTTP calls to the
server's teleop endpoints (the browser test drives the page itself); the gamepad is a stand-in
device (hardware is the only stand-in) behind the real GamepadTeleop source.

Checked: a take-over mid-episode moves the arm as commanded, through the SafetyFilter (a command
out of the box is clamped onto it); the stored steps carry intervention, the source, the policy's
proposed action, on_policy False and no log-prob; a command older than the deadline holds the arm;
hand-back gives the policy a fresh query (no chunk planned while the operator drove is executed);
the gamepad's dead-man button; a lost device holds the arm and aborts the episode."""

from __future__ import annotations

import threading
import time

import httpx
import numpy as np
import pytest
from standins import standin_learner, wait_for
from test_robot_client import RecordingArm, stored_episodes

from calibration.schema import default_mock_calibration
from deployment.config import DeploymentConfig
from deployment.robot import RobotConfig
from deployment.server import ServerConfig
from interface.teleop import GamepadReading
from robot_client.cli import RobotClient
from robot_client.episode import Rig
from robot_client.teleop import GamepadMapping, GamepadTeleop, TeleopSpeeds
from sim.mock import MockRobot

ROBOT, OPERATOR = "robot-token-teleop", "operator-token-teleop"
POLICY_ACTION = 0.001  # the published model's greedy action, every dimension
pytestmark = [pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import torch

    from bench.harness import ServerThread, publish_tiny

    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("run")
    publish_tiny(run, mark=POLICY_ACTION)
    config = DeploymentConfig(run_dir=str(run), server=ServerConfig(robot_token=ROBOT, operator_token=OPERATOR,
                                                                     auto_label=True))
    with ServerThread(config) as srv:
        srv.wait_ready(60)
        yield srv


class Operator:
    """The operator page's calls, made with httpx."""

    def __init__(self, url: str, robot_id: str):
        self.http = httpx.Client(base_url=url, headers={"authorization": f"Bearer {OPERATOR}"}, timeout=10)
        self.robot_id = robot_id
        self.seq = 0

    def post(self, path: str, **kw) -> httpx.Response:
        r = self.http.post(f"/v1/robots/{self.robot_id}/{path}", **kw)
        assert r.status_code == 200, r.text
        return r

    def drive(self, translation, seconds: float, gripper=None, rotation=(0, 0, 0)) -> None:
        """Send a command every 50 ms for ``seconds``, as the page does while a key is held."""
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            self.seq += 1
            self.post("teleop", json={"seq": self.seq, "t_sent": time.time(), "translation": list(translation),
                                      "rotation": list(rotation), "gripper": gripper})
            time.sleep(0.05)

    def robot(self) -> dict:
        return next((r for r in self.http.get("/v1/robots").json() if r["robot_id"] == self.robot_id), {})


def make_client(tmp, server, learner, robot_id: str, interventions=None, **overrides):
    robot = MockRobot(task="reach", image_size=64, cameras=("front",))
    arm = RecordingArm(robot.arm)
    rig = Rig(arm=arm, cameras=dict(robot.cameras), task="reach", new_episode=lambda seed: robot.new_episode(seed),
              success=None)
    settings = {"rate_hz": 20, "max_steps": 400, "label_timeout_s": 10, "ack_timeout_s": 1.0, "mode": "greedy",
                "realtime_priority": 0, **overrides}  # teleop_deadline_s: the default 0.5 s
    cfg = RobotConfig(robot_id=robot_id, server_url=server.url, token=ROBOT,
                      learner_addr=f"tcp://127.0.0.1:{learner.port}", outbox_dir=str(tmp / f"outbox-{robot_id}"),
                      **settings)
    client = RobotClient(cfg, rig, default_mock_calibration(), cfg.outbox_dir, DeploymentConfig().config_hash(),
                         interventions)
    out: list = []
    thread = threading.Thread(target=lambda: out.extend(client.run(1)), daemon=True)
    thread.start()
    return client, arm, robot, thread, out


def moves_between(arm: RecordingArm, t0: float, t1: float) -> list[np.ndarray]:
    return [a for kind, t, a in arm.calls if kind == "move" and t0 <= t <= t1]


def test_page_takes_over_drives_through_the_safety_filter_holds_on_stale_and_hands_back(tmp_path, server, procs):
    learner = standin_learner(tmp_path, tmp_path / "episodes")
    procs.append(learner)
    # 1 m/s at 20 Hz asks for 5 cm per tick: above the 3 cm step limit, so every step is clamped too
    client, arm, robot, thread, results = make_client(tmp_path, server, learner, "tele0", teleop_linear_speed=1.0)
    op = Operator(server.url, "tele0")
    wait_for(lambda: (op.robot().get("step") or 0) >= 5, 60, "the policy's first steps")

    # refused while no episode would take it: unknown robot, a command before the take-over
    assert op.http.post("/v1/robots/nobody/teleop/take_over").status_code == 404
    assert op.http.post("/v1/robots/tele0/teleop", json={"seq": 1, "t_sent": 0, "translation": [1, 0, 0]}
                        ).status_code == 409

    op.post("teleop/take_over")
    wait_for(lambda: client.loop.episode.driving == "page", 10, "the robot to see the take-over")
    wait_for(lambda: op.robot()["state"] == "teleop", 10, "the robot to report 'teleop'")
    ws = default_mock_calibration().workspace
    op.drive([1, 0, 0], 1.2)  # +x at full speed: into the box's +x face (0.70 m)
    x = robot.arm.state().position[0]
    assert abs(x - ws.max[0]) < 1e-6, f"the arm should stand on the box face, x = {x}"
    view = op.robot()["teleop"]
    assert view["executed_seq"] is not None and view["server_to_exec_ms"] > 0

    # stale: the page stops sending; the arm holds after the deadline and moves no more
    t_stop = time.monotonic()
    time.sleep(1.2)
    assert moves_between(arm, t_stop + 0.8, t_stop + 1.2) == []
    op.drive([0, 1, 0], 0.5, gripper=0.0)  # fresh commands move it again: +y, gripper closed
    assert robot.arm.state().gripper == 0.0

    op.post("teleop/hand_back")
    wait_for(lambda: client.loop.episode.driving is None, 10, "the robot to see the hand-back")
    t_back = time.monotonic()  # every move from now on is the policy's
    wait_for(lambda: len(moves_between(arm, t_back, time.monotonic())) >= 8, 30, "the policy to drive again")
    assert op.robot()["teleop"] is None
    back = moves_between(arm, t_back, time.monotonic())
    # (x and y stay 0: the operator left the arm on the box's +x and +y faces, the filter clamps them)
    assert back and all(np.allclose(a[2:6], POLICY_ACTION) for a in back), "the policy drives again"
    op.post("command", json={"command": "end_episode"})
    episode_id = wait_for(lambda: (op.robot()["awaiting_label"] or [None])[0], 30, "the label request")
    op.post("label", json={"episode_id": episode_id, "outcome": "success"})
    thread.join(60)
    assert client.close(15)

    (result, end), = results
    assert end.outcome == "success" and result.counters.get("intervention_steps", 0) > 10
    steps = stored_episodes(tmp_path / "episodes")[end.episode_id]["records"]
    teleop = [s for s in steps if s.get("intervention")]
    policy = [s for s in steps if not s.get("intervention")]
    assert teleop and policy and len(teleop) == result.counters["intervention_steps"]
    for s in teleop:
        assert s["intervention_source"] == "page" and s["on_policy"] is False
        assert s["log_prob"] is None and s["action_chunk"] is None
        assert np.linalg.norm(s["action"][:3]) <= 0.03 + 1e-9  # the step limit
    proposed = [s["proposed_action"] for s in teleop if s["proposed_action"] is not None]
    assert len(proposed) > len(teleop) / 2 and np.allclose(proposed, POLICY_ACTION)
    safety = {k: sum(s["safety"].get(k, 0) for s in steps) for k in
              ("clamp_workspace", "clamp_translation", "hold_teleop_stale")}
    assert safety["clamp_workspace"] > 0 and safety["clamp_translation"] > 0 and safety["hold_teleop_stale"] > 0
    # +x moves stopped on the box face: steps driving into it are clamped to zero x
    xs = [s["state"][0] for s in steps]
    assert max(xs) <= ws.max[0] + 1e-6
    # the hand-back: the first policy step after the operator's last one is a fresh decision (its own
    # observation, chunk index 0), and no chunk asked for while the operator drove is ever executed
    last_teleop = max(s["step"] for s in teleop)
    first_back = next(s for s in steps if s["step"] > last_teleop)
    assert first_back["action_chunk"] is not None and first_back["chunk_index"] == 0
    assert first_back["obs_step"] == first_back["step"] and first_back["on_policy"] is True
    timing = end.extra["timing"]
    assert timing["teleop_commands"] > 5 and timing["teleop_latency_p50_ms"] > 0
    print(f"\nteleop: {len(teleop)} operator steps, {len(policy)} policy steps; safety {safety}; "
          f"server->executed p50 {timing['teleop_latency_p50_ms']:.1f} ms p99 {timing['teleop_latency_p99_ms']:.1f} ms")


class StandInGamepad:
    """Hardware stand-in: a gamepad whose sticks and buttons the test sets; unplug() makes read() fail."""

    def __init__(self):
        self.axes = [0.0] * 6
        self.buttons = [False] * 11
        self.gone = False
        self.lock = threading.Lock()

    def set(self, axes=None, **buttons):
        with self.lock:
            if axes is not None:
                self.axes = list(axes)
            for name, pressed in buttons.items():
                self.buttons[{"lb": 4, "a": 0, "b": 1}[name]] = pressed

    def read(self) -> GamepadReading:
        with self.lock:
            if self.gone:
                raise RuntimeError("gamepad 0 lost: unplugged")
            return GamepadReading(tuple(self.axes), tuple(self.buttons), ((0, 0),))

    def close(self):
        pass


def test_gamepad_dead_man_drives_releases_and_a_lost_pad_holds_then_aborts(tmp_path, server, procs):
    learner = standin_learner(tmp_path, tmp_path / "episodes")
    procs.append(learner)
    pad = StandInGamepad()
    source = GamepadTeleop(pad, TeleopSpeeds(1 / 20, 0.1, 0.5), GamepadMapping())
    client, arm, robot, thread, results = make_client(tmp_path, server, learner, "pad0", [source],
                                                      teleop_lost_abort_s=1.0)
    op = Operator(server.url, "pad0")
    wait_for(lambda: (op.robot().get("step") or 0) >= 5, 60, "the policy's first steps")

    # stick pushed without the dead-man: the policy keeps driving
    pad.set(axes=[0, -1, 0, 0, 0, 0])
    time.sleep(0.3)
    assert client.loop.episode.driving is None
    # dead-man held, left stick forward: +x at 0.1 m/s = 5 mm per tick, exactly
    pad.set(lb=True)
    wait_for(lambda: client.loop.episode.driving == "gamepad", 10, "the gamepad to take over")
    t0 = time.monotonic()
    time.sleep(0.5)
    moves = moves_between(arm, t0 + 0.1, time.monotonic())
    assert moves and all(np.allclose(a[:6], [0.005, 0, 0, 0, 0, 0]) for a in moves)
    pad.set(a=True)  # close the gripper; it stays closed after the button is let go
    time.sleep(0.2)
    pad.set(a=False)
    time.sleep(0.2)
    assert robot.arm.state().gripper == 0.0
    # released: the policy drives again
    pad.set(lb=False)
    wait_for(lambda: client.loop.episode.driving is None, 10, "the hand-back")
    t1 = time.monotonic()
    time.sleep(0.6)
    assert all(np.allclose(a[:6], POLICY_ACTION) for a in moves_between(arm, t1 + 0.3, time.monotonic()))
    # held again, then unplugged: the last reading ages, the arm holds, the episode is aborted
    pad.set(lb=True)
    wait_for(lambda: client.loop.episode.driving == "gamepad", 10, "the second take-over")
    t_unplug = time.monotonic()
    pad.gone = True
    thread.join(30)
    assert moves_between(arm, t_unplug + 0.8, time.monotonic()) == []
    client.close(15)
    source.stop()
    (result, end), = results
    assert result.end_reason == "teleop_lost" and end.outcome == "aborted"
    steps = stored_episodes(tmp_path / "episodes")[end.episode_id]["records"]
    teleop = [s for s in steps if s.get("intervention")]
    assert teleop and {s["intervention_source"] for s in teleop} == {"gamepad"}
    assert all(s["on_policy"] is False and s["log_prob"] is None for s in teleop)
    assert result.counters.get("hold_teleop_stale", 0) > 0  # the ticks held after the unplug


def test_a_take_over_preempts_the_open_loop_chunk_within_one_period(tmp_path, server, procs):
    """An open-loop robot asks the policy once per chunk (4 actions at 10 Hz, no prefetch here), so
    the reply that carries a take-over came up to a chunk late: the arm ran the rest of the chunk.
    Now the take-over reaches the robot through its long-poll (TakeoverWatch) and the chunk stops:
    taken over right after a chunk started (>= 3 actions left), the arm makes at most the one policy
    move of the tick already running, then holds until the operator's command arrives. Counted on the
    arm's own log (policy moves carry the published model's constant action), not on timings."""
    learner = standin_learner(tmp_path, tmp_path / "episodes")
    procs.append(learner)
    client, arm, robot, thread, results = make_client(tmp_path, server, learner, "tele5", rate_hz=10,
                                                      prefetch_steps=0)
    op = Operator(server.url, "tele5")
    try:
        wait_for(lambda: (op.robot().get("step") or 0) >= 3, 60, "the policy's first steps")
        assert client.loop.arbiter.takeover_watch is not None and not client.loop.arbiter.takeover_watch.disabled

        def chunk_just_started() -> bool:
            with arm.lock:
                kind, t, _ = arm.calls[-1]
            ep = client.loop.episode
            left = ep.execution.chunk.ends() - ep.tick - 1 if ep and ep.execution.chunk else 0
            return kind == "move" and time.monotonic() - t < 0.02 and left >= 3

        # polled every 5 ms: at the loop's own 100 ms the poll can lock in phase and never see the window
        wait_for(chunk_just_started, 30, "a chunk with 3 actions left", interval=0.005)
        t_take = time.monotonic()
        op.post("teleop/take_over")
        t_taken = time.monotonic()
        wait_for(lambda: client.loop.episode.driving == "page", 10, "the operator driving")
        t_driving = time.monotonic()
    finally:
        client.stop()
        thread.join(30)
        client.close(10)
    policy_moves = [a for a in moves_between(arm, t_take, t_driving) if np.allclose(a[:6], POLICY_ACTION)]
    ticks = [t.started for t in client.runner.results[0][0].timings if t_taken < t.started < t_driving]
    print(f"\ntake-over POST {1e3 * (t_taken - t_take):.0f} ms; policy moves after it {len(policy_moves)}; "
          f"operator driving after {len(ticks)} tick(s)")
    assert len(policy_moves) <= 1, f"{len(policy_moves)} policy moves after the take-over (the chunk ran on)"
    # (the loop holds for the operator's first command, counted as hold_takeover_pending, unless that
    # command's reply already came within the tick's reply budget)
    assert client.runner.results[0][0].counters.get("takeovers") == 1
