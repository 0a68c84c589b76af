"""`vlaloop robot --backend mock|metaworld|franka`: run the robot control client."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from pathlib import Path

from calibration.schema import (
    CalibrationError,
    CalibrationFile,
    default_mock_calibration,
    load_calibration,
    metaworld_calibration,
)
from deployment.robot import RobotConfig
from interface.teleop import InterventionSource
from robot_client.dry_run import HoldingArm
from robot_client.episode import EpisodeRunner, Rig, StatusReporter
from robot_client.hand_guiding import HandGuiding
from robot_client.loop import ControlLoop
from robot_client.outbox import Outbox
from robot_client.preflight import TokenRefused, check_learner_token, check_server_token
from robot_client.safety import SafetyFilter
from robot_client.scripted_operator import ScriptedOperator, intervention_config
from robot_client.server_client import ActionLink, ServerClient
from robot_client.spacemouse import SpaceMouseMapping, SpaceMouseTeleop
from robot_client.streamer import Streamer
from robot_client.tasks import franka_choice, simulator_choice
from robot_client.teleop import GamepadMapping, GamepadTeleop, TakeoverWatch, TeleopSpeeds

log = logging.getLogger(__name__)


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--backend", choices=["mock", "metaworld", "franka"], default=None)
    parser.add_argument("--robot-id", default=None)
    parser.add_argument("--server", dest="server_url", default=None, help="inference server URL")
    parser.add_argument("--learner", dest="learner_addr", default=None, help="learner ZeroMQ address")
    parser.add_argument("--calibration", default=None, help="calibration.yaml (required for franka)")
    parser.add_argument("--task", default=None, help="simulated task (mock: reach, push, pick_place; metaworld: e.g. button-press-topdown)")
    parser.add_argument("--instruction", default=None, help="franka: the instruction for the policy")
    parser.add_argument("--rate", dest="rate_hz", type=float, default=None, help="control rate, Hz")
    parser.add_argument("--episodes", type=int, default=None, help="stop after N episodes (0: forever)")
    parser.add_argument("--max-steps", type=int, default=None)
    parser.add_argument("--execution", choices=["open_loop", "ensemble"], default=None)
    parser.add_argument("--mode", choices=["sample", "greedy", "auto"], default=None)
    parser.add_argument("--outbox", dest="outbox_dir", default=None)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--dry-run", action="store_const", const=True, default=None,
                        help="everything but motion: the arm holds instead of moving (first day on hardware)")
    parser.add_argument("--teleop", choices=["none", "gamepad", "spacemouse", "hand", "scripted"], default=None,
                        help="a gamepad at the robot can take over while its dead-man button (LB) is held, a "
                             "SpaceMouse while its puck is deflected, hand: demonstrations by hand-guiding the arm "
                             "(--record-demos only) (docs/teleop.md); scripted: the simulator's "
                             "expert takes over when the policy goes wrong (docs/interventions.md); the operator "
                             "page can always take over")
    parser.add_argument("--record-demos", type=int, default=None,
                        help="first record N demonstrations by teleop (no policy needed; docs/teleop.md)")
    parser.add_argument("--operator", default=None, help="who drives with the device at the robot (stored "
                                                         "with each demonstration)")
    parser.add_argument("--scene-reset", choices=["auto", "operator", "default"], default=None,
                        help="operator: after each episode the arm goes home and the robot waits for the "
                             "operator's Ready (default on franka)")


def robot_config(args: argparse.Namespace, config) -> RobotConfig:
    """config.robot with the command-line overrides applied."""
    overrides = {k: getattr(args, k, None) for k in RobotConfig.model_fields}
    data = config.robot.model_dump()
    data.update({k: v for k, v in overrides.items() if v is not None})
    return RobotConfig.model_validate(data)


def calibration_for(cfg: RobotConfig) -> CalibrationFile:
    """The safety box. Real hardware refuses to start without a valid calibration.yaml."""
    if cfg.calibration:
        return load_calibration(cfg.calibration)
    if cfg.backend == "mock":
        return default_mock_calibration()
    if cfg.backend == "metaworld":
        return metaworld_calibration()
    raise CalibrationError("the franka backend needs a calibration.yaml with the workspace box "
                           "(--calibration PATH or robot.calibration); make one with "
                           "`vlaloop calibrate workspace --corners x0,y0,z0 x1,y1,z1 --out PATH` "
                           "or by guiding the arm: `vlaloop calibrate workspace --guide --out PATH`")


def build_interventions(cfg: RobotConfig, rig: Rig | None) -> list[InterventionSource]:
    """The device at the robot the operator can take over with, or the simulator's scripted
    operator (the page needs none: it comes through the server). Raises RuntimeError (no device, no
    expert), ImportError (library missing) or ValueError (a bad setting)."""
    if cfg.teleop == "none":
        return []
    if cfg.teleop == "hand":
        if rig is None:
            raise RuntimeError("hand-guiding needs the arm")
        if cfg.record_demos <= 0:
            raise ValueError("hand-guiding records demonstrations only (add --record-demos N): the policy must "
                             "never command an arm a person is moving")
        return [HandGuiding(rig.arm)]
    if cfg.teleop == "scripted":
        if rig is None or rig.expert is None:
            raise RuntimeError(f"the {cfg.backend} backend has no expert to drive (simulators only)")
        return [ScriptedOperator(rig.expert, intervention_config(cfg.scripted_operator))]
    speeds = TeleopSpeeds(1.0 / cfg.rate_hz, cfg.teleop_linear_speed, cfg.teleop_angular_speed)
    if cfg.teleop == "spacemouse":
        from hardware.spacemouse import PySpaceMouse

        return [SpaceMouseTeleop(PySpaceMouse(), speeds, SpaceMouseMapping.from_overrides(cfg.spacemouse_mapping))]
    from hardware.gamepad import PygameGamepad

    mapping = GamepadMapping.from_overrides(cfg.gamepad_mapping)
    return [GamepadTeleop(PygameGamepad(cfg.gamepad_index), speeds, mapping)]


def build_rig(cfg: RobotConfig, model_cameras: list[str], image_size: int, cal: CalibrationFile) -> Rig:
    rig = _backend_rig(cfg, model_cameras, image_size, cal)
    if cfg.dry_run:
        rig.arm = HoldingArm(rig.arm)
    return rig


def _backend_rig(cfg: RobotConfig, model_cameras: list[str], image_size: int, cal: CalibrationFile) -> Rig:
    if cfg.backend in ("mock", "metaworld"):
        if cfg.backend == "mock":
            from sim.mock import MockRobot as SimRobot
        else:
            from sim.metaworld.backend import MetaWorldRobot as SimRobot
        # a task or (metaworld) a task set; the split picks which of a set's tasks episodes draw
        robot = SimRobot(task=cfg.task, image_size=image_size, cameras=tuple(model_cameras), seed=cfg.seed,
                         split=cfg.split)
        choice = simulator_choice(robot, cfg.tasks, cfg.task, sim_task_names(cfg.backend))

        def new_episode(seed: int) -> str:
            if choice.instruction:  # the operator's (or the task list's) instruction: its own task
                return robot.new_episode_for(choice.instruction, seed)
            return robot.new_episode(seed, task=choice.task)

        return Rig(arm=robot.arm, cameras=dict(robot.cameras), task=cfg.task, new_episode=new_episode,
                   success=robot.success, max_steps=lambda: robot.max_steps, close=robot.close,
                   expert=lambda noise: robot.expert_action_pair(noise)[1], choice=choice)
    from hardware.franka import FrankaArm
    from hardware.realsense import RealSenseCamera

    if len(cfg.camera_serials) != len(model_cameras):
        raise ValueError(f"robot.camera_serials lists {len(cfg.camera_serials)} serials but the model "
                         f"wants {len(model_cameras)} cameras {model_cameras}; give one serial per camera")
    choice = franka_choice(cfg.tasks, cfg.task, cfg.instruction)  # before the arm: a missing instruction
    arm = FrankaArm.connect(cfg.franka_host, realtime=cfg.franka_realtime, home_position=cal.home.position, home_rpy=cal.home.rpy,
                            relative_dynamics_factor=cfg.relative_dynamics_factor,
                            gripper_speed=cfg.gripper_speed, gripper_force=cfg.gripper_force)
    cameras = {name: RealSenseCamera(name, serial, cfg.camera_width, cfg.camera_height, cfg.camera_fps)
               for name, serial in zip(model_cameras, cfg.camera_serials, strict=True)}

    def close() -> None:
        arm.close()
        for cam in cameras.values():
            cam.close()

    return Rig(arm=arm, cameras=cameras, task=choice.task, new_episode=lambda seed: choice.instruction,
               success=None, max_steps=None, close=close, choice=choice)


def sim_task_names(backend: str) -> tuple[str, ...]:
    if backend == "mock":
        from sim.mock.tasks import TASK_NAMES
    else:
        from sim.metaworld.tasks import TASK_NAMES
    return tuple(TASK_NAMES)


class RobotClient:
    """Everything one robot runs, wired together; ``run()`` blocks until stopped."""

    def __init__(self, cfg: RobotConfig, rig: Rig, cal: CalibrationFile, outbox_dir: str | Path,
                 config_hash: str, interventions: list[InterventionSource] | None = None):
        self.cfg = cfg
        self.rig = rig
        self.interventions = list(interventions or [])
        self.client = ServerClient(cfg.server_url, cfg.token, cfg.robot_id, timeout_s=cfg.reply_deadline_s)
        # A reply later than the deadline is dropped by the loop; twice the deadline the request is
        # abandoned, so a hung server cannot keep the link from sending newer observations.
        self.link = ActionLink(ServerClient(cfg.server_url, cfg.token, cfg.robot_id),
                               request_timeout_s=2 * cfg.reply_deadline_s, probe_interval_s=cfg.probe_interval_s,
                               silence_s=cfg.server_silence_s)
        self.outbox = Outbox(outbox_dir, cfg.outbox_max_bytes, cfg.outbox_warn_fraction)
        self.refusal = ""  # why a peer refused the robot's token mid-run (the client then stops)
        self.streamer = Streamer(self.outbox, cfg.learner_addr, cfg.robot_id, config_hash, token=cfg.token,
                                 ack_timeout_s=cfg.ack_timeout_s, on_refused=self._refused)
        self.status = StatusReporter(ServerClient(cfg.server_url, cfg.token, cfg.robot_id), extra=self._extra)
        self.loop = ControlLoop(rig.arm, rig.cameras, SafetyFilter.from_calibration(cal), self.link, cfg,
                                emit=self.streamer.submit,
                                on_state=lambda state, info: self.status.report(state, **info),
                                success=rig.success, interventions=self.interventions)
        if cfg.execution == "open_loop":  # (ensemble execution asks the policy every tick anyway)
            watch_client = ServerClient(cfg.server_url, cfg.token, cfg.robot_id)
            self.loop.arbiter.takeover_watch = TakeoverWatch(watch_client.takeover_wanted)
        self.runner = EpisodeRunner(rig, self.loop, self.client, self.streamer.submit, cfg, self.status,
                                    calibration=cal.model_dump(mode="json"),
                                    marker=Path(outbox_dir) / "episode_in_progress.json",
                                    persisted=self.streamer.persisted)

    def _refused(self, reason: str) -> None:
        if not self.refusal:
            log.error("%s; stopping", reason)
            self.refusal = reason
            self.stop()

    def _extra(self) -> dict:
        """Learner-side trouble the operator must see, added to every status post."""
        problems = []
        if self.outbox.near_full:
            problems.append(f"OUTBOX NEAR FULL: {self.outbox.bytes_used} of {self.cfg.outbox_max_bytes} "
                            f"bytes unacked (learner down?)")
        if not self.streamer.ready and self.streamer.last_error.startswith("learner refused hello"):
            problems.append(self.streamer.last_error)
        if self.streamer.dropped_full:
            problems.append(f"{self.streamer.dropped_full} steps dropped: outbox full")
        return {"detail": "; ".join(problems)[:1000]} if problems else {}

    def run(self, episodes: int = 0):
        self.streamer.start()
        self.link.start()
        self.status.start()
        if self.loop.arbiter.takeover_watch is not None:
            self.loop.arbiter.takeover_watch.start()
        for source in self.interventions:
            if hasattr(source, "start"):
                source.start()
        try:
            return self.runner.run(episodes)
        finally:
            self.rig.arm.hold()
            for source in self.interventions:
                if hasattr(source, "stop"):
                    source.stop()
            self.link.stop()
            self.status.stop()
            if self.loop.arbiter.takeover_watch is not None:
                self.loop.arbiter.takeover_watch.stop()

    def stop(self) -> None:
        self.runner.stop()

    def close(self, flush_timeout: float = 10.0) -> bool:
        flushed = self.streamer.flush(flush_timeout)
        self.streamer.stop()
        self.client.close()
        self.rig.close()
        return flushed


def run(args: argparse.Namespace, config) -> int:
    cfg = robot_config(args, config)
    try:
        cal = calibration_for(cfg)
    except CalibrationError as e:
        print(f"vlaloop robot: {e}", file=sys.stderr)
        return 2
    outbox_dir = cfg.outbox_dir or str(Path(config.run_dir) / "outbox" / cfg.robot_id)
    if cfg.teleop in ("gamepad", "spacemouse"):  # the device first: no device, no need to start the arm
        try:
            interventions = build_interventions(cfg, None)
        except (ValueError, ImportError, RuntimeError) as e:
            print(f"vlaloop robot: cannot start --teleop {cfg.teleop}: {e}", file=sys.stderr)
            return 2
    try:  # before the arm is touched: a refused token ends the client with one line
        check_tokens(cfg, config.config_hash())
    except TokenRefused as e:
        print(f"vlaloop robot: {e}", file=sys.stderr)
        return 2
    try:
        rig = build_rig(cfg, config.model.cameras, config.model.image_size, cal)
    except (ValueError, ImportError, RuntimeError) as e:
        print(f"vlaloop robot: cannot start the {cfg.backend} backend: {e}", file=sys.stderr)
        return 2
    if cfg.teleop not in ("gamepad", "spacemouse"):
        try:
            interventions = build_interventions(cfg, rig)
        except (ValueError, RuntimeError) as e:
            rig.close()
            print(f"vlaloop robot: cannot start --teleop {cfg.teleop}: {e}", file=sys.stderr)
            return 2
    client = RobotClient(cfg, rig, cal, outbox_dir, config.config_hash(), interventions)

    def on_signal(signum, frame):  # hold, finish the step, close the episode, flush the outbox
        log.info("signal %d: stopping", signum)
        client.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    results = client.run(cfg.episodes)
    # after a stop signal the learner may be stopping too: what is not acked stays in the outbox
    # and is resent on the next start
    flushed = client.close(flush_timeout=3.0 if client.runner.stopped else 30.0)
    outcomes = [end.outcome for _, end in results]
    log.info("robot client done: %d episodes %s; outbox %s", len(results), outcomes,
             "flushed" if flushed else f"holds {len(client.outbox)} unacked messages (resent on next start)")
    if client.refusal:
        print(f"vlaloop robot: {client.refusal}", file=sys.stderr)
        return 2
    return 0


def check_tokens(cfg: RobotConfig, config_hash: str) -> None:
    """Raises TokenRefused when the server or the learner refuses the robot's token."""
    server = ServerClient(cfg.server_url, cfg.token, cfg.robot_id)
    try:
        check_server_token(server, cfg.server_url)
    finally:
        server.close()
    check_learner_token(cfg.learner_addr, cfg.robot_id, config_hash, cfg.token, timeout_s=cfg.ack_timeout_s)
