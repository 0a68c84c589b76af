"""The robot client's intervention sources (``interface.teleop.InterventionSource``), docs/teleop.md.

* ``PageTeleop``: the operator page. The server puts the page's latest command into every
  ``/v1/act`` reply while the operator drives (``ActResponse.teleop``); the control loop hands each
  reply's field to ``receive`` and asks ``command`` every tick. A reply without the field means the
  operator handed back.
* ``GamepadTeleop``: a gamepad at the robot workstation (the device is ``hardware.gamepad``; tests
  use a stand-in device). A reader thread polls the device; the operator drives only while the
  dead-man button is held. Released: ``None``, the policy drives. A device that stops answering
  (unplugged, reader thread stuck) leaves its last reading to age, so the loop holds the arm.

Both turn a velocity intent (each axis in [-1, 1]) into one tick's action with the robot's teleop
speeds (``interface.teleop.intent_to_action``); the SafetyFilter limits it like any other action.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, fields

import numpy as np

from interface.robot import ArmState
from interface.teleop import (
    SOURCE_GAMEPAD,
    SOURCE_PAGE,
    GamepadDevice,
    GamepadReading,
    TeleopAction,
    intent_to_action,
)
from protocol.messages import TeleopCommand

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TeleopSpeeds:
    """How fast a full intent moves the arm."""

    period_s: float
    """The control period (one tick), s: an intent becomes a per-tick step of speed * period."""
    linear_speed: float
    """m/s of the end effector at full intent on one axis."""
    angular_speed: float
    """rad/s about one axis at full intent."""


class PageTeleop:
    """The operator page, through the server's /v1/act replies."""

    name = SOURCE_PAGE

    def __init__(self, speeds: TeleopSpeeds):
        self.speeds = speeds
        self._latest: TeleopCommand | None = None
        self._t_command = 0.0  # monotonic: when the server received the latest command (estimated)

    def reset(self) -> None:
        """A new episode: nothing from an earlier one carries over."""
        self._latest = None

    def receive(self, teleop: TeleopCommand | None, t_sent: float, t_received: float, server_s: float) -> None:
        """One reply's teleop field (replies arrive in the order they were sent). The command's time on
        this robot's clock: the reply arrived at ``t_received``, its return trip took about half the
        network round trip (the round trip minus ``server_s`` spent in the server), and the server
        had held the command ``age_s`` when it built the reply."""
        self._latest = teleop
        if teleop is not None:
            one_way = max(0.0, (t_received - t_sent) - server_s) / 2
            self._t_command = t_received - one_way - teleop.age_s

    @property
    def driving(self) -> bool:
        return self._latest is not None

    @property
    def operator(self) -> str | None:
        """Who drives from the page (a server tells only a robot recording demonstrations)."""
        return None if self._latest is None else self._latest.operator

    def command(self, state: ArmState, proposed: np.ndarray | None = None) -> TeleopAction | None:
        c = self._latest
        if c is None:
            return None
        action = intent_to_action(c.translation, c.rotation, c.gripper, state, self.speeds.period_s,
                                  self.speeds.linear_speed, self.speeds.angular_speed)
        return TeleopAction(action, SOURCE_PAGE, self._t_command, seq=c.seq)


class TakeoverWatch:
    """Learns of a page take-over within milliseconds, for a robot that executes chunks open loop.

    Such a robot asks the policy once per chunk, so the reply that carries the take-over would come
    up to a chunk later. This thread long-polls ``GET /v1/robots/{id}/teleop/wanted`` for the running
    episode instead; the control loop reads ``pending`` every tick and, when an operator waits, stops
    executing the chunk (holds) and queries every tick until the reply carries the operator's
    command. ``poll(episode_id, driving, wait_s) -> bool`` is ``ServerClient.takeover_wanted``.
    A server without the route (404) turns the watch off: take-overs then arrive with the next reply."""

    def __init__(self, poll, wait_s: float = 2.0, retry_s: float = 0.5):
        self.poll, self.wait_s, self.retry_s = poll, wait_s, retry_s
        self.episode_id: str | None = None  # set by the control loop while an episode runs
        self._wanted: str | None = None  # the episode an operator has taken over
        self.disabled = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="takeover-watch", daemon=True)

    def start(self) -> TakeoverWatch:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def pending(self, episode_id: str) -> bool:
        """An operator has taken over this episode (the loop has not seen their command yet)."""
        return self._wanted == episode_id

    def _run(self) -> None:
        while not self._stop.is_set() and not self.disabled:
            episode = self.episode_id
            if episode is None:
                self._stop.wait(0.02)
                continue
            try:
                driving = self.poll(episode, self._wanted == episode, self.wait_s)
            except Exception as e:  # noqa: BLE001 - a dead or old server: the next reply still carries it
                if "HTTP 404" in str(e):
                    self.disabled = f"the server has no take-over long-poll ({e})"
                    log.warning("%s; take-overs arrive with the next policy reply", self.disabled)
                    return
                self._stop.wait(self.retry_s)
                continue
            if episode == self.episode_id:
                self._wanted = episode if driving else None


