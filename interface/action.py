"""The action and state vectors every backend, demo and policy uses -- the one definition.

Action: 7 floats per control step, one step = one control period (``robot.rate_hz``):

  index  meaning                                       unit   frame
  0..2   dx, dy, dz: end-effector translation         m      robot BASE frame, added to the position
  3..5   wx, wy, wz: end-effector rotation delta as    rad    robot BASE frame, applied on the left:
         a rotation vector (axis * angle)                     R_new = exp([w]x) @ R
  6      gripper command                               0..1   absolute, not a delta: >= 0.5 opens,
                                                              < 0.5 closes (grasps); the range is [0, 1]

State: 7 floats: x, y, z (m, base frame), roll, pitch, yaw (rad; R = Rz(yaw) Ry(pitch) Rx(roll),
the orientation of the end effector in the base frame), gripper (1 open .. 0 closed).

Why a base-frame rotation vector applied on the left: it is what DROID / OpenVLA-style
end-effector-delta datasets record, it does not depend on the current orientation (the same
action turns the hand about the same world axis at any pose, so a policy trained on one arm
transfers), it has no gimbal lock, and n equal steps of w/n compose exactly to w. Adding deltas to
roll/pitch/yaw instead agrees with this only near an orientation where the Euler axes happen to
line up with the base axes, and turns the wrist the wrong way elsewhere.

`apply_action` is the reference every backend is tested against (tests/interface/).
Pure numpy: no torch, nothing of ours. docs/action_convention.md explains it with examples.
"""

from __future__ import annotations

import math

import numpy as np

ACTION_DIM = 7
STATE_DIM = 7
GRIPPER_INDEX = 6
TRANSLATION = slice(0, 3)
ROTATION = slice(3, 6)
GRIPPER_OPEN_THRESHOLD = 0.5  # a gripper command >= this opens, below it closes
GRIPPER_RANGE = (0.0, 1.0)


def rpy_to_matrix(rpy) -> np.ndarray:
    """R = Rz(yaw) @ Ry(pitch) @ Rx(roll): the state's orientation as a rotation matrix."""
    r, p, y = (float(v) for v in rpy)
    cr, sr, cp, sp, cy, sy = math.cos(r), math.sin(r), math.cos(p), math.sin(p), math.cos(y), math.sin(y)
    return np.array([[cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
                     [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
                     [-sp, cp * sr, cp * cr]])


def matrix_to_rpy(R: np.ndarray) -> np.ndarray:
    """Inverse of rpy_to_matrix (pitch in [-pi/2, pi/2]; at gimbal lock the roll goes into yaw)."""
    pitch = math.atan2(-R[2, 0], math.hypot(R[0, 0], R[1, 0]))
    if math.cos(pitch) < 1e-9:
        return np.array([0.0, pitch, math.atan2(-R[0, 1], R[1, 1])])
    return np.array([math.atan2(R[2, 1], R[2, 2]), pitch, math.atan2(R[1, 0], R[0, 0])])


def rotvec_to_matrix(w) -> np.ndarray:
    """exp([w]x): the rotation by |w| rad about the axis w / |w| (Rodrigues)."""
    w = np.asarray(w, dtype=float).reshape(3)
    angle = float(np.linalg.norm(w))
    if angle < 1e-12:
        return np.eye(3)
    k = w / angle
    K = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + math.sin(angle) * K + (1.0 - math.cos(angle)) * (K @ K)


def matrix_to_rotvec(R: np.ndarray) -> np.ndarray:
    """log(R) as a rotation vector (angle in [0, pi])."""
    R = np.asarray(R, dtype=float)
    cos = max(-1.0, min(1.0, (np.trace(R) - 1.0) / 2.0))
    angle = math.acos(cos)
    if angle < 1e-9:
        return np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]]) / 2.0
    if angle > math.pi - 1e-6:  # near pi: the axis from the symmetric part
        i = int(np.argmax(np.diag(R)))
        v = R[:, i] + np.eye(3)[:, i]
        return angle * v / np.linalg.norm(v)
    return angle / (2.0 * math.sin(angle)) * np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])


def apply_action(position, rpy, action) -> tuple[np.ndarray, np.ndarray, bool]:
    """THE definition: the pose an arm reaches from (position, rpy) by one action, before any arm
    limits, and whether the gripper is commanded open. Returns (position, rpy, open)."""
    a = np.asarray(action, dtype=float).reshape(ACTION_DIM)
    new_position = np.asarray(position, dtype=float) + a[TRANSLATION]
    new_R = rotvec_to_matrix(a[ROTATION]) @ rpy_to_matrix(rpy)
    return new_position, matrix_to_rpy(new_R), bool(a[GRIPPER_INDEX] >= GRIPPER_OPEN_THRESHOLD)


def action_between(position, rpy, target_position, target_rpy, gripper: float = 1.0) -> np.ndarray:
    """The one action that takes (position, rpy) to (target_position, target_rpy) by the definition."""
    dR = rpy_to_matrix(target_rpy) @ rpy_to_matrix(rpy).T
    return np.concatenate([np.asarray(target_position, float) - np.asarray(position, float),
                           matrix_to_rotvec(dR), [float(gripper)]])


def rotation_delta_in_end_effector_frame(rpy, w) -> np.ndarray:
    """The same rotation as a relative rotation in the END-EFFECTOR frame, R^T exp([w]x) R, for
    controllers whose relative targets compose on the right (franky's ReferenceType.Relative)."""
    R = rpy_to_matrix(rpy)
    return R.T @ rotvec_to_matrix(w) @ R
