"""Synthetic camera images of the ChArUco board at a known pose, for tests and the mock rig.

The board plane (z = 0 in the board frame) maps to the image by the homography
``K [r1 r2 t]``; the printed board (``board.generateImage``) is warped through it. Rendering at
2x and area-averaging down gives anti-aliased edges, then Gaussian pixel noise is added.
"""

from __future__ import annotations

import functools

import cv2
import numpy as np

from calibration.board import BoardSpec

TEXTURE_PX_PER_SQUARE = 120
PAPER_MARGIN_SQUARES = 0.5  # white paper around the printed pattern
SUPERSAMPLE = 2


@functools.lru_cache(maxsize=8)
def _texture(spec: BoardSpec) -> tuple[np.ndarray, float, int]:
    """The printed board with a white margin; returns (image, pixels per metre, margin px)."""
    ppm = TEXTURE_PX_PER_SQUARE / spec.square_m
    margin = int(round(PAPER_MARGIN_SQUARES * TEXTURE_PX_PER_SQUARE))
    size = (spec.squares_x * TEXTURE_PX_PER_SQUARE + 2 * margin, spec.squares_y * TEXTURE_PX_PER_SQUARE + 2 * margin)
    return spec.board().generateImage(size, marginSize=margin, borderBits=1), ppm, margin


def render_board(spec: BoardSpec, K: np.ndarray, T_cam_board: np.ndarray, size: tuple[int, int],
                 noise_sigma: float = 2.0, rng: np.random.Generator | None = None,
                 background: int = 90) -> np.ndarray:
    """RGB uint8 image (height x width x 3) of the board seen by a pinhole camera (no distortion)."""
    width, height = size
    tex, ppm, margin = _texture(spec)
    # texture pixel index (a, b) -> board metres (X, Y): pixel centres sit at index + 0.5
    S = np.array([[1 / ppm, 0, (0.5 - margin) / ppm], [0, 1 / ppm, (0.5 - margin) / ppm], [0, 0, 1]])
    s = SUPERSAMPLE
    K_hi = K.astype(float).copy()
    K_hi[:2, :2] *= s
    K_hi[:2, 2] = s * (K[:2, 2] + 0.5) - 0.5
    paper = np.array([[0, 0], [tex.shape[1], 0], [0, tex.shape[0]], [tex.shape[1], tex.shape[0]]], float)
    paper_board = (S @ np.c_[paper, np.ones(4)].T)[:2].T
    z_cam = (T_cam_board[:3, :3] @ np.c_[paper_board, np.zeros(4)].T + T_cam_board[:3, 3:4])[2]
    img = np.full((height * s, width * s), background, np.uint8)
    if np.all(z_cam > 0.02):  # the whole sheet is in front of the camera; else it is not drawn
        H = K_hi @ np.c_[T_cam_board[:3, 0], T_cam_board[:3, 1], T_cam_board[:3, 3]] @ S
        img = cv2.warpPerspective(tex, H, (width * s, height * s), dst=img, flags=cv2.INTER_LINEAR,
                                  borderMode=cv2.BORDER_TRANSPARENT)
    img = cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA).astype(np.float32)
    if noise_sigma > 0:
        rng = rng or np.random.default_rng()
        img += rng.normal(0.0, noise_sigma, img.shape).astype(np.float32)
    gray = np.clip(np.rint(img), 0, 255).astype(np.uint8)
    return np.repeat(gray[:, :, None], 3, axis=2)
