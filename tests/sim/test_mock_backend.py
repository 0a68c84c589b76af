"""MockRobot behind the Arm/Camera interfaces: episodes, determinism, limits, faults."""

from __future__ import annotations

import math

import numpy as np
import pytest

from interface.robot import Arm, ArmError, Camera, Frame
from sim.mock import FaultConfig, MockRobot
from sim.mock.sim import HOME_POSITION, MAX_TRANSLATION, WORKSPACE_MAX, WORKSPACE_MIN


def _run_expert(robot: MockRobot, seed: int, task: str) -> tuple[list[np.ndarray], bool, int]:
    robot.new_episode(seed=seed, task=task)
    robot.arm.reset_home()
    frames = []
    for step in range(robot.max_steps):
        frames.append(robot.cameras["front"].read().image)
        robot.arm.move_delta(robot.expert_action())
        if robot.success():
            return frames, True, step + 1
    return frames, False, robot.max_steps


def test_interfaces_and_home_state():
    robot = MockRobot(task="reach")
    assert isinstance(robot.arm, Arm) and isinstance(robot.cameras["front"], Camera)
    instruction = robot.new_episode(seed=3)
    assert instruction == robot.instruction and robot.task_name == "reach" and robot.max_steps == 30
    robot.arm.reset_home()
    st = robot.arm.state()
    np.testing.assert_allclose(st.position, HOME_POSITION)
    np.testing.assert_allclose(st.rpy, [math.pi, 0, 0])
    assert st.gripper == 1.0 and st.error is None
    vec = st.vector()
    assert vec.shape == (7,) and vec.dtype == np.float32
    frame = robot.cameras["front"].read()
    assert isinstance(frame, Frame) and frame.image.shape == (96, 96, 3) and frame.image.dtype == np.uint8
    assert not robot.success()


@pytest.mark.parametrize("task", ["reach", "push", "pick_place", "mixed"])
def test_same_seed_same_frames_and_outcome(task):
    a, b = MockRobot(task=task, expert_noise=0.2), MockRobot(task=task, expert_noise=0.2)
    fa, oka, na = _run_expert(a, 11, task)
    fb, okb, nb = _run_expert(b, 11, task)
    assert (oka, na) == (okb, nb)
    assert len(fa) == len(fb) and all(np.array_equal(x, y) for x, y in zip(fa, fb, strict=True))
    fc, _, _ = _run_expert(a, 12, task)  # another seed: another scene
    assert not np.array_equal(fa[0], fc[0])


def test_arm_limits_and_nan_hold_still():
    robot = MockRobot()
    robot.arm.reset_home()
    robot.arm.move_delta(np.array([1.0, 0, 0, 0, 0, 0, 1]))  # 1 m asked: 3 cm done
    np.testing.assert_allclose(robot.arm.state().position, HOME_POSITION + [MAX_TRANSLATION, 0, 0])
    before = robot.arm.state()
    robot.arm.move_delta(np.array([np.nan, 0.01, 0, 0, 0, 0, 0]))
    after = robot.arm.state()
    np.testing.assert_array_equal(before.position, after.position)
    assert after.gripper == 1.0 and robot.arm.n_rejected == 1
    for _ in range(40):  # the workspace box holds
        robot.arm.move_delta(np.array([0.03, 0.03, 0.03, 0.5, 0.5, 0.5, 1]))
    st = robot.arm.state()
    assert np.all(st.position <= WORKSPACE_MAX + 1e-12) and np.all(st.position >= WORKSPACE_MIN - 1e-12)
    robot.arm.hold()
    np.testing.assert_array_equal(robot.arm.state().position, st.position)


# ---------------------------------------------------------------- faults


