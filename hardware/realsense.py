"""Intel RealSense color camera through pyrealsense2 (imported only here).

One pipeline per serial (``config.enable_device(serial)``), color stream at the configured size.
Capture time comes from the frame itself (``get_timestamp()``, ms): in the ``system_time`` and
``global_time`` domains it is host unix time; in ``hardware_clock`` it is the device's own clock,
so the host arrival time is used instead and the domain is recorded in ``Frame.meta``.
After an unplug ``read()`` raises RuntimeError (the control loop holds); the next reads restart
the pipeline with exponential backoff until the camera is back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np

from interface.robot import Camera, Frame

log = logging.getLogger(__name__)


def require_connected(rs, serial: str) -> None:
    """Fail in a fraction of a second, naming what is plugged in, where pipeline.start() would wait
    several seconds for "No device connected"."""
    connected = sorted(d.get_info(rs.camera_info.serial_number) for d in rs.context().query_devices())
    if serial not in connected:
        raise RuntimeError(f"RealSense serial {serial} is not connected (connected: {connected or 'none'}); "
                           f"plug it into a USB3 port and check the serial with `rs-enumerate-devices`")


class RealSenseCamera(Camera):
    def __init__(self, name: str, serial: str, width: int = 640, height: int = 480, fps: int = 30,
                 pipeline_factory: Callable[[], object] | None = None, timeout_ms: int = 1000,
                 backoff_s: float = 0.5, max_backoff_s: float = 8.0, start: bool = True):
        import pyrealsense2 as rs

        self._rs = rs
        self.name = name
        self.serial = serial
        self.width, self.height, self.fps = width, height, fps
        self.timeout_ms = timeout_ms
        self._factory = pipeline_factory or rs.pipeline
        self._pipeline = None
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._next_attempt = 0.0
        self._failures = 0
        self.restarts = 0
        if start and pipeline_factory is None:
            require_connected(rs, serial)
        if start:
            self._start()

    def rs_config(self):
        cfg = self._rs.config()
        cfg.enable_device(self.serial)
        cfg.enable_stream(self._rs.stream.color, self.width, self.height, self._rs.format.rgb8, self.fps)
        return cfg

    def _start(self) -> None:
        pipeline = self._factory()
        pipeline.start(self.rs_config())
        self._pipeline = pipeline
        self._failures = 0

    def _stop_pipeline(self) -> None:
        if self._pipeline is not None:
            try:
                self._pipeline.stop()
            except RuntimeError:
                pass
        self._pipeline = None

    def read(self) -> Frame:
        if self._pipeline is None:
            now = time.monotonic()
            if now < self._next_attempt:
                raise RuntimeError(f"camera {self.name} ({self.serial}) is down; next restart in "
                                   f"{self._next_attempt - now:.1f}s")
            try:
                self._start()
                self.restarts += 1
                log.info("camera %s (%s) restarted", self.name, self.serial)
            except RuntimeError as e:
                self._schedule_retry()
                raise RuntimeError(f"camera {self.name} ({self.serial}) restart failed: {e}") from None
        try:
            frames = self._pipeline.wait_for_frames(self.timeout_ms)
            color = frames.get_color_frame()
            if not color:
                raise RuntimeError("no color frame in the frameset")
            image = np.asanyarray(color.get_data())
        except RuntimeError as e:  # unplugged, USB reset, timeout
            log.warning("camera %s (%s): %s; restarting the pipeline", self.name, self.serial, e)
            self._stop_pipeline()
            self._schedule_retry()
            raise RuntimeError(f"camera {self.name} ({self.serial}): {e}") from None
        t_host = time.time()
        domain = color.get_frame_timestamp_domain()
        t_ms = float(color.get_timestamp())
        if domain == self._rs.timestamp_domain.hardware_clock:
            t_capture = t_host  # device clock: not comparable with host time
        else:
            t_capture = t_ms / 1000.0
        if image.shape != (self.height, self.width, 3):
            raise RuntimeError(f"camera {self.name}: got a {image.shape} image, configured "
                               f"{self.height}x{self.width}x3")
        return Frame(image=np.ascontiguousarray(image, dtype=np.uint8), t_capture=t_capture,
                     seq=int(color.get_frame_number()),
                     meta={"serial": self.serial, "timestamp_ms": t_ms, "domain": str(domain),
                           "t_host": t_host})

    def _schedule_retry(self) -> None:
        self._failures += 1
        delay = min(self._backoff_s * 2 ** (self._failures - 1), self._max_backoff_s)
        self._next_attempt = time.monotonic() + delay

    def close(self) -> None:
        self._stop_pipeline()
