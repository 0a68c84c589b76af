"""Camera intrinsics: RealSense factory values, or an OpenCV ChArUco calibration for cameras
without them (images from a folder or captured frames)."""

from __future__ import annotations

import logging
import time
from pathlib import Path

import cv2
import numpy as np

from calibration.board import BoardSpec, detect_corners
from calibration.schema import CalibrationError, Intrinsics
from interface.robot import Camera

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"}
MIN_VIEWS = 6


def realsense_intrinsics(serials: list[str] | None = None, width: int = 640, height: int = 480,
                         fps: int = 30) -> dict[str, tuple[Intrinsics, str]]:
    """Factory colour-stream intrinsics per serial: {serial: (intrinsics, distortion model name)}.
    With no camera attached this fails at once with a clear message (query_devices() does not
    block, unlike starting a pipeline)."""
    try:
        import pyrealsense2 as rs  # optional hardware dependency: only this function needs it
    except ImportError as e:
        raise CalibrationError("pyrealsense2 is not installed: `pip install pyrealsense2` (extra `robot`)") from e
    devices = {d.get_info(rs.camera_info.serial_number): d for d in rs.context().query_devices()}
    if not devices:
        raise CalibrationError("no RealSense camera found (rs.context().query_devices() is empty): plug it "
                               "into a USB3 port and check `rs-enumerate-devices`; for a camera without factory "
                               "intrinsics use `vlaloop calibrate intrinsics --images DIR` (ChArUco)")
    wanted = serials or sorted(devices)
    missing = [s for s in wanted if s not in devices]
    if missing:
        raise CalibrationError(f"RealSense serial(s) {missing} not found; connected: {sorted(devices)}")
    out = {}
    for serial in wanted:
        pipeline, config = rs.pipeline(), rs.config()
        config.enable_device(serial)
        config.enable_stream(rs.stream.color, width, height, rs.format.rgb8, fps)
        profile = pipeline.start(config)
        try:
            intr = profile.get_stream(rs.stream.color).as_video_stream_profile().get_intrinsics()
        finally:
            pipeline.stop()
        out[serial] = (Intrinsics(width=intr.width, height=intr.height, fx=intr.fx, fy=intr.fy, cx=intr.ppx,
                                  cy=intr.ppy, dist=[float(c) for c in intr.coeffs]), str(intr.model))
    return out


def read_images(directory: str | Path) -> list[np.ndarray]:
    d = Path(directory)
    paths = sorted(p for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if d.is_dir() else []
    if not paths:
        raise CalibrationError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in {d}")
    images = []
    for p in paths:
        img = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if img is None:
            raise CalibrationError(f"cannot read image {p}")
        images.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
    return images


def capture_images(camera: Camera, n: int, interval_s: float, directory: str | Path | None = None,
                   between=None) -> list[np.ndarray]:
    """n frames, `interval_s` apart (move the board between them); `between(i)` runs before frame i
    (the mock uses it to move the arm). Frames are saved as PNG when a directory is given."""
    images = []
    for i in range(n):
        if between is not None:
            between(i)
        elif i and interval_s:
            time.sleep(interval_s)
        images.append(camera.read().image)
        if directory is not None:
            Path(directory).mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(Path(directory) / f"view{i:03d}.png"), cv2.cvtColor(images[-1], cv2.COLOR_RGB2BGR))
    return images


def charuco_intrinsics(images: list[np.ndarray], spec: BoardSpec, fix_k3: bool = True
                       ) -> tuple[Intrinsics, float, int]:
    """OpenCV calibration from ChArUco views: (intrinsics, reprojection RMS px, views used).
    Tilted views at several distances are what make the focal length observable."""
    board = spec.board()
    obj_pts, img_pts = [], []
    for img in images:
        corners = detect_corners(img, spec)
        if corners is None:
            continue
        obj, pts = board.matchImagePoints(corners.points.reshape(-1, 1, 2).astype(np.float32),
                                          corners.ids.reshape(-1, 1).astype(np.int32))
        if obj is not None and len(obj) >= 8:
            obj_pts.append(obj.astype(np.float32))
            img_pts.append(pts.astype(np.float32))
    if len(obj_pts) < MIN_VIEWS:
        raise CalibrationError(f"the ChArUco board was found in {len(obj_pts)} of {len(images)} images; need "
                               f"{MIN_VIEWS} (check --squares, --dictionary, focus and lighting)")
    h, w = images[0].shape[:2]
    flags = cv2.CALIB_FIX_K3 if fix_k3 else 0
    rms, K, dist, _, _ = cv2.calibrateCamera(obj_pts, img_pts, (w, h), None, None, flags=flags)
    intr = Intrinsics(width=w, height=h, fx=float(K[0, 0]), fy=float(K[1, 1]), cx=float(K[0, 2]),
                      cy=float(K[1, 2]), dist=[float(v) for v in dist.reshape(-1)])
    return intr, float(rms), len(obj_pts)
