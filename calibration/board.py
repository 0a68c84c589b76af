"""The ChArUco board: its geometry, detection and pose (OpenCV >= 4.7, < 5 API).

Board frame (OpenCV's): origin at the outer corner of the first square, x along the squares_x
direction, y along squares_y (downwards in the printed image), z into the board, so a camera that
sees the printed side looks along +z.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import cv2
import numpy as np

MIN_CORNERS = 6  # fewer ChArUco corners than this gives an unreliable pose


@dataclass(frozen=True)
class BoardSpec:
    squares_x: int = 5
    squares_y: int = 7
    square_m: float = 0.03  # measured edge of one chessboard square on the print, metres
    marker_m: float = 0.022
    dictionary: str = "DICT_5X5_100"

    def board(self) -> cv2.aruco.CharucoBoard:
        return _board(self)

    @property
    def size_m(self) -> tuple[float, float]:
        return self.squares_x * self.square_m, self.squares_y * self.square_m

    def center(self) -> np.ndarray:
        w, h = self.size_m
        return np.array([w / 2, h / 2, 0.0])

    def to_dict(self) -> dict:
        return asdict(self)

    def with_square(self, square_m: float) -> BoardSpec:
        """Same print, different assumed scale (markers scale with the squares)."""
        k = square_m / self.square_m
        return BoardSpec(self.squares_x, self.squares_y, square_m, self.marker_m * k, self.dictionary)


@functools.lru_cache(maxsize=16)
def _board(spec: BoardSpec) -> cv2.aruco.CharucoBoard:
    if not hasattr(cv2.aruco, spec.dictionary):
        raise ValueError(f"unknown ArUco dictionary {spec.dictionary!r}")
    dictionary = cv2.aruco.getPredefinedDictionary(getattr(cv2.aruco, spec.dictionary))
    return cv2.aruco.CharucoBoard((spec.squares_x, spec.squares_y), spec.square_m, spec.marker_m, dictionary)


@functools.lru_cache(maxsize=16)
def _detector(spec: BoardSpec) -> cv2.aruco.CharucoDetector:
    return cv2.aruco.CharucoDetector(_board(spec))


@dataclass
class Corners:
    ids: np.ndarray  # [N] int, ChArUco corner ids
    points: np.ndarray  # [N, 2] float pixel positions


@functools.lru_cache(maxsize=1)
def detector_offset_px() -> float:
    """The constant offset of CharucoDetector's corners, measured once on a printed board whose
    corners are known exactly. OpenCV before the fix of opencv/opencv#25539 (PR #28380, 2026)
    returns every corner +0.5 px off, which biases every board pose; we subtract what we measure,
    so the code stays right on a fixed OpenCV."""
    spec, px, margin = BoardSpec(), 40, 40
    board = spec.board()
    image = board.generateImage((spec.squares_x * px + 2 * margin, spec.squares_y * px + 2 * margin),
                                marginSize=margin, borderBits=1)
    corners, ids, _, _ = _detector(spec).detectBoard(image)
    if ids is None:
        return 0.0
    # an edge between texture pixels k-1 and k lies at k - 0.5 in OpenCV's pixel-centre coordinates
    truth = margin - 0.5 + board.getChessboardCorners()[ids.reshape(-1), :2] / spec.square_m * px
    offset = float(np.mean(corners.reshape(-1, 2) - truth))
    return 0.5 if abs(offset - 0.5) < 0.1 else (0.0 if abs(offset) < 0.1 else offset)


def detect_corners(image: np.ndarray, spec: BoardSpec) -> Corners | None:
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY) if image.ndim == 3 else image
    corners, ids, _, _ = _detector(spec).detectBoard(gray)
    if ids is None or len(ids) < MIN_CORNERS:
        return None
    points = corners.reshape(-1, 2).astype(float) - detector_offset_px()
    return Corners(ids=ids.reshape(-1).astype(int), points=points)


def average_corners(detections: list[Corners | None]) -> Corners | None:
    """Average each corner over the frames that saw it (frames of one settled pose): this cuts
    pixel noise by sqrt(frames). Corners seen in fewer than half the frames are dropped."""
    found = [d for d in detections if d is not None]
    if not found:
        return None
    sums: dict[int, list] = {}
    for d in found:
        for i, p in zip(d.ids, d.points, strict=True):
            sums.setdefault(int(i), []).append(p)
    keep = sorted(i for i, ps in sums.items() if 2 * len(ps) >= len(detections))
    if len(keep) < MIN_CORNERS:
        return None
    return Corners(ids=np.array(keep), points=np.array([np.mean(sums[i], axis=0) for i in keep]))


def board_pose(corners: Corners, spec: BoardSpec, K: np.ndarray, dist: np.ndarray
               ) -> tuple[np.ndarray, float] | None:
    """T_cam_board (4x4) from the ChArUco corners by PnP, and the reprojection RMS (px)."""
    obj = spec.board().getChessboardCorners()[corners.ids].astype(np.float64)
    img = corners.points.astype(np.float64)
    ok, rvec, tvec = cv2.solvePnP(obj, img, K, dist, flags=cv2.SOLVEPNP_IPPE)
    if not ok:
        return None
    rvec, tvec = cv2.solvePnPRefineLM(obj, img, K, dist, rvec, tvec)
    proj, _ = cv2.projectPoints(obj, rvec, tvec, K, dist)
    rms = float(np.sqrt(np.mean(np.sum((proj.reshape(-1, 2) - img) ** 2, axis=1))))
    T = np.eye(4)
    T[:3, :3] = cv2.Rodrigues(rvec)[0]
    T[:3, 3] = tvec.reshape(3)
    return T, rms
