"""A gamepad through pygame-ce's joystick API (SDL2), imported only here (``pip install '.[teleop]'``).

Why a gamepad through pygame: SDL2 (bundled in the pygame-ce wheel) reads Xbox, PlayStation and most
generic USB/Bluetooth pads on Linux, macOS and Windows with no driver or udev rule beyond read
access to the input device, and gives every pad the same numbering; LeRobot's gamepad teleop uses
the same API. pygame-ce is the maintained fork of pygame (same ``import pygame``). docs/teleop.md.

No window is needed: without a display SDL's dummy video driver is used. Only the reader thread of
``robot_client.teleop.GamepadTeleop`` calls ``read``. An unplugged pad makes ``read`` raise
RuntimeError until one is plugged in again (the control loop holds the arm meanwhile).
"""

from __future__ import annotations

import logging
import os

from interface.teleop import GamepadReading

log = logging.getLogger(__name__)


def _pygame():
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    if not os.environ.get("DISPLAY") and not os.environ.get("WAYLAND_DISPLAY"):
        os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # a robot workstation may have no screen
    try:
        import pygame
    except ImportError as e:
        raise ImportError("the gamepad needs pygame-ce: pip install 'vlaloop[teleop]' "
                          "(or pip install pygame-ce)") from e
    return pygame


class PygameGamepad:
    """Joystick ``index`` (pygame numbering). Raises RuntimeError at once if there is none."""

    def __init__(self, index: int = 0):
        self.pg = _pygame()
        self.pg.display.init()  # the event pump, which updates joystick state, needs the video subsystem
        self.pg.joystick.init()
        self.index = index
        self.joystick = None
        self._open()
        log.info("gamepad %d: %s (%d axes, %d buttons, %d hats)", index, self.joystick.get_name(),
                 self.joystick.get_numaxes(), self.joystick.get_numbuttons(), self.joystick.get_numhats())

    def _open(self) -> None:
        count = self.pg.joystick.get_count()
        if count <= self.index:
            raise RuntimeError(f"no gamepad {self.index}: {count} connected (plug one in, check that this user "
                               f"may read /dev/input/event*, or pick another with robot.gamepad_index)")
        self.joystick = self.pg.joystick.Joystick(self.index)

    def read(self) -> GamepadReading:
        pg = self.pg
        for event in pg.event.get((pg.JOYDEVICEREMOVED, pg.JOYDEVICEADDED)):
            if event.type == pg.JOYDEVICEREMOVED:
                self.joystick = None
        if self.joystick is None:
            self._open()  # raises until a pad is back
        js = self.joystick
        try:
            return GamepadReading(axes=tuple(js.get_axis(i) for i in range(js.get_numaxes())),
                                  buttons=tuple(bool(js.get_button(i)) for i in range(js.get_numbuttons())),
                                  hats=tuple(tuple(js.get_hat(i)) for i in range(js.get_numhats())))
        except pg.error as e:
            self.joystick = None
            raise RuntimeError(f"gamepad {self.index} lost: {e}") from None

    def close(self) -> None:
        self.pg.joystick.quit()
