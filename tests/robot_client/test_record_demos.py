"""Recording demonstrations, the scene reset and each episode's task, through the real server (uvicorn
in a thread, NO checkpoint: it serves teleop only), the real robot client (mock arm) and a real
ZeroMQ learner writing the real EpisodeStore. The 3D mouse is a stand-in device behind the real
SpaceMouseTeleop source (hardware is the only stand-in); the operator page is played by HTTP calls
(the rehearsal in tests/system drives the page itself).

Checked: between episodes the arm is home and holds until the operator's ready (here the mouse's
button); while recording, the arm holds until someone drives and only the operator's steps are
stored, with who drove and the device; the next episode takes the task the page set, and the mock
refuses an instruction it has no task for, with a message the page shows."""

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
from interface.teleop import SpaceMouseReading
from robot_client.cli import RobotClient, build_rig
from robot_client.spacemouse import SpaceMouseMapping, SpaceMouseTeleop
from robot_client.teleop import TeleopSpeeds

ROBOT, OPERATOR = "robot-token-record", "operator-token-record"
RATE_HZ = 20
pytestmark = [pytest.mark.timeout(180)]


class Mouse:
    """Hardware stand-in: a SpaceMouse whose puck the test pushes and whose buttons it presses."""

    def __init__(self):
        self.translation = (0.0, 0.0, 0.0)
        self.buttons = [False, False]

    def read(self) -> SpaceMouseReading:
        return SpaceMouseReading(self.translation, (0.0, 0.0, 0.0), tuple(self.buttons))

    def press(self, button: int) -> None:
        self.buttons[button] = True
        time.sleep(0.1)  # read at 100 Hz
        self.buttons[button] = False

    def close(self):
        pass


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from bench.harness import ServerThread

    run = tmp_path_factory.mktemp("run")  # no checkpoints/: the server never has a policy here
    config = DeploymentConfig(run_dir=str(run), server=ServerConfig(robot_token=ROBOT, operator_token=OPERATOR))
    with ServerThread(config) as srv:
        yield srv


def start_client(tmp, server, learner, robot_id: str, interventions=None, **overrides):
    settings = {"rate_hz": RATE_HZ, "max_steps": 6, "label_timeout_s": 20, "ack_timeout_s": 1.0, "record_demos": 5,
                "scene_reset": "operator", "realtime_priority": 0, "operator": "carol", **overrides}
    cfg = RobotConfig(robot_id=robot_id, backend="mock", task="reach", server_url=server.url, token=ROBOT,
                      learner_addr=f"tcp://127.0.0.1:{learner.port}", outbox_dir=str(tmp / f"outbox-{robot_id}"),
                      **settings)
    cal = default_mock_calibration()
    rig = build_rig(cfg, ["front"], 64, cal)
    arm = rig.arm = RecordingArm(rig.arm)
    client = RobotClient(cfg, rig, cal, cfg.outbox_dir, DeploymentConfig().config_hash(), interventions)
    thread = threading.Thread(target=client.run, daemon=True)
    thread.start()
    return client, arm, thread


class Operator:
    def __init__(self, url: str, robot_id: str):
        self.http = httpx.Client(base_url=url, headers={"authorization": f"Bearer {OPERATOR}"}, timeout=10)
        self.robot_id = robot_id

    def post(self, path: str, status: int = 200, **kw) -> httpx.Response:
        r = self.http.post(f"/v1/robots/{self.robot_id}/{path}", **kw)
        assert r.status_code == status, r.text
        return r

    def robot(self) -> dict:
        return next((r for r in self.http.get("/v1/robots").json() if r["robot_id"] == self.robot_id), {})

    def scene(self) -> dict:
        return next((v for v in self.http.get("/v1/scene").json() if v["robot_id"] == self.robot_id), {})

    def wait_state(self, state: str, timeout: float = 30) -> dict:
        return wait_for(lambda: (r := self.robot()).get("state") == state and r, timeout, f"state {state!r}")


def moves(arm: RecordingArm) -> list[np.ndarray]:
    with arm.lock:
        return [a for kind, _, a in arm.calls if kind == "move"]