# ---------------------------------------------------------------- gamepad


@dataclass(frozen=True)
class GamepadMapping:
    """Which stick and button does what. The defaults follow SDL's numbering of an Xbox-layout pad
    (Xbox, 8BitDo in X mode, Logitech F310 in XInput mode); a PlayStation pad has the same layout.
    Motion is in the robot BASE frame as seen by an operator standing in front of the robot, facing it."""

    deadman_button: int = 4
    """Held: the operator drives. Released: the policy drives again (never a runaway). LB by default."""
    close_button: int = 0
    """Pressed: close the gripper (stays closed until open_button). A by default."""
    open_button: int = 1
    """Pressed: open the gripper. B by default."""
    axis_x: int = 1
    """Stick axis for base x (forward/back): the left stick's vertical axis."""
    axis_y: int = 0
    """Stick axis for base y (left/right): the left stick's horizontal axis."""
    axis_z: int = 4
    """Stick axis for base z (up/down): the right stick's vertical axis."""
    axis_yaw: int = 3
    """Stick axis for the rotation about base z: the right stick's horizontal axis."""
    sign_x: float = -1.0
    """Multiplies axis_x (SDL reports a stick pushed away from you as -1)."""
    sign_y: float = -1.0
    """Multiplies axis_y (stick left = -1 in SDL, and left is +y)."""
    sign_z: float = -1.0
    """Multiplies axis_z (right stick up = -1 in SDL, and up is +z)."""
    sign_yaw: float = -1.0
    """Multiplies axis_yaw (right stick left turns counter-clockwise seen from above)."""
    ready_button: int = 7
    """Between episodes: the scene is reset, start the next one (Start by default; scene_reset operator)."""
    hat_roll_pitch: int = 0
    """D-pad (hat) for roll (left/right) and pitch (up/down); -1: none."""
    dead_zone: float = 0.12
    """Stick deflections smaller than this count as zero (a resting stick is never exactly 0)."""

    @classmethod
    def from_overrides(cls, overrides: dict) -> GamepadMapping:
        """The defaults with ``robot.gamepad_mapping`` applied; an unknown key is an error."""
        known = {f.name for f in fields(cls)}
        unknown = set(overrides) - known
        if unknown:
            raise ValueError(f"robot.gamepad_mapping: unknown keys {sorted(unknown)}; known: {sorted(known)}")
        return cls(**overrides)

    def _axis(self, reading: GamepadReading, index: int, sign: float) -> float:
        if not 0 <= index < len(reading.axes):
            return 0.0
        v = float(reading.axes[index])
        if not abs(v) > self.dead_zone:  # also NaN
            return 0.0
        # rescale so the intent starts at 0 at the edge of the dead zone and reaches 1 at the stop
        return sign * (abs(v) - self.dead_zone) / (1.0 - self.dead_zone) * (1.0 if v > 0 else -1.0)

    @staticmethod
    def _pressed(reading: GamepadReading, index: int) -> bool:
        return 0 <= index < len(reading.buttons) and bool(reading.buttons[index])

    def engaged(self, reading: GamepadReading) -> bool:
        return self._pressed(reading, self.deadman_button)

    def intent(self, reading: GamepadReading) -> tuple[list[float], list[float], float | None]:
        """(translation, rotation, gripper command or None) of one reading; axes in [-1, 1]."""
        translation = [self._axis(reading, self.axis_x, self.sign_x), self._axis(reading, self.axis_y, self.sign_y),
                       self._axis(reading, self.axis_z, self.sign_z)]
        roll = pitch = 0.0
        if 0 <= self.hat_roll_pitch < len(reading.hats):
            hx, hy = reading.hats[self.hat_roll_pitch]
            roll, pitch = float(hx), float(hy)
        rotation = [roll, pitch, self._axis(reading, self.axis_yaw, self.sign_yaw)]
        gripper = 0.0 if self._pressed(reading, self.close_button) else (
            1.0 if self._pressed(reading, self.open_button) else None)
        return ([min(1.0, max(-1.0, v)) for v in translation], [min(1.0, max(-1.0, v)) for v in rotation],
                gripper)


