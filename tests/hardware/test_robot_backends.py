"""The franka and realsense backends against the REAL franky / pyrealsense2 libraries: motions,
poses and configs are the libraries' own classes; only the connection objects (franky.Robot,
franky.Gripper, rs.pipeline) are recording stand-ins that check what the backend asked for."""

from __future__ import annotations

import math

import franky
import numpy as np
import pyrealsense2 as rs
import pytest

from hardware.franka import FrankaArm, base_delta_to_relative, matrix_to_quat_xyzw, quat_xyzw_to_matrix
from hardware.realsense import RealSenseCamera
from interface.action import matrix_to_rpy, rotvec_to_matrix, rpy_to_matrix
from interface.robot import ArmError

HOME_POS = [0.5, 0.0, 0.2]
HOME_RPY = [math.pi, 0.0, 0.0]  # gripper pointing down


class RecordingRobot:
    """Has franky.Robot's API surface that FrankaArm uses; keeps a pose as a real franky.Affine."""

    def __init__(self, pose: franky.Affine):
        self.pose = pose
        self.moves: list[tuple[object, bool]] = []
        self.has_errors = False
        self.is_in_control = False
        self.recovered = 0
        self.stopped = 0
        self.fail_next_move: Exception | None = None

    @property
    def current_pose(self) -> franky.RobotPose:
        return franky.RobotPose(self.pose)

    @property
    def current_cartesian_state(self) -> franky.CartesianState:
        return franky.CartesianState(franky.RobotPose(self.pose))

    def move(self, motion, asynchronous: bool = False):
        if self.fail_next_move is not None:
            e, self.fail_next_move = self.fail_next_move, None
            raise e
        self.moves.append((motion, asynchronous))
        self.is_in_control = asynchronous
        # what franky does for a relative target: previous pose * relative (end-effector frame)
        if isinstance(motion, franky.CartesianMotion):
            target = motion.target.pose.end_effector_pose
            if motion.reference_type == franky.ReferenceType.Relative:
                self.pose = franky.Affine(self.pose.matrix @ target.matrix)
            else:
                self.pose = franky.Affine(target.matrix)

    def recover_from_errors(self) -> bool:
        self.recovered += 1
        self.has_errors = False
        return True

    def stop(self):
        self.stopped += 1


class _Future:
    def wait(self, timeout=None):
        return True

    def get(self):
        return True


class RecordingGripper:
    max_width = 0.08

    def __init__(self):
        self.width = 0.08
        self.calls: list[tuple] = []

    def move_async(self, width, speed):
        self.calls.append(("move", width, speed))
        self.width = width
        return _Future()

    def grasp_async(self, width, speed, force, epsilon_inner=0.005, epsilon_outer=0.005):
        self.calls.append(("grasp", width, speed, force, epsilon_outer))
        self.width = 0.0
        return _Future()


def home_affine() -> franky.Affine:
    return franky.Affine(np.array(HOME_POS), matrix_to_quat_xyzw(rpy_to_matrix(HOME_RPY)))


@pytest.fixture
def arm():
    robot, gripper = RecordingRobot(home_affine()), RecordingGripper()
    return FrankaArm(robot, gripper, HOME_POS, HOME_RPY, relative_dynamics_factor=0.2), robot, gripper


def test_rotation_helpers_roundtrip():
    rng = np.random.default_rng(0)
    for _ in range(50):
        rpy = rng.uniform([-3, -1.4, -3], [3, 1.4, 3])
        R = rpy_to_matrix(rpy)
        np.testing.assert_allclose(quat_xyzw_to_matrix(matrix_to_quat_xyzw(R)), R, atol=1e-12)
        np.testing.assert_allclose(rpy_to_matrix(matrix_to_rpy(R)), R, atol=1e-9)
        # franky agrees with our quaternion convention
        np.testing.assert_allclose(franky.Affine(np.zeros(3), matrix_to_quat_xyzw(R)).matrix[:3, :3], R, atol=1e-12)