def test_dropped_frames_repeat_the_previous_frame():
    robot = MockRobot(faults=FaultConfig(drop_frame_prob=0.5))
    robot.new_episode(seed=1)
    cam = robot.cameras["front"]
    frames = []
    for _ in range(40):
        frames.append(cam.read())
        robot.arm.move_delta(robot.expert_action())
    seqs = [f.seq for f in frames]
    repeats = [i for i in range(1, len(frames)) if seqs[i] == seqs[i - 1]]
    assert cam.n_dropped == len(repeats) and 8 <= len(repeats) <= 32
    for i in repeats:  # a dropped frame is the old one: same image and timestamp although the arm moved
        assert np.array_equal(frames[i].image, frames[i - 1].image)
        assert frames[i].t_capture == frames[i - 1].t_capture and frames[i].meta.get("dropped")
    fresh = [f.seq for i, f in enumerate(frames) if i not in repeats]
    assert fresh == sorted(set(fresh))  # fresh frames have strictly increasing seq
    assert MockRobot(faults=FaultConfig()).cameras["front"].n_dropped == 0


def test_late_frames_have_stale_timestamps():
    robot = MockRobot(faults=FaultConfig(late_frame_prob=1.0, late_frame_s=0.4))
    import time

    now = time.time()
    frame = robot.cameras["front"].read()
    assert frame.meta["late"] and now - frame.t_capture >= 0.39
    on_time = MockRobot().cameras["front"].read()
    assert abs(time.time() - on_time.t_capture) < 0.2 and "late" not in on_time.meta


def test_slow_arm_moves_a_fraction_per_command():
    robot = MockRobot(faults=FaultConfig(slow_arm_factor=3.0))
    robot.arm.reset_home()
    robot.arm.move_delta(np.array([0.03, 0, 0, 0, 0, 0, 1]))
    np.testing.assert_allclose(robot.arm.state().position, HOME_POSITION + [0.01, 0, 0])
    # the expert still succeeds at reach, it just needs more steps
    slow = MockRobot(expert_noise=0.0, faults=FaultConfig(slow_arm_factor=2.0))
    fast = MockRobot(expert_noise=0.0)
    _, ok_slow, n_slow = _run_expert(slow, 5, "reach")
    _, ok_fast, n_fast = _run_expert(fast, 5, "reach")
    assert ok_fast and n_slow > n_fast


def test_arm_error_persists_until_recover():
    robot = MockRobot(faults=FaultConfig(arm_error_at_step=2))
    robot.arm.reset_home()
    for _ in range(2):
        robot.arm.move_delta(np.array([0.01, 0, 0, 0, 0, 0, 1]))
    pos = robot.arm.state().position
    with pytest.raises(ArmError):
        robot.arm.move_delta(np.array([0.01, 0, 0, 0, 0, 0, 1]))
    st = robot.arm.state()
    assert st.error and "reflex" in st.error
    np.testing.assert_array_equal(st.position, pos)  # the failing motion did not move
    with pytest.raises(ArmError):  # stays in error: motions and homing refused
        robot.arm.move_delta(np.zeros(7))
    with pytest.raises(ArmError):
        robot.arm.reset_home()
    robot.arm.hold()  # always safe
    robot.arm.recover()
    assert robot.arm.state().error is None
    robot.arm.move_delta(np.array([0.01, 0, 0, 0, 0, 0, 1]))
    robot.arm.reset_home()
    np.testing.assert_allclose(robot.arm.state().position, HOME_POSITION)


def test_random_arm_errors_are_seeded():
    def error_steps(seed):
        robot = MockRobot(faults=FaultConfig(arm_error_prob=0.2))
        robot.new_episode(seed=seed)
        out = []
        for step in range(30):
            try:
                robot.arm.move_delta(np.zeros(7))
            except ArmError:
                out.append(step)
                robot.arm.recover()
        return out

    first = error_steps(4)
    assert first == error_steps(4) and 1 <= len(first) <= 15


def test_camera_failure_raises():
    robot = MockRobot(faults=FaultConfig(camera_fail=True))
    with pytest.raises(RuntimeError):
        robot.cameras["front"].read()
    with pytest.raises(ValueError):
        FaultConfig(drop_frame_prob=2.0)