class PolledTeleop:
    """A device at the robot read by its own thread at `poll_hz`: the reading thread, its retry on
    a failed read and the ready button's latch, shared by the gamepad and the SpaceMouse. A
    subclass takes each reading in ``_take(reading, now)`` (under the lock) and answers ``command``."""

    name = ""
    unplugged = "the arm holds; retrying"  # what a failed read means for the arm, in the log

    def __init__(self, device, speeds: TeleopSpeeds, poll_hz: float = 100.0, retry_s: float = 0.5):
        self.device = device
        self.speeds = speeds
        self.poll_s = 1.0 / poll_hz
        self.retry_s = retry_s
        self._lock = threading.Lock()
        self._reading = None
        self._t_read = 0.0  # monotonic time of the latest successful read
        self._gripper: float | None = None  # latched gripper command; None: as the arm is
        self.error: str | None = None  # the device's latest failure (cleared by a good read)
        self._ready = False  # the ready button was pressed since the last ready_pressed()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)

    def start(self):
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.device.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                reading = self.device.read()
            except RuntimeError as e:  # unplugged: the last reading ages, the loop holds the arm
                if self.error != str(e):
                    log.error("%s: %s (%s)", self.name, e, self.unplugged)
                self.error = str(e)
                self._stop.wait(self.retry_s)
                continue
            with self._lock:
                self._take(reading, time.monotonic())
            self.error = None
            self._stop.wait(self.poll_s)

    def _take(self, reading, now: float) -> None:
        raise NotImplementedError

    def ready_pressed(self) -> bool:
        """The ready button was pressed since the last call (the operator has reset the scene)."""
        with self._lock:
            ready, self._ready = self._ready, False
        return ready


class GamepadTeleop(PolledTeleop):
    """A gamepad with a dead-man button, read by its own thread."""

    name = SOURCE_GAMEPAD
    unplugged = "the arm holds while the dead-man was held; retrying"

    def __init__(self, device: GamepadDevice, speeds: TeleopSpeeds, mapping: GamepadMapping | None = None,
                 poll_hz: float = 100.0, retry_s: float = 0.5):
        super().__init__(device, speeds, poll_hz, retry_s)
        self.mapping = mapping or GamepadMapping()
        self._ready_down = False

    def _take(self, reading: GamepadReading, now: float) -> None:
        self._reading, self._t_read = reading, now
        self._latch_gripper(reading)
        down = self.mapping._pressed(reading, self.mapping.ready_button)
        self._ready = self._ready or (down and not self._ready_down)  # a press, not a held button
        self._ready_down = down

    def _latch_gripper(self, reading: GamepadReading) -> None:
        """A gripper button tap between two control ticks still counts: latched at the device's rate."""
        if not self.mapping.engaged(reading):
            self._gripper = None  # the next take-over starts from the gripper as it is
            return
        gripper = self.mapping.intent(reading)[2]
        if gripper is not None:
            self._gripper = gripper

    def command(self, state: ArmState, proposed: np.ndarray | None = None) -> TeleopAction | None:
        with self._lock:
            reading, t_read, gripper = self._reading, self._t_read, self._gripper
        if reading is None or not self.mapping.engaged(reading):
            return None
        translation, rotation, _ = self.mapping.intent(reading)
        action = intent_to_action(translation, rotation, gripper, state, self.speeds.period_s,
                                  self.speeds.linear_speed, self.speeds.angular_speed)
        return TeleopAction(action, SOURCE_GAMEPAD, t_read)
