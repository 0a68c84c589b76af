"""Every backend moves the end effector exactly as interface/action.py defines an action, at poses
away from home (several orientations): the mock simulator (single and batched), the franka
backend through franky's real Affine math (the robot connection is a stand-in that applies a
relative motion the way franky documents it: new = previous * relative), the calibration's
kinematic arm, and the mock expert's recorded demonstrations."""

from __future__ import annotations

import math

import franky
import numpy as np
import pytest

from calibration.mock_rig import KinematicArm
from episodes.store import EpisodeStore
from hardware.franka import FrankaArm, matrix_to_quat_xyzw, quat_xyzw_to_matrix
from interface.action import (
    action_between,
    apply_action,
    matrix_to_rotvec,
    rotvec_to_matrix,
    rpy_to_matrix,
)
from sim.mock.demos import record_demos
from sim.mock.sim import HOME_RPY, Scene
from sim.mock.vec import VecScene

rng = np.random.default_rng(17)
# orientations away from home (pointing down = roll pi), inside the mock's orientation limits
ORIENTATIONS = [np.array([math.pi - 0.5, 0.4, 1.2]), np.array([math.pi + 0.45, -0.5, -1.3]),
                np.array([math.pi - 0.3, -0.35, 0.7]), np.array([math.pi + 0.2, 0.5, -0.4])]
ACTIONS = [np.array([0.01, -0.02, 0.005, 0.08, 0.0, 0.0, 1.0]), np.array([0.0, 0.0, 0.0, 0.0, 0.09, 0.0, 0.0]),
           np.array([-0.01, 0.0, 0.01, 0.0, 0.0, 0.1, 1.0]), np.array([0.005, 0.005, -0.01, 0.05, -0.06, 0.07, 0.0])]
POSITION = np.array([0.45, 0.05, 0.15])


def _same_orientation(rpy_a, rpy_b, atol=1e-9):
    np.testing.assert_allclose(rpy_to_matrix(rpy_a), rpy_to_matrix(rpy_b), atol=atol)


def _cases():
    return [(rpy, a) for rpy in ORIENTATIONS for a in ACTIONS]


def test_the_definition_itself():
    for _ in range(50):
        w = rng.uniform(-1, 1, 3)
        np.testing.assert_allclose(matrix_to_rotvec(rotvec_to_matrix(w)), w, atol=1e-9)
    # a rotation about base z turns the hand about the world's vertical at any orientation
    for rpy in ORIENTATIONS:
        _, new, _ = apply_action(POSITION, rpy, [0, 0, 0, 0, 0, 0.3, 1])
        np.testing.assert_allclose(rpy_to_matrix(new), rotvec_to_matrix([0, 0, 0.3]) @ rpy_to_matrix(rpy), atol=1e-12)
        # the action between two poses reproduces the second
        target = rpy + np.array([0.1, -0.05, 0.2])
        a = action_between(POSITION, rpy, POSITION + 0.01, target)
        p, r, _ = apply_action(POSITION, rpy, a)
        np.testing.assert_allclose(p, POSITION + 0.01, atol=1e-12)
        _same_orientation(r, target)
    # n equal steps of w / n are exactly w
    rpy = ORIENTATIONS[0]
    for _ in range(5):
        _, rpy, _ = apply_action(POSITION, rpy, [0, 0, 0, 0.02, -0.01, 0.03, 1])
    _same_orientation(rpy, apply_action(POSITION, ORIENTATIONS[0], [0, 0, 0, 0.1, -0.05, 0.15, 1])[1])


@pytest.mark.parametrize("rpy,action", _cases())
def test_mock_simulator(rpy, action):
    scene = Scene()
    scene.state.ee, scene.state.rpy = POSITION.copy(), rpy.copy()
    assert scene.apply_action(action)
    p, r, open_ = apply_action(POSITION, rpy, action)
    np.testing.assert_allclose(scene.state.ee, p, atol=1e-12)
    _same_orientation(scene.state.rpy, r)
    assert scene.state.gripper_open == open_


def test_batched_mock_simulator():
    cases = _cases()
    vec = VecScene(len(cases), image_size=32, seeds=range(len(cases)))
    vec.ee[:] = POSITION
    vec.rpy[:] = np.stack([rpy for rpy, _ in cases])
    vec.step(np.stack([a for _, a in cases]))
    for i, (rpy, a) in enumerate(cases):
        p, r, _ = apply_action(POSITION, rpy, a)
        np.testing.assert_allclose(vec.ee[i], p, atol=1e-12)
        _same_orientation(vec.rpy[i], r)


class FrankyRobotStandIn:
    """franky.Robot's surface used by FrankaArm; the pose is a real franky.Affine and a relative
    motion is applied as franky documents it (new = previous * relative, end-effector frame)."""

    def __init__(self, pose: franky.Affine):
        self.pose, self.has_errors, self.is_in_control = pose, False, False

    @property
    def current_pose(self) -> franky.RobotPose:
        return franky.RobotPose(self.pose)

    def move(self, motion, asynchronous: bool = False):
        target = motion.target.pose.end_effector_pose
        assert motion.reference_type == franky.ReferenceType.Relative
        self.pose = self.pose * target


@pytest.mark.parametrize("rpy,action", _cases())
def test_franka_backend_with_frankys_affine_math(rpy, action):
    robot = FrankyRobotStandIn(franky.Affine(POSITION, matrix_to_quat_xyzw(rpy_to_matrix(rpy))))
    arm = FrankaArm(robot, None, POSITION, HOME_RPY)
    arm.move_delta(action)
    p, r, _ = apply_action(POSITION, rpy, action)
    np.testing.assert_allclose(robot.pose.translation, p, atol=1e-9)
    np.testing.assert_allclose(quat_xyzw_to_matrix(robot.pose.quaternion), rpy_to_matrix(r), atol=1e-9)


@pytest.mark.parametrize("rpy,action", _cases())
def test_calibration_kinematic_arm(rpy, action):
    arm = KinematicArm(POSITION, rpy)
    arm.move_delta(action)
    p, r, _ = apply_action(POSITION, rpy, action)
    np.testing.assert_allclose(arm.position, p, atol=1e-12)
    _same_orientation(arm.rpy, r)


def test_mock_expert_demos_follow_the_convention(tmp_path):
    store = EpisodeStore(tmp_path / "episodes")
    record_demos(store, task="reach", n=2, seed=0, image_size=32, cameras=("front",), progress=False)
    for meta in store.list_episodes(source="expert"):
        steps = store.load(meta["robot_id"], meta["episode_id"]).steps
        assert len(steps) > 5
        for now, nxt in zip(steps, steps[1:], strict=False):
            s0, s1 = np.asarray(now["state"], float), np.asarray(nxt["state"], float)
            _, r, open_ = apply_action(s0[:3], s0[3:6], now["action"])
            _same_orientation(s1[3:6], r, atol=1e-5)  # float32 states
            assert (s1[6] >= 0.5) == open_