def test_recording_waits_for_ready_holds_until_driven_and_stores_the_operators_steps(tmp_path, server, procs):
    learner = standin_learner(tmp_path, tmp_path / "episodes")
    procs.append(learner)
    ready = httpx.get(f"{server.url}/readyz", timeout=5)
    assert ready.status_code == 503 and ready.json()["teleop_only"] is True
    mouse = Mouse()
    source = SpaceMouseTeleop(mouse, TeleopSpeeds(1 / RATE_HZ, 0.1, 0.5), SpaceMouseMapping(release_s=0.3))
    client, arm, thread = start_client(tmp_path, server, learner, "rec0", [source])
    op = Operator(server.url, "rec0")
    try:
        op.wait_state("waiting_reset")  # home, waiting for the operator's ready: nothing moves
        time.sleep(0.5)
        assert moves(arm) == [] and any(kind == "reset" for kind, _, _ in arm.calls)
        assert op.scene()["waiting_reset"] is True
        mouse.press(1)  # the mouse's right button: the scene is reset
        wait_for(lambda: client.loop.episode is not None, 10, "the demo episode")
        op.wait_state("running")
        time.sleep(0.5)  # recording, nobody drives: the arm holds and no step is recorded
        assert moves(arm) == [] and client.loop.episode.n_steps == 0
        assert client.loop.episode.totals.get("hold_no_operator", 0) >= 5
        mouse.translation = (0.0, 0.8, 0.0)  # puck pushed forward: +x
        wait_for(lambda: op.robot().get("state") == "waiting_label" or (op.robot().get("awaiting_label") or []),
                 10, "the demo to end at its 6 steps")
        mouse.translation = (0.0, 0.0, 0.0)
        episode = op.robot()["awaiting_label"][0]
        op.post("label", json={"episode_id": episode, "outcome": "success"})
        wait_for(lambda: client.runner.demos_recorded == 1, 10, "the demo to count")
        op.wait_state("waiting_reset")  # the next one waits for the operator again
    finally:
        client.stop()
        thread.join(30)
        client.close(10)
    executed = moves(arm)
    assert len(executed) == 6 and all(a[0] > 0.003 and abs(a[1]) < 1e-9 for a in executed)
    wait_for(lambda: stored_episodes(tmp_path / "episodes"), 10, "the stored demo")
    (stored,) = stored_episodes(tmp_path / "episodes").values()
    meta, records = stored["meta"], stored["records"]
    assert meta["purpose"] == "demo" and meta["mode"] == "record" and meta["outcome"] == "success"
    assert meta["demo"] == {"drivers": {"spacemouse": ["carol"]}, "devices": ["spacemouse"]}
    assert meta["reset"] == "operator" and meta["reset_s"] >= 0.5
    assert len(records) == 6
    assert all(r["intervention"] and r["intervention_source"] == "spacemouse" and r["on_policy"] is False
               and r["proposed_action"] is None and r["log_prob"] is None for r in records)


def test_next_task_from_the_page_and_the_mock_refuses_an_instruction_it_has_no_task_for(tmp_path, server, procs):
    learner = standin_learner(tmp_path, tmp_path / "episodes")
    procs.append(learner)
    client, arm, thread = start_client(tmp_path, server, learner, "task0")
    op = Operator(server.url, "task0")
    try:
        op.wait_state("waiting_reset")
        names = [t["name"] for t in op.scene()["tasks"]]
        assert {"reach", "push", "pick_place"} <= set(names)
        refused = op.http.post("/v1/robots/task0/next_task", json={"task": "juggle"})
        assert refused.status_code == 422 and "no task 'juggle'" in refused.text
        op.post("next_task", json={"instruction": "make coffee"})
        op.post("ready")
        running = op.wait_state("running")
        assert "make coffee" not in running["instruction"] and running["task"] == "reach"
        note = wait_for(lambda: op.scene()["refused"], 10, "the refusal on the page")
        assert "task refused" in note and "no task for the instruction 'make coffee'" in note
        op.post("command", json={"command": "end_episode"})  # nobody drove: not a demo, no label asked
        op.wait_state("waiting_reset")
        assert "no task for the instruction 'make coffee'" in op.robot()["detail"]
        op.post("next_task", json={"instruction": "Push the blue block to the left"})
        op.post("ready")
        running = op.wait_state("running")
        assert running["instruction"] == "Push the blue block to the left" and running["task"] == "push"
        assert op.scene()["refused"] == "" and op.scene()["task"] == "push"
        assert op.http.post("/v1/robots/task0/ready").status_code == 409  # not waiting now
    finally:
        client.stop()
        thread.join(30)
        client.close(10)
    sim_task = client.rig.choice
    assert (sim_task.task, sim_task.instruction) == ("push", "Push the blue block to the left")


