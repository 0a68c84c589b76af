"""The two small interfaces every hardware backend and simulator implements: `Arm` and `Camera`.

Units: metres and radians. Actions and states follow `interface.action`: the action is a 7-D
end-effector delta (dx, dy, dz, droll, dpitch, dyaw, gripper); the state vector the policy sees is
``ArmState.vector()``: x, y, z, roll, pitch, yaw, gripper (7 floats).
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field

import numpy as np

from interface.action import ACTION_DIM, STATE_DIM

__all__ = ["ACTION_DIM", "STATE_DIM", "Arm", "ArmError", "ArmState", "Camera", "Frame"]


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