def test_state_reads_the_franky_pose(arm):
    a, robot, gripper = arm
    s = a.state()
    np.testing.assert_allclose(s.position, HOME_POS)
    np.testing.assert_allclose(rpy_to_matrix(s.rpy), rpy_to_matrix(HOME_RPY), atol=1e-12)
    assert s.gripper == 1.0 and s.error is None
    robot.has_errors = True
    assert a.state().error


def test_move_delta_is_an_async_relative_cartesian_motion_in_the_base_frame(arm):
    a, robot, gripper = arm
    a.move_delta(np.array([0.01, 0.02, -0.03, 0.0, 0.0, 0.1, 1.0]))
    (motion, asynchronous), = robot.moves
    assert asynchronous is True
    assert isinstance(motion, franky.CartesianMotion)
    assert motion.reference_type == franky.ReferenceType.Relative
    assert motion.relative_dynamics_factor.velocity == pytest.approx(0.2)
    # gripper points down (roll = pi): base +y is EE -y, base -z is EE +z
    np.testing.assert_allclose(motion.target.pose.end_effector_pose.translation, [0.01, -0.02, 0.03], atol=1e-12)
    # applying it the way franky does moves the EE by the BASE-frame delta
    np.testing.assert_allclose(robot.pose.translation, [0.51, 0.02, 0.17], atol=1e-12)
    R_new = rotvec_to_matrix([0, 0, 0.1]) @ rpy_to_matrix(HOME_RPY)
    np.testing.assert_allclose(robot.pose.matrix[:3, :3], R_new, atol=1e-12)
    assert gripper.calls == [("move", 0.08, 0.05)]  # open: first command
    a.move_delta(np.array([0, 0, 0, 0, 0, 0, 0.9]))
    assert len(gripper.calls) == 1  # still open: no new gripper command
    a.move_delta(np.array([0, 0, 0, 0, 0, 0, 0.1]))
    assert gripper.calls[-1][0] == "grasp" and gripper.calls[-1][3] == 20.0
    assert a.state().gripper == 0.0  # the commanded (binary) gripper state
    assert all(asy for _, asy in robot.moves)


def test_relative_matches_base_delta_for_any_orientation():
    rng = np.random.default_rng(1)
    for _ in range(20):
        R = rpy_to_matrix(rng.uniform(-3, 3, 3))
        p = rng.uniform(-0.5, 0.5, 3)
        dp, w = rng.uniform(-0.02, 0.02, 3), rng.uniform(-0.1, 0.1, 3)
        pose = franky.Affine(p, matrix_to_quat_xyzw(R))
        new = (pose * base_delta_to_relative(pose, dp, w)).matrix  # what franky does with a relative target
        np.testing.assert_allclose(new[:3, 3], p + dp, atol=1e-12)
        np.testing.assert_allclose(new[:3, :3], rotvec_to_matrix(w) @ R, atol=1e-12)


def test_reset_home_hold_and_errors(arm):
    a, robot, gripper = arm
    robot.pose = franky.Affine(np.array([0.4, 0.1, 0.1]), matrix_to_quat_xyzw(rpy_to_matrix(HOME_RPY)))
    a.reset_home()
    motion, asynchronous = robot.moves[-1]
    assert not asynchronous and motion.reference_type == franky.ReferenceType.Absolute
    np.testing.assert_allclose(robot.pose.translation, HOME_POS, atol=1e-12)

    a.hold()  # not in control: nothing to stop
    a.move_delta(np.array([0.01, 0, 0, 0, 0, 0, 1]))
    a.hold()
    stop, asynchronous = robot.moves[-1]
    assert isinstance(stop, franky.CartesianStopMotion) and asynchronous

    robot.fail_next_move = franky.ControlException("cartesian reflex")
    with pytest.raises(ArmError, match="reflex"):
        a.move_delta(np.array([0.01, 0, 0, 0, 0, 0, 1]))
    robot.has_errors = True
    with pytest.raises(ArmError):
        a.move_delta(np.zeros(7))
    a.recover()
    assert robot.recovered == 1 and not robot.has_errors
    robot.fail_next_move = franky.ControlException("broken")
    robot.is_in_control = True
    a.hold()  # the stop motion failed: hold falls back to robot.stop(), never raises
    assert robot.stopped == 1