def test_spacemouse_axes_map_to_the_base_frame_and_a_bad_setting_or_no_device_is_one_line(tmp_path):
    import subprocess
    import sys

    m = SpaceMouseMapping()
    pushed = SpaceMouseReading((0.5, 1.0, -1.0), (0.0, 0.0, 0.05), ())  # right, forward, down; yaw in dead zone
    translation, rotation = m.intent(pushed)
    assert translation[0] == pytest.approx(1.0) and translation[1] < -0.4 and translation[2] == pytest.approx(-1.0)
    assert rotation == [0.0, 0.0, 0.0]
    with pytest.raises(ValueError, match="unknown keys \\['dead_zon'\\]"):
        SpaceMouseMapping.from_overrides({"dead_zon": 0.1})
    assert SpaceMouseMapping.from_overrides({"signs_rotation": [1, 1, -1]}).signs_rotation == (1.0, 1.0, -1.0)
    # this machine has no SpaceMouse (nor libhidapi): the client refuses to start, in one line
    r = subprocess.run([sys.executable, "-m", "vlaloop.cli", "--log-file", "none", "robot", "--backend", "mock",
                        "--teleop", "spacemouse", "--episodes", "1"], capture_output=True, text=True, timeout=120,
                       cwd=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vlaloop robot: cannot start --teleop spacemouse: no SpaceMouse")


def test_the_franka_takes_any_instruction_and_its_task_list_by_name():
    from deployment.robot import TaskOption
    from robot_client.tasks import franka_choice

    with pytest.raises(ValueError, match="needs an instruction"):
        franka_choice([], "reach", "")
    choice = franka_choice([TaskOption(name="stack", instruction="stack the red block on the blue one"),
                            TaskOption(name="wipe", instruction="wipe the table")], "stack", "")
    assert (choice.task, choice.instruction) == ("stack", "stack the red block on the blue one")
    choice.choose("wipe", None)
    assert (choice.task, choice.instruction) == ("wipe", "wipe the table")
    choice.choose(None, "wipe the table slowly")  # a typed instruction: the task name stays
    assert (choice.task, choice.instruction) == ("wipe", "wipe the table slowly")
    with pytest.raises(ValueError, match="no task 'juggle'"):
        choice.choose("juggle", None)
    assert (choice.task, choice.instruction) == ("wipe", "wipe the table slowly")  # unchanged


def test_hand_guiding_records_the_pose_changes_as_actions_and_commands_nothing(tmp_path, server, procs):
    """The operator's hands are the test moving the simulated arm's pose (hardware is the only stand-in)."""
    from robot_client.hand_guiding import HandGuiding

    learner = standin_learner(tmp_path, tmp_path / "episodes")
    procs.append(learner)
    settings = {"rate_hz": RATE_HZ, "max_steps": 8, "label_timeout_s": 20, "ack_timeout_s": 1.0, "record_demos": 1,
                "scene_reset": "auto", "realtime_priority": 0, "operator": "dave", "teleop": "hand"}
    cfg = RobotConfig(robot_id="hand0", backend="mock", task="reach", server_url=server.url, token=ROBOT,
                      learner_addr=f"tcp://127.0.0.1:{learner.port}", outbox_dir=str(tmp_path / "outbox"), **settings)
    cal = default_mock_calibration()
    rig = build_rig(cfg, ["front"], 64, cal)
    scene = rig.arm._robot.scene
    arm = rig.arm = RecordingArm(rig.arm)
    client = RobotClient(cfg, rig, cal, cfg.outbox_dir, DeploymentConfig().config_hash(), [HandGuiding(arm)])
    thread = threading.Thread(target=client.run, daemon=True)
    thread.start()
    op = Operator(server.url, "hand0")
    try:
        op.wait_state("running")
        time.sleep(0.3)
        assert client.loop.episode.n_steps == 0  # nobody guides: nothing recorded
        while not (op.robot().get("awaiting_label") or []):  # the hands push the arm +x, 2 mm per 25 ms
            with rig.arm.inner._robot.lock:
                scene.state.ee = scene.state.ee + np.array([0.002, 0.0, 0.0])
            time.sleep(0.025)
        op.post("label", json={"episode_id": op.robot()["awaiting_label"][0], "outcome": "success"})
        wait_for(lambda: client.runner.demos_recorded == 1, 10, "the guided demo to count")
    finally:
        client.stop()
        thread.join(30)
        client.close(10)
    assert moves(arm) == []  # the loop commanded no motion while the hands moved the arm
    wait_for(lambda: stored_episodes(tmp_path / "episodes"), 10, "the stored demo")
    (stored,) = stored_episodes(tmp_path / "episodes").values()
    records = stored["records"]
    assert stored["meta"]["demo"] == {"drivers": {"hand": ["dave"]}, "devices": ["hand"]}
    assert len(records) == 8 and all(r["intervention_source"] == "hand" for r in records)
    for now, after in zip(records, records[1:], strict=False):  # each action takes its state to the next one
        assert np.allclose(np.array(now["state"][:3]) + now["action"][:3], after["state"][:3], atol=1e-5)
        assert now["action"][0] >= 0.0019  # at least one 2 mm push per 50 ms tick
    with pytest.raises(ValueError, match="records demonstrations only"):
        from robot_client.cli import build_interventions

        build_interventions(cfg.model_copy(update={"record_demos": 0}), rig)
