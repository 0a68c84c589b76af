"""The 7-D end-effector delta of the robot client <-> MetaWorld's 4-D action.

vlaloop's action: dx, dy, dz (m), droll, dpitch, dyaw (rad), gripper (0 closed .. 1 open).
MetaWorld's action: Box(-1, 1, (4,)): x, y, z of the mocap target in units of ``action_scale``
(0.01 m: 1.0 moves the hand target 1 cm along that axis), then the gripper effort (-1 opens,
+1 closes).

Mapping (``to_metaworld``):
* translation: each axis ``d / 0.01`` clipped to [-1, 1], so at most 1 cm per axis per step
  (the box, not the norm: what MetaWorld itself clips);
* rotation: dropped. MetaWorld's Sawyer keeps its hand pointing down with a fixed quaternion; the
  arm reports that fixed orientation (``HOME_RPY``) and ignores commanded rotation;
* gripper: effort ``1 - 2 g`` (g = 1 open -> -1, g = 0 closed -> +1), continuous in between.
``from_metaworld`` is the inverse on the representable range (what the scripted experts emit).
"""

from __future__ import annotations

import math

import numpy as np

ACTION_SCALE = 0.01  # metres per unit of MetaWorld's xyz action (SawyerXYZEnv.action_scale)
MAX_TRANSLATION = ACTION_SCALE  # per axis, per step
HOME_RPY = np.array([math.pi, 0.0, 0.0])  # the fixed "hand pointing down" orientation, reported as is


def to_metaworld(action: np.ndarray) -> np.ndarray:
    """[7] vlaloop action -> [4] MetaWorld action (float32). Raises ValueError on a wrong shape;
    a non-finite action maps to "stand still, keep the gripper as commanded last" is the caller's
    business (the arm rejects it before calling this)."""
    a = np.asarray(action, dtype=np.float64).reshape(-1)
    if a.shape != (7,):
        raise ValueError(f"a vlaloop action has 7 values, got shape {np.shape(action)}")
    out = np.empty(4, dtype=np.float32)
    out[:3] = np.clip(a[:3] / ACTION_SCALE, -1.0, 1.0)
    out[3] = np.clip(1.0 - 2.0 * a[6], -1.0, 1.0)
    return out


def from_metaworld(action: np.ndarray) -> np.ndarray:
    """[4] MetaWorld action (values beyond [-1, 1] are clipped, as the env does) -> [7] vlaloop
    action (float32): translation in metres, zero rotation, gripper in [0, 1]."""
    a = np.clip(np.asarray(action, dtype=np.float64).reshape(-1), -1.0, 1.0)
    if a.shape != (4,):
        raise ValueError(f"a MetaWorld action has 4 values, got shape {np.shape(action)}")
    out = np.zeros(7, dtype=np.float32)
    out[:3] = a[:3] * ACTION_SCALE
    out[6] = (1.0 - a[3]) / 2.0
    return out


def executed_action(action: np.ndarray) -> list[float]:
    """The action as MetaWorld executes it, back in vlaloop's convention (the demo record's
    ``action``): translation clipped per axis, rotation zero, gripper clipped to [0, 1]."""
    a = np.asarray(action, dtype=np.float64).reshape(-1)
    if a.shape != (7,) or not np.all(np.isfinite(a)):
        return [0.0] * 6 + [float(a[6]) if a.shape == (7,) and np.isfinite(a[6]) else 1.0]
    return [float(x) for x in from_metaworld(to_metaworld(a))]