# ------------------------------------------------------------------ realsense
class FakeColorFrame:
    def __init__(self, image, number, ts_ms, domain):
        self.image, self.number, self.ts_ms, self.domain = image, number, ts_ms, domain

    def __bool__(self):
        return True

    def get_data(self):
        return self.image

    def get_timestamp(self):
        return self.ts_ms

    def get_frame_timestamp_domain(self):
        return self.domain

    def get_frame_number(self):
        return self.number


class FakeFrameset:
    def __init__(self, color):
        self.color = color

    def get_color_frame(self):
        return self.color


class RecordingPipeline:
    """rs.pipeline's surface: start(config) / wait_for_frames(timeout_ms) / stop(); can be 'unplugged'."""

    instances: list[RecordingPipeline] = []
    unplugged = False

    def __init__(self):
        self.configs: list[rs.config] = []
        self.started = self.stopped = 0
        self.n = 0
        RecordingPipeline.instances.append(self)

    def start(self, config):
        if RecordingPipeline.unplugged:
            raise RuntimeError("No device connected")
        assert isinstance(config, rs.config)
        self.configs.append(config)
        self.started += 1

    def wait_for_frames(self, timeout_ms=5000):
        if RecordingPipeline.unplugged:
            raise RuntimeError("Frame didn't arrive within 1000")
        self.n += 1
        img = np.full((48, 64, 3), self.n, np.uint8)
        return FakeFrameset(FakeColorFrame(img, self.n, 1.7e12 + self.n * 33.3, rs.timestamp_domain.global_time))

    def stop(self):
        self.stopped += 1


def test_realsense_config_timestamps_and_reconnect(monkeypatch):
    RecordingPipeline.instances.clear()
    RecordingPipeline.unplugged = False
    cam = RealSenseCamera("front", "123456789", width=64, height=48, fps=30, pipeline_factory=RecordingPipeline,
                          backoff_s=0.05)
    cfg = cam.rs_config()
    assert isinstance(cfg, rs.config)  # a real rs.config (enable_device + enable_stream accepted)
    f = cam.read()
    assert f.image.shape == (48, 64, 3) and f.seq == 1
    assert f.t_capture == pytest.approx((1.7e12 + 33.3) / 1000.0)
    assert f.meta["serial"] == "123456789" and "global_time" in f.meta["domain"]

    RecordingPipeline.unplugged = True
    with pytest.raises(RuntimeError):
        cam.read()  # unplugged: the loop holds on this
    assert RecordingPipeline.instances[0].stopped == 1
    with pytest.raises(RuntimeError, match="down|restart"):
        cam.read()  # backing off or restart failing
    RecordingPipeline.unplugged = False
    import time

    deadline = time.monotonic() + 2
    while True:
        try:
            f = cam.read()
            break
        except RuntimeError:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    assert cam.restarts == 1 and f.seq == 1  # a fresh pipeline
    assert len(RecordingPipeline.instances) >= 2


def test_realsense_hardware_clock_uses_host_time():
    class HwPipeline(RecordingPipeline):
        def wait_for_frames(self, timeout_ms=5000):
            fs = super().wait_for_frames(timeout_ms)
            fs.color.domain = rs.timestamp_domain.hardware_clock
            fs.color.ts_ms = 12345.0  # device clock since power-up
            return fs

    import time

    RecordingPipeline.unplugged = False
    cam = RealSenseCamera("front", "1", width=64, height=48, pipeline_factory=HwPipeline)
    f = cam.read()
    assert abs(f.t_capture - time.time()) < 1.0 and f.meta["timestamp_ms"] == 12345.0


def test_an_ignored_realtime_check_is_repeated_in_the_log_every_episode(arm, caplog):
    a, robot, gripper = arm
    a.realtime_warning = "franka_realtime: ignore -- the realtime check is OFF"
    with caplog.at_level("WARNING", logger="hardware.franka"):
        a.reset_home()
        a.reset_home()
    assert caplog.text.count("the realtime check is OFF") == 2
