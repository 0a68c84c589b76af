"""Franka arm through franky-control (``pip install franky-control``; imported only here).

Actions follow interface/action.py: a translation in the robot BASE frame and a base-frame
rotation vector w applied on the left (R_new = exp([w]x) R). franky's ``ReferenceType.Relative``
targets are expressed in the END-EFFECTOR frame (``new_target = previous_target * relative``), so
the backend builds the absolute target pose and lets franky's own Affine math turn it into the
relative motion: ``relative = current.inverse * target``. Each motion is issued with
``asynchronous=True``: it replaces the running one, so the arm always heads for the newest command
and a stop is one call away.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np

from hardware.realtime import realtime_problem
from interface.action import (
    GRIPPER_INDEX,
    GRIPPER_OPEN_THRESHOLD,
    ROTATION,
    TRANSLATION,
    matrix_to_rpy,
    rotvec_to_matrix,
    rpy_to_matrix,
)
from interface.robot import Arm, ArmError, ArmState

log = logging.getLogger(__name__)
REALTIME_SETTINGS = ("enforce", "ignore")


class FrankaSetupError(RuntimeError):
    """The arm cannot be used from this machine; the message is one line with the fix."""


def check_realtime(setting: str) -> str:
    """Before libfranka opens a connection: "enforce" raises FrankaSetupError on a machine
    libfranka would refuse; "ignore" returns the warning to log (empty when the machine is fit)."""
    if setting not in REALTIME_SETTINGS:
        raise FrankaSetupError(f"robot.franka_realtime must be one of {REALTIME_SETTINGS}, got {setting!r}")
    problem = realtime_problem()
    if problem is None:
        return ""
    if setting == "enforce":
        raise FrankaSetupError(problem)
    warning = (f"franka_realtime: ignore -- the realtime check is OFF ({problem.split(':')[0]}); "
               f"bench tests only: the arm's control loop may miss its 1 kHz deadlines and stop with "
               f"communication_constraints_violation")
    log.warning("%s", warning)
    return warning


def explain_connect_error(host: str, e: Exception) -> str:
    """franky/libfranka's exception at connect -> one line naming the fix."""
    text = f"{type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
    name = type(e).__name__
    if name == "NetworkException":
        return (f"cannot reach the Franka's FCI at {host} ({text}); check that the controller is on, the joints "
                f"are unlocked and FCI is activated in Desk, and that this machine reaches {host} over the "
                f"robot's network (robot.franka_host; docs/real_robot.md, 'Network and FCI')")
    if name == "IncompatibleVersionException":
        return (f"the libfranka in franky-control does not speak the robot's system version at {host} ({text}); "
                f"install the franky-control build for your robot's system version (docs/real_robot.md, "
                f"'Network and FCI')")
    if name == "RealtimeException":
        return f"libfranka refused this machine ({text}); boot a PREEMPT_RT kernel (docs/real_robot.md, " \
               f"'Realtime kernel')"
    return f"the Franka at {host} refused the connection ({text}); see docs/real_robot.md, 'Network and FCI'"


def matrix_to_quat_xyzw(R: np.ndarray) -> np.ndarray:
    """Rotation matrix -> unit quaternion [x, y, z, w] (franky's order)."""
    m = np.asarray(R, dtype=float)
    tr = m[0, 0] + m[1, 1] + m[2, 2]
    if tr > 0:
        s = math.sqrt(tr + 1.0) * 2
        q = [(m[2, 1] - m[1, 2]) / s, (m[0, 2] - m[2, 0]) / s, (m[1, 0] - m[0, 1]) / s, 0.25 * s]
    elif m[0, 0] > m[1, 1] and m[0, 0] > m[2, 2]:
        s = math.sqrt(1.0 + m[0, 0] - m[1, 1] - m[2, 2]) * 2
        q = [0.25 * s, (m[0, 1] + m[1, 0]) / s, (m[0, 2] + m[2, 0]) / s, (m[2, 1] - m[1, 2]) / s]
    elif m[1, 1] > m[2, 2]:
        s = math.sqrt(1.0 + m[1, 1] - m[0, 0] - m[2, 2]) * 2
        q = [(m[0, 1] + m[1, 0]) / s, 0.25 * s, (m[1, 2] + m[2, 1]) / s, (m[0, 2] - m[2, 0]) / s]
    else:
        s = math.sqrt(1.0 + m[2, 2] - m[0, 0] - m[1, 1]) * 2
        q = [(m[0, 2] + m[2, 0]) / s, (m[1, 2] + m[2, 1]) / s, 0.25 * s, (m[1, 0] - m[0, 1]) / s]
    q = np.asarray(q)
    return q / np.linalg.norm(q)


def quat_xyzw_to_matrix(q) -> np.ndarray:
    x, y, z, w = (float(v) for v in np.asarray(q) / np.linalg.norm(q))
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def base_delta_to_relative(pose, dp, w):
    """The action's (dp, w) at the current pose (a franky.Affine) -> the franky.Affine of the
    relative motion in the end-effector frame, by franky's own Affine algebra."""
    import franky

    R = quat_xyzw_to_matrix(pose.quaternion)
    target = franky.Affine(np.asarray(pose.translation, dtype=float) + np.asarray(dp, dtype=float),
                           matrix_to_quat_xyzw(rotvec_to_matrix(w) @ R))
    return pose.inverse * target


