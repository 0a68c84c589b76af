"""A 3D mouse at the robot (SpaceMouse class) as an intervention source: six axes at once.

The puck is its own dead-man: it springs back to rest when let go, and a puck at rest (every axis
within the dead zone) for ``release_s`` hands the arm back to the policy (while recording
demonstrations, the arm holds). So a dropped or untouched device never drives. The left button
toggles the gripper, the right button is the scene reset's "ready" (docs/teleop.md). The device is
read by its own thread at ``poll_hz``: the control loop never waits on hidapi, and a button press
between two ticks still counts. An unplugged device makes the reads fail: the last reading ages
and the arm holds (the episode is aborted if that lasts), as with the gamepad.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np

from interface.robot import ArmState
from interface.teleop import SpaceMouseDevice, SpaceMouseReading, TeleopAction, intent_to_action
from robot_client.teleop import PolledTeleop, TeleopSpeeds

SOURCE_SPACEMOUSE = "spacemouse"


@dataclass(frozen=True)
class SpaceMouseMapping:
    """How the puck's axes map to the robot BASE frame, for an operator in front of the robot with
    the device's cable pointing away from them (pyspacemouse's axes: x right, y forward, z up)."""

    signs_translation: tuple[float, float, float] = (1.0, -1.0, 1.0)
    """Multiply the device's (y, x, z) to give base (x, y, z), as the gamepad's sticks do: puck pushed
    forward (away from the operator) = +x, puck pushed right = -y, puck pulled up = +z."""
    signs_rotation: tuple[float, float, float] = (1.0, 1.0, 1.0)
    """Multiply the device's (roll, pitch, yaw) to give base (roll, pitch, yaw)."""
    dead_zone: float = 0.08
    """Axis values smaller than this count as zero (a resting puck reads a little noise)."""
    release_s: float = 0.5
    """The puck at rest this long hands back (a short pause while driving keeps the arm)."""
    gripper_button: int = 0
    """Toggles the gripper (left button)."""
    ready_button: int = 1
    """The scene reset's "ready" between episodes (right button)."""

    @classmethod
    def from_overrides(cls, overrides: dict) -> SpaceMouseMapping:
        """The defaults with ``robot.spacemouse_mapping`` applied; an unknown key is an error."""
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(f"robot.spacemouse_mapping: unknown keys {sorted(unknown)}; known: {sorted(known)}")
        values = {k: tuple(float(x) for x in v) if k.startswith("signs_") else v for k, v in overrides.items()}
        return cls(**values)

    def _zone(self, v: float) -> float:
        if not abs(v) > self.dead_zone:  # also NaN
            return 0.0
        return float(np.clip((abs(v) - self.dead_zone) / (1.0 - self.dead_zone), 0.0, 1.0)) * (1.0 if v > 0 else -1.0)

    def intent(self, reading: SpaceMouseReading) -> tuple[list[float], list[float]]:
        """(translation, rotation) intents in the base frame, each axis in [-1, 1]."""
        dx, dy, dz = (self._zone(v) for v in reading.translation)
        sx, sy, sz = self.signs_translation
        translation = [sx * dy, sy * dx, sz * dz]
        rotation = [s * self._zone(v) for s, v in zip(self.signs_rotation, reading.rotation, strict=True)]
        return translation, rotation

    def pressed(self, reading: SpaceMouseReading, index: int) -> bool:
        return 0 <= index < len(reading.buttons) and bool(reading.buttons[index])


class SpaceMouseTeleop(PolledTeleop):
    """A 3D mouse read by its own thread; drives while the puck is deflected (and ``release_s`` after)."""

    name = SOURCE_SPACEMOUSE
    unplugged = "the arm holds while it drove; retrying"

    def __init__(self, device: SpaceMouseDevice, speeds: TeleopSpeeds, mapping: SpaceMouseMapping | None = None,
                 poll_hz: float = 100.0, retry_s: float = 0.5):
        super().__init__(device, speeds, poll_hz, retry_s)
        self.mapping = mapping or SpaceMouseMapping()
        self._t_active = -1e9  # the puck last deflected (or a button pressed)
        self._buttons: tuple[bool, ...] = ()

    def _take(self, reading: SpaceMouseReading, now: float) -> None:
        m = self.mapping
        pressed = [m.pressed(reading, i) and not (i < len(self._buttons) and self._buttons[i])
                   for i in range(len(reading.buttons))]  # press edges since the last reading
        if m.gripper_button < len(pressed) and pressed[m.gripper_button]:
            self._gripper = 0.0 if self._gripper in (None, 1.0) else 1.0
            self._t_active = now
        if m.ready_button < len(pressed) and pressed[m.ready_button]:
            self._ready = True
        translation, rotation = m.intent(reading)
        if any(translation) or any(rotation):
            self._t_active = now
        self._reading, self._t_read, self._buttons = reading, now, reading.buttons

    def command(self, state: ArmState, proposed: np.ndarray | None = None) -> TeleopAction | None:
        with self._lock:
            reading, t_read, t_active, gripper = self._reading, self._t_read, self._t_active, self._gripper
        if reading is None or t_read - t_active > self.mapping.release_s:
            with self._lock:
                self._gripper = None  # the next take-over starts from the gripper as it is
            return None
        translation, rotation = self.mapping.intent(reading)
        action = intent_to_action(translation, rotation, gripper, state, self.speeds.period_s,
                                  self.speeds.linear_speed, self.speeds.angular_speed)
        return TeleopAction(action, SOURCE_SPACEMOUSE, t_read)
