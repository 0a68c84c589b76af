"""Demonstrations by hand-guiding: the operator moves the arm with their hands and each tick's pose
change, in the action convention (interface/action.py: base-frame translation, base-frame rotation
vector, absolute gripper), is recorded as the step's action.

Only while recording demonstrations (``robot.record_demos``, the loop's mode ``record``): then the
loop commands no motion while a person guides (``TeleopAction.by_hand``), and nothing else moves
the arm. On the Franka the arm is put in its guiding mode at each demonstration's start
(``FrankaArm.enable_guiding``, franky's ``Robot.set_guiding_mode``: every axis free while the
operator presses the two buttons at the flange). The operator "drives" while the arm moves: a pose
at rest for ``release_s`` is not recorded (a demo has no idle steps), as with the other devices.
"""

from __future__ import annotations

import logging
import math
import time

import numpy as np

from interface.action import action_between
from interface.robot import ArmState
from interface.teleop import SOURCE_HAND, TeleopAction

log = logging.getLogger(__name__)


class HandGuiding:
    """The arm's own pose, read every tick, as the operator's command (record mode only)."""

    name = SOURCE_HAND

    def __init__(self, arm, min_translation_m: float = 0.0005, min_rotation_rad: float = 0.002,
                 release_s: float = 0.5):
        self.arm = arm
        self.min_translation_m, self.min_rotation_rad, self.release_s = min_translation_m, min_rotation_rad, release_s
        self.active = False
        self._last: tuple[np.ndarray, np.ndarray, float] | None = None
        self._t_moved = -math.inf

    def start_episode(self, episode_id: str, mode: str) -> None:
        """Guiding belongs to demonstrations: the policy must never command an arm a person moves."""
        self.active = mode == "record"
        self._last, self._t_moved = None, -math.inf
        enable = getattr(self.arm, "enable_guiding", None)
        if self.active and enable is not None:
            try:
                enable()
            except Exception as e:  # noqa: BLE001 - the demo goes on with the arm holding, and says why
                log.error("hand-guiding could not be enabled (%s); the arm holds, guide it after a recover", e)

    def command(self, state: ArmState, proposed: np.ndarray | None = None) -> TeleopAction | None:
        if not self.active:
            return None
        now = time.monotonic()
        last = self._last
        self._last = (np.asarray(state.position, float).copy(), np.asarray(state.rpy, float).copy(),
                      float(state.gripper))
        if last is None:
            return None
        action = action_between(last[0], last[1], state.position, state.rpy, float(state.gripper))
        if (np.linalg.norm(action[:3]) > self.min_translation_m or np.linalg.norm(action[3:6]) > self.min_rotation_rad
                or abs(float(state.gripper) - last[2]) > 0.05):
            self._t_moved = now
        if now - self._t_moved > self.release_s:
            return None
        return TeleopAction(action, SOURCE_HAND, now, by_hand=True)
