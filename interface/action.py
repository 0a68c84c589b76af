"""The action and state vectors every backend, demo and policy uses.

Action (7 floats per control step): dx, dy, dz (m), droll, dpitch, dyaw (rad), gripper
(0 closed .. 1 open). State (7 floats): x, y, z (m), roll, pitch, yaw (rad), gripper.
The frames and how a rotation delta is applied are written down in docs/action_convention.md.
"""

from __future__ import annotations

ACTION_DIM = 7
STATE_DIM = 7
GRIPPER_INDEX = 6
