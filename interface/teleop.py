"""Interventions: a person (or, in a simulator, a scripted expert) drives the arm instead of the policy.

An ``InterventionSource`` is asked by the control loop once per tick, with the arm state it just
read and the action the policy proposes for this tick (a scripted operator compares the two; a
person's device ignores it). It answers ``None`` while it does not want the arm (the policy drives), or a ``TeleopAction``
while it does. The loop executes that action through the same SafetyFilter as a policy action, and
holds the arm instead when the action is older than its teleop deadline: a source whose link dies
(a closed page, an unplugged gamepad, a hung reader thread) keeps returning its last action with
its old time, so the arm holds and never runs away on a stale command.

Pure numpy: no torch, nothing of ours beyond ``interface``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

from interface.action import ACTION_DIM
from interface.robot import ArmState

# Who drove an intervention step (StepMsg.intervention_source).
SOURCE_PAGE, SOURCE_GAMEPAD, SOURCE_SCRIPTED, SOURCE_HAND = "page", "gamepad", "scripted", "hand"


@dataclass(frozen=True)
class TeleopAction:
    """One tick's action from the operator, in the units of ``interface.action`` (before safety)."""

    action: np.ndarray  # [7]: per-tick translation (m) and rotation vector (rad), absolute gripper
    source: str  # SOURCE_PAGE, SOURCE_GAMEPAD, SOURCE_SCRIPTED, ...
    t_command: float  # time.monotonic() when the operator's command was made: its age gates motion
    seq: int = -1  # the command's sequence number at its source (-1: none), for latency reports
    # the operator moved the arm with their hands (hand-guiding): the step happened already; the loop
    # commands nothing and records the motion as the step's action
    by_hand: bool = False

    def __post_init__(self) -> None:
        a = np.asarray(self.action, dtype=np.float64).reshape(-1)
        if a.shape != (ACTION_DIM,):
            raise ValueError(f"a teleop action has {ACTION_DIM} values, got {a.shape}")
        object.__setattr__(self, "action", a)


@runtime_checkable
class InterventionSource(Protocol):
    """Asked every control tick. ``None``: not driving (the policy drives). A ``TeleopAction``:
    the operator drives this tick (an old one makes the arm hold). ``proposed``: the policy's
    action for this tick before safety ([7], robot units), None while it has none (waiting for a
    reply); it is what a scripted operator judges, and what is stored as ``proposed_action``."""

    name: str

    def command(self, state: ArmState, proposed: np.ndarray | None = None) -> TeleopAction | None: ...


def intent_to_action(translation, rotation, gripper: float | None, state: ArmState, period_s: float,
                     linear_speed: float, angular_speed: float) -> np.ndarray:
    """A velocity intent (each axis in [-1, 1], as a stick or a key gives it) as one tick's action:
    ``intent * speed * period``; ``gripper`` None keeps the gripper where it is."""
    t = np.clip(np.asarray(translation, dtype=np.float64).reshape(3), -1.0, 1.0)
    r = np.clip(np.asarray(rotation, dtype=np.float64).reshape(3), -1.0, 1.0)
    g = float(state.gripper) if gripper is None else float(gripper)
    return np.concatenate([t * linear_speed * period_s, r * angular_speed * period_s, [g]])


@dataclass(frozen=True)
class GamepadReading:
    """One snapshot of a gamepad: what ``GamepadDevice.read`` returns (SDL's numbering and signs)."""

    axes: tuple[float, ...]  # each in [-1, 1]
    buttons: tuple[bool, ...]
    hats: tuple[tuple[int, int], ...] = ()  # D-pads: (x, y), each -1, 0 or 1


class GamepadDevice(Protocol):
    """A gamepad (``hardware.gamepad.PygameGamepad``). ``read`` raises RuntimeError when it is gone."""

    def read(self) -> GamepadReading: ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class SpaceMouseReading:
    """One snapshot of a 3D mouse: what ``SpaceMouseDevice.read`` returns, each axis in [-1, 1]."""

    translation: tuple[float, float, float]  # the puck pushed along the device's x, y, z
    rotation: tuple[float, float, float]  # the puck tilted/twisted: roll, pitch, yaw
    buttons: tuple[bool, ...] = ()


class SpaceMouseDevice(Protocol):
    """A 3D mouse (``hardware.spacemouse.PySpaceMouse``). ``read`` raises RuntimeError when it is gone."""

    def read(self) -> SpaceMouseReading: ...

    def close(self) -> None: ...
