"""Rigid-transform helpers. Convention used everywhere in vlaloop's calibration:
``R = Rz(yaw) @ Ry(pitch) @ Rx(roll)`` (extrinsic x-y-z), 4x4 homogeneous ``T`` with
``p_parent = T @ p_child``; ``T_a_b`` is frame b expressed in frame a."""

from __future__ import annotations

import math

import numpy as np

# the rotation conversions of the action convention, one implementation for every package
from interface.action import matrix_to_rotvec, matrix_to_rpy, rotvec_to_matrix, rpy_to_matrix  # noqa: F401


def rot_x(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])


def rot_y(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])


def rot_z(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def make_T(R: np.ndarray, t) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = np.asarray(t, dtype=float).reshape(3)
    return T


def pose_to_T(position, rpy) -> np.ndarray:
    return make_T(rpy_to_matrix(rpy), position)


def T_to_pose(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return T[:3, 3].copy(), matrix_to_rpy(T[:3, :3])


def invert(T: np.ndarray) -> np.ndarray:
    R, t = T[:3, :3], T[:3, 3]
    return make_T(R.T, -R.T @ t)


def rotation_angle(R: np.ndarray) -> float:
    """Angle (rad) of the rotation R."""
    return float(math.acos(max(-1.0, min(1.0, (np.trace(R) - 1.0) / 2.0))))


def project_to_rotation(M: np.ndarray) -> np.ndarray:
    U, _, Vt = np.linalg.svd(M)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    return U @ D @ Vt


def mean_rotation(Rs: list[np.ndarray]) -> np.ndarray:
    """Chordal L2 mean: the rotation closest to the average matrix."""
    return project_to_rotation(np.mean(np.stack(Rs), axis=0))


def wrap_angle(a):
    return (np.asarray(a, dtype=float) + math.pi) % (2 * math.pi) - math.pi


def look_at(eye, target, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """Pose of a camera (OpenCV axes: z forward, y down) at `eye` looking at `target`."""
    eye, target, up = (np.asarray(v, dtype=float) for v in (eye, target, up))
    z = target - eye
    z /= np.linalg.norm(z)
    x = np.cross(z, up)
    if np.linalg.norm(x) < 1e-6:  # looking along `up`: any perpendicular x will do
        x = np.cross(z, [0.0, 1.0, 0.0])
    x /= np.linalg.norm(x)
    y = np.cross(z, x)
    return make_T(np.stack([x, y, z], axis=1), eye)
