"""The safety box: from two entered corners, or recorded while the operator guides the arm (the
software only reads `arm.state()` then; it never commands a motion). The box is shrunk by a
margin so the policy stays clear of the places the operator marked as the limit."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import numpy as np

from calibration.schema import CalibrationError, Workspace
from interface.robot import Arm


def box_with_margin(points: np.ndarray, margin_m: float) -> Workspace:
    """The axis-aligned box around `points` (N x 3), shrunk by `margin_m` on every side."""
    pts = np.asarray(points, dtype=float).reshape(-1, 3)
    lo, hi = pts.min(axis=0) + margin_m, pts.max(axis=0) - margin_m
    thin = [axis for axis, a, b in zip("xyz", lo, hi, strict=True) if not a < b]
    if thin:
        raise CalibrationError(f"the recorded box is too thin along {', '.join(thin)} for a {margin_m} m margin: "
                               f"extent {np.round(pts.max(axis=0) - pts.min(axis=0), 4).tolist()} m; move further "
                               f"along that axis or lower --margin")
    return Workspace(min=[round(float(v), 5) for v in lo], max=[round(float(v), 5) for v in hi])


def parse_point(text: str) -> np.ndarray:
    try:
        values = [float(v) for v in text.replace(" ", "").split(",")]
    except ValueError:
        values = []
    if len(values) != 3 or not np.all(np.isfinite(values)):
        raise CalibrationError(f"expected a point as x,y,z in metres, got {text!r}")
    return np.array(values)


def workspace_from_corners(corner_a: np.ndarray, corner_b: np.ndarray, margin_m: float) -> Workspace:
    return box_with_margin(np.stack([corner_a, corner_b]), margin_m)


def record_guided_positions(arm: Arm, duration_s: float, rate_hz: float = 20.0,
                            stop: threading.Event | None = None,
                            on_sample: Callable[[np.ndarray], None] | None = None) -> np.ndarray:
    """Sample the end-effector position while the operator moves the arm by hand, until `stop` is
    set (Enter) or `duration_s` passes. Returns N x 3 positions."""
    stop = stop or threading.Event()
    deadline = time.monotonic() + duration_s
    positions = []
    while not stop.is_set() and time.monotonic() < deadline:
        s = arm.state()
        if s.error:
            raise CalibrationError(f"the arm reports an error while recording: {s.error}")
        positions.append(np.asarray(s.position, dtype=float).copy())
        if on_sample:
            on_sample(positions[-1])
        stop.wait(1.0 / rate_hz)
    if len(positions) < 2:
        raise CalibrationError("recorded fewer than two arm positions; guide the arm for longer")
    return np.array(positions)


def stop_on_enter() -> threading.Event:
    """An event set when the operator presses Enter (a daemon thread reads stdin)."""
    stop = threading.Event()

    def wait() -> None:
        try:
            input()
        except (EOFError, OSError, ValueError):
            return  # no usable stdin: only the duration stops the recording
        stop.set()

    threading.Thread(target=wait, daemon=True).start()
    return stop