class FrankaArm(Arm):
    """``robot``/``gripper`` are ``franky.Robot``/``franky.Gripper`` (or stand-ins with their API)."""

    def __init__(self, robot, gripper, home_position, home_rpy, relative_dynamics_factor: float = 0.15,
                 gripper_speed: float = 0.05, gripper_force: float = 20.0):
        import franky

        self._franky = franky
        self.robot = robot
        self.gripper = gripper
        self.home_position = np.asarray(home_position, dtype=float)
        self.home_rpy = np.asarray(home_rpy, dtype=float)
        self.dynamics = franky.RelativeDynamicsFactor(relative_dynamics_factor)
        self.gripper_speed = gripper_speed
        self.gripper_force = gripper_force
        self._gripper_open: bool | None = None  # last commanded; None = unknown
        self._max_width = float(gripper.max_width) if gripper is not None else 0.08
        self.realtime_warning = ""  # set by connect() under franka_realtime: ignore; repeated every episode

    @classmethod
    def connect(cls, host: str, realtime: str = "enforce", **kw) -> FrankaArm:
        """Check the machine, then connect. Every failure is a FrankaSetupError of one line with
        the fix. realtime="ignore" (bench tests only) skips the kernel check here and in libfranka."""
        import franky

        warning = check_realtime(realtime)
        realtime_config = franky.RealtimeConfig.Ignore if warning else franky.RealtimeConfig.Enforce
        try:
            robot = franky.Robot(host, realtime_config=realtime_config)
            robot.relative_dynamics_factor = franky.RelativeDynamicsFactor(kw.get("relative_dynamics_factor", 0.15))
            robot.recover_from_errors()
            gripper = franky.Gripper(host)
        except (franky.Exception, franky.GripperException, RuntimeError) as e:
            raise FrankaSetupError(explain_connect_error(host, e)) from None
        arm = cls(robot, gripper, **kw)
        arm.realtime_warning = warning
        return arm

    def _call(self, what: str, fn, *args, **kwargs):
        """Every franky error becomes ArmError (the control loop then recovers and aborts)."""
        try:
            return fn(*args, **kwargs)
        except (self._franky.Exception, self._franky.GripperException, RuntimeError) as e:
            raise ArmError(f"franka {what}: {type(e).__name__}: {e}") from None

    # ---------------------------------------------------------------- Arm
    def reset_home(self) -> None:
        if self.realtime_warning:  # once per episode, so it stays in the log beside the episodes it concerns
            log.warning("%s", self.realtime_warning)
        f = self._franky
        target = f.Affine(self.home_position, matrix_to_quat_xyzw(rpy_to_matrix(self.home_rpy)))
        motion = f.CartesianMotion(target, f.ReferenceType.Absolute, relative_dynamics_factor=self.dynamics)
        self._call("reset_home", self.robot.move, motion)  # blocking: returns at home
        self._set_gripper(True, wait=True)

    def state(self) -> ArmState:
        cs = self._call("state", lambda: self.robot.current_cartesian_state)
        pose = cs.pose.end_effector_pose
        R = quat_xyzw_to_matrix(pose.quaternion)
        error = "robot reports errors" if self._call("state", lambda: self.robot.has_errors) else None
        # The gripper is binary (open / grasp): report what was last commanded. Reading
        # ``gripper.width`` waits for the gripper's next state message, too slow for every tick.
        gripper = 1.0 if self._gripper_open in (True, None) else 0.0
        return ArmState(position=np.asarray(pose.translation, dtype=float), rpy=matrix_to_rpy(R),
                        gripper=gripper, t=time.time(), error=error)

    def move_delta(self, action: np.ndarray) -> None:
        f = self._franky
        a = np.asarray(action, dtype=float)
        if self._call("state", lambda: self.robot.has_errors):
            raise ArmError("franka has errors; recover() first")
        pose = self._call("pose", lambda: self.robot.current_pose).end_effector_pose
        relative = base_delta_to_relative(pose, a[TRANSLATION], a[ROTATION])
        motion = f.CartesianMotion(relative, f.ReferenceType.Relative, relative_dynamics_factor=self.dynamics)
        self._call("move", self.robot.move, motion, asynchronous=True)
        self._set_gripper(a[GRIPPER_INDEX] >= GRIPPER_OPEN_THRESHOLD)

    def _set_gripper(self, open_: bool, wait: bool = False) -> None:
        if self.gripper is None or open_ == self._gripper_open:
            return  # the gripper is binary; only a change is a command
        if open_:
            fut = self._call("gripper", self.gripper.move_async, self._max_width, self.gripper_speed)
        else:  # grasp whatever is between the fingers, any width
            fut = self._call("gripper", self.gripper.grasp_async, 0.0, self.gripper_speed, self.gripper_force,
                             epsilon_inner=0.005, epsilon_outer=self._max_width)
        self._gripper_open = open_
        if wait:
            fut.wait(10.0)

    def hold(self) -> None:
        """Replace whatever runs by a stop motion; if even that fails, stop the robot outright."""
        try:
            if self.robot.is_in_control:
                self.robot.move(self._franky.CartesianStopMotion(self.dynamics), asynchronous=True)
        except Exception as e:  # noqa: BLE001 - hold must never raise
            log.error("stop motion failed (%s); robot.stop()", e)
            try:
                self.robot.stop()
            except Exception as e2:  # noqa: BLE001
                log.error("robot.stop() failed: %s", e2)

    def enable_guiding(self) -> None:
        """Hand-guiding for demonstrations (robot_client/hand_guiding.py): stop any motion, then free
        every Cartesian axis (not the elbow) while the operator presses the two buttons at the flange
        (franky's Robot.set_guiding_mode). Untested on an arm here (no hardware)."""
        self.hold()
        self._call("set_guiding_mode", self.robot.set_guiding_mode, [True] * 6, False)

    def recover(self) -> None:
        ok = self._call("recover", self.robot.recover_from_errors)
        if not ok:
            raise ArmError("franka recover_from_errors() failed; check the robot (user stop pressed?)")
        self._gripper_open = None

    def close(self) -> None:
        self.hold()
