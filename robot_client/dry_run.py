"""`vlaloop robot --dry-run`: everything runs -- cameras, the server, the safety filter, the
recording -- except motion. The arm is told to hold where a move would go, and never homes, so a
first run on real hardware shows what the policy would do (the actions are logged and stored)
while the arm stays still. Dry-run episodes end as ``aborted`` (end_reason as usual, ``dry_run``
in their metadata): stored for inspection, never trained on."""

from __future__ import annotations

import logging

import numpy as np

from interface.robot import Arm, ArmState

log = logging.getLogger(__name__)


class HoldingArm(Arm):
    """Wraps a real arm: state, hold, recover and close pass through; moves become holds."""

    def __init__(self, inner: Arm):
        self.inner = inner
        self.would_move = 0  # move_delta calls turned into holds
        self.last_action: np.ndarray | None = None
        # The inner arm is already holding: a real arm (Franka) would otherwise get a fresh stop
        # motion every tick. Cleared by recover(), after which the next move holds again.
        self._held = False

    def _hold_once(self) -> None:
        if not self._held:
            self.inner.hold()
            self._held = True

    def reset_home(self) -> None:
        log.info("dry run: not moving home; holding where the arm is")
        self._hold_once()

    def state(self) -> ArmState:
        return self.inner.state()

    def move_delta(self, action: np.ndarray) -> None:
        self.would_move += 1
        self.last_action = np.asarray(action, dtype=float).copy()
        if self.would_move % 10 == 1:
            log.info("dry run: would move by %s (holding)", np.round(self.last_action, 4).tolist())
        self._hold_once()

    def hold(self) -> None:
        self.inner.hold()  # an explicit hold (watchdog, episode end) always reaches the arm
        self._held = True

    def recover(self) -> None:
        self.inner.recover()
        self._held = False

    def close(self) -> None:
        self.inner.close()
