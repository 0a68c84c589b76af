"""The safety filter: the last word on every action before it reaches the arm.

It never talks to the network and never raises on bad input. Rules, in order:

1. wrong shape, NaN or inf anywhere      -> HOLD (the arm stays where it is)
2. target position outside the workspace -> clamp the target onto the box
3. translation longer than the step limit -> scale it down to the limit
4. rotation larger than the step limit    -> scale it down to the limit
5. gripper outside [0, 1]                 -> clip

Every rule that fires increments a counter in ``SafeAction.counters``; the control loop copies
them into the step record, so every clamp is visible in the episode store.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from interface.robot import ACTION_DIM

# Counter names (also the keys in StepMsg.safety).
HOLD_NONFINITE = "hold_nonfinite"
HOLD_BAD_SHAPE = "hold_bad_shape"
CLAMP_WORKSPACE = "clamp_workspace"
CLAMP_TRANSLATION = "clamp_translation"
CLAMP_ROTATION = "clamp_rotation"
CLAMP_GRIPPER = "clamp_gripper"


@dataclass
class SafeAction:
    action: np.ndarray  # [7] what the arm may execute (zeros + current gripper when holding)
    hold: bool  # True: do not move, call arm.hold()
    counters: dict[str, int] = field(default_factory=dict)


class SafetyFilter:
    """Workspace box + per-step limits. ``position`` is the current end-effector position (m)."""

    def __init__(self, workspace_min, workspace_max, max_translation_per_step: float,
                 max_rotation_per_step: float):
        self.lo = np.asarray(workspace_min, dtype=np.float64)
        self.hi = np.asarray(workspace_max, dtype=np.float64)
        self.max_translation = float(max_translation_per_step)
        self.max_rotation = float(max_rotation_per_step)
        if not (np.all(self.lo < self.hi) and self.max_translation > 0 and self.max_rotation > 0):
            raise ValueError("SafetyFilter needs min < max on every axis and positive step limits")

    @classmethod
    def from_calibration(cls, cal) -> SafetyFilter:
        """From a ``calibration.schema.CalibrationFile``."""
        return cls(cal.workspace.min, cal.workspace.max, cal.limits.max_translation_per_step,
                   cal.limits.max_rotation_per_step)

    def hold_action(self, gripper: float) -> np.ndarray:
        """The action recorded for a step where the arm held still."""
        g = float(gripper) if np.isfinite(gripper) else 0.0
        return np.array([0, 0, 0, 0, 0, 0, min(max(g, 0.0), 1.0)], dtype=np.float64)

    def filter(self, action, position, gripper: float) -> SafeAction:
        counters: dict[str, int] = {}
        try:
            a = np.asarray(action, dtype=np.float64).reshape(-1)
        except (TypeError, ValueError):
            return SafeAction(self.hold_action(gripper), True, {HOLD_BAD_SHAPE: 1})
        if a.shape != (ACTION_DIM,):
            return SafeAction(self.hold_action(gripper), True, {HOLD_BAD_SHAPE: 1})
        if not np.all(np.isfinite(a)):
            return SafeAction(self.hold_action(gripper), True, {HOLD_NONFINITE: 1})
        pos = np.asarray(position, dtype=np.float64)
        if pos.shape != (3,) or not np.all(np.isfinite(pos)):  # we do not know where the arm is
            return SafeAction(self.hold_action(gripper), True, {HOLD_NONFINITE: 1})

        delta = a[:3].copy()
        # 2. workspace: clamp the target, then express it as a delta again. From inside the box the
        #    clamped target is inside; from outside, it moves toward the box.
        target = pos + delta
        clamped = np.clip(target, self.lo, self.hi)
        if not np.array_equal(clamped, target):
            counters[CLAMP_WORKSPACE] = 1
            delta = clamped - pos
        # 3. translation step limit. Scaling keeps the direction; the box is convex, so a shorter
        #    step toward a point inside it stays inside it.
        norm = float(np.linalg.norm(delta))
        if norm > self.max_translation:
            counters[CLAMP_TRANSLATION] = 1
            delta = delta * (self.max_translation / norm)
        # 4. rotation step limit: the rotation vector's length is the angle turned (interface/action.py).
        rot = a[3:6].copy()
        rnorm = float(np.linalg.norm(rot))
        if rnorm > self.max_rotation:
            counters[CLAMP_ROTATION] = 1
            rot = rot * (self.max_rotation / rnorm)
        # 5. gripper
        g = float(a[6])
        if g < 0.0 or g > 1.0:
            counters[CLAMP_GRIPPER] = 1
            g = min(max(g, 0.0), 1.0)
        return SafeAction(np.concatenate([delta, rot, [g]]), False, counters)
