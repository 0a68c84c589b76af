"""The two small interfaces every hardware backend implements (DESIGN.md, "Robot client").

Units: metres and radians. The action convention is the 7-D end-effector delta of DESIGN.md:
dx, dy, dz (m), droll, dpitch, dyaw (rad), gripper (0 closed .. 1 open). The state vector
the policy sees is ``ArmState.vector()``: x, y, z, roll, pitch, yaw, gripper (7 floats).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

import numpy as np

STATE_DIM = 7
ACTION_DIM = 7


class ArmError(RuntimeError):
    """The arm refused or aborted a motion (a Franka reflex, a lost connection...)."""


@dataclass
class ArmState:
    position: np.ndarray  # [3] end effector in the base frame, m
    rpy: np.ndarray  # [3] roll, pitch, yaw, rad
    gripper: float  # 0 closed .. 1 open
    t: float  # time of the reading, unix s
    error: str | None = None  # set while the arm is in an error state

    def vector(self) -> np.ndarray:
        return np.concatenate([self.position, self.rpy, [self.gripper]]).astype(np.float32)


@dataclass
class Frame:
    image: np.ndarray  # H x W x 3 uint8 RGB
    t_capture: float  # unix s, when the sensor captured it
    seq: int = 0  # frame counter; a repeated seq means a stale (dropped) frame
    meta: dict = field(default_factory=dict)


class Arm(abc.ABC):
    """An end-effector-delta arm. Motions are asynchronous: a new one replaces the running one."""

    @abc.abstractmethod
    def reset_home(self) -> None:
        """Move to the home pose and open the gripper (blocking)."""

    @abc.abstractmethod
    def state(self) -> ArmState: ...

    @abc.abstractmethod
    def move_delta(self, action: np.ndarray) -> None:
        """Start a relative motion by action[:6] and set the gripper to action[6]. The action has
        already passed the SafetyFilter. Raises ArmError if the arm is in an error state."""

    @abc.abstractmethod
    def hold(self) -> None:
        """Stop and hold the current pose. Must be safe to call at any time, from any state."""

    @abc.abstractmethod
    def recover(self) -> None:
        """Clear an error state (Franka: recover_from_errors)."""

    def close(self) -> None:  # noqa: B027 - optional
        """Release the connection."""


class Camera(abc.ABC):
    name: str

    @abc.abstractmethod
    def read(self) -> Frame:
        """Return the latest frame. Raises RuntimeError when the camera is gone."""

    def close(self) -> None:  # noqa: B027 - optional
        """Release the device."""
