"""A 3D mouse (3Dconnexion SpaceMouse and compatible) through pyspacemouse over hidapi, imported
only here (``pip install '.[teleop]'``; the system needs libhidapi: ``apt-get install libhidapi-hidraw0``
and read access to its ``/dev/hidraw*``, docs/teleop.md).

Why a SpaceMouse: six axes at once (x, y, z and the three rotations), which is what HIL-SERL and
RLinf set-ups drive a Franka with for demonstrations. pyspacemouse knows the 3Dconnexion models'
report layouts and scales every axis to [-1, 1]. Only the reader thread of
``robot_client.spacemouse.SpaceMouseTeleop`` calls ``read``; an unplugged device makes ``read``
raise RuntimeError until it is back (the control loop holds the arm meanwhile).
"""

from __future__ import annotations

import logging

from interface.teleop import SpaceMouseReading

log = logging.getLogger(__name__)


def _pyspacemouse():
    try:
        import pyspacemouse
    except ImportError as e:
        raise ImportError("the SpaceMouse needs pyspacemouse: pip install 'vlaloop[teleop]' "
                          "(or pip install pyspacemouse) and the hidapi library (apt-get install "
                          "libhidapi-hidraw0)") from e
    return pyspacemouse


class PySpaceMouse:
    """The first SpaceMouse pyspacemouse finds (``device``: a model name to pick one). Raises
    RuntimeError at once if there is none."""

    def __init__(self, device: str | None = None):
        self.lib = _pyspacemouse()
        self.name = device
        self.dev = None
        self._open()
        log.info("SpaceMouse: %s", getattr(self.dev, "name", device or "first found"))

    def _open(self) -> None:
        try:
            self.dev = self.lib.open(device=self.name, nonblocking=True)
        except Exception as e:  # noqa: BLE001 - hidapi missing, no device, no permission: one message
            self.dev = None
            raise RuntimeError(f"no SpaceMouse: {type(e).__name__}: {e} (plug one in, install libhidapi-hidraw0, "
                               f"check that this user may read /dev/hidraw*)") from None
        if not self.dev:
            self.dev = None
            raise RuntimeError("no SpaceMouse found (plug one in, check that this user may read /dev/hidraw*)")

    def read(self) -> SpaceMouseReading:
        if self.dev is None:
            self._open()  # raises until the device is back
        try:
            st = self.dev.read()
        except Exception as e:  # noqa: BLE001 - an unplugged device raises OSError/IOError inside hidapi
            self.dev = None
            raise RuntimeError(f"SpaceMouse lost: {type(e).__name__}: {e}") from None
        return SpaceMouseReading(translation=(float(st.x), float(st.y), float(st.z)),
                                 rotation=(float(st.roll), float(st.pitch), float(st.yaw)),
                                 buttons=tuple(bool(b) for b in st.buttons))

    def close(self) -> None:
        if self.dev is not None:
            try:
                self.dev.close()
            except Exception:  # noqa: BLE001 - closing a device that is gone
                pass
            self.dev = None
