"""A small deterministic table-top simulator: one end effector with a parallel gripper, up to four
coloured blocks and a bowl, rendered with numpy by a fixed camera.

World frame = robot base frame, metres. The table is the plane z = 0.

Camera "front": an oblique parallel projection, as seen from behind the robot base looking forward
and down. Image right = -y (the robot's right), image up = +x (away from the robot) and +z (up):

    u = (0.28 - y) / 0.56 * S          v = (0.84 - (x + 0.5 z)) / 0.56 * S

so the table plane maps without distortion (5.8 mm per pixel at S = 96) and a point's height
shows as its vertical offset above its shadow: the end effector's dark shadow is drawn on the
table right below it, the gripper higher up in the image the higher it is (and slightly larger).
Blocks show their lit top face and a darker front face. The gripper's palm is white when open
(fingers apart) and magenta when closed (fingers together, or around a held block).

Camera "wrist" (optional): a top-down view centred under the end effector whose field of view
grows with height, like a camera on the hand.

Physics is kinematic and per control step (one ``apply_action`` = one motion):
* the translation of an action is clamped to 3 cm (vector norm), the rotation to 0.15 rad, the
  position to the workspace box; a non-finite action does nothing (real arm limits);
* gripper command >= 0.5 opens, < 0.5 closes; closing with the fingertips low (z <= 3 cm) within
  2 cm of a block's centre grasps it, the block then moves with the hand; opening drops it onto
  the table right below (into the bowl if it lands within the bowl's radius);
* a low hand (fingertips below the block tops) pushes blocks out of its way (contact radius 4 cm,
  radial push-out); an open hand lowered onto a block from above straddles it (the block is between
  the fingers) and drags it along; a hand lowered onto a block otherwise comes to rest on its top;
* overlapping blocks push each other apart, blocks stay on the table.

Orientation (roll, pitch, yaw) is tracked and limited but is not task-relevant and not drawn. A
rotation delta follows interface/action.py (base-frame rotation vector, applied on the left).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from interface.action import GRIPPER_OPEN_THRESHOLD, matrix_to_rpy, rotvec_to_matrix, rpy_to_matrix

# ---------------------------------------------------------------- geometry and limits
WORKSPACE_MIN = np.array([0.30, -0.25, 0.0])
WORKSPACE_MAX = np.array([0.70, 0.25, 0.30])
HOME_POSITION = np.array([0.5, 0.0, 0.20])
HOME_RPY = np.array([math.pi, 0.0, 0.0])
RPY_MIN = np.array([math.pi - 0.6, -0.6, -math.pi / 2])
RPY_MAX = np.array([math.pi + 0.6, 0.6, math.pi / 2])
MAX_TRANSLATION = 0.03  # m per step
MAX_ROTATION = 0.15  # rad per step
GRIPPER_THRESHOLD = GRIPPER_OPEN_THRESHOLD  # interface.action's, under the name the mock uses

TABLE_MIN = np.array([0.27, -0.28])  # where block centres may be (the table's usable area)
TABLE_MAX = np.array([0.74, 0.28])
BLOCK_SIZE = 0.05  # edge, m
BLOCK_HEIGHT = 0.04
GRASP_RADIUS = 0.02  # fingertips within this of a block's centre (xy) can grasp it
GRASP_HEIGHT = 0.03  # ... when the fingertips are at most this high
PUSH_RADIUS = 0.04  # a low hand pushes a block whose centre is closer than this
HELD_DROP = 0.015  # a held block's bottom hangs this far below the fingertips
BOWL_RADIUS = 0.07

COLORS = ("red", "green", "blue", "yellow")
N_BLOCKS = len(COLORS)

# ---------------------------------------------------------------- rendering constants
VIEW_Y = 0.28  # image spans y in [-0.28, 0.28]
VIEW_S_MAX, VIEW_SPAN = 0.84, 0.56  # image spans s = x + K z in [0.28, 0.84]
HEIGHT_K = 0.5  # oblique factor: 1 m of height shows as 0.5 m of image height
RGB = {
    "red": (220, 30, 30), "green": (20, 170, 40), "blue": (30, 70, 230), "yellow": (245, 210, 0),
}
BLOCK_RGB = np.array([RGB[c] for c in COLORS], dtype=np.uint8)
BLOCK_FRONT_RGB = (BLOCK_RGB.astype(np.float32) * 0.6).astype(np.uint8)
TABLE_RGB = (200, 185, 150)
TABLE_EDGE_RGB = (150, 135, 110)  # table outside the workspace box
WALL_RGB = (80, 85, 100)
BOWL_RIM_RGB = (245, 245, 245)
BOWL_IN_RGB = (150, 160, 185)
SHADOW_RGB = (95, 85, 70)
FINGER_RGB = (25, 25, 25)
PALM_OPEN_RGB = (250, 250, 250)
PALM_CLOSED_RGB = (230, 0, 230)
WRIST_RGB = (90, 90, 100)


@dataclass
class SceneState:
    """Everything that moves. Block positions are (x, y, z of the block's bottom)."""

    ee: np.ndarray = field(default_factory=lambda: HOME_POSITION.copy())
    rpy: np.ndarray = field(default_factory=lambda: HOME_RPY.copy())
    gripper_open: bool = True
    held: int = -1  # index of the held block, -1 when none
    blocks: np.ndarray = field(default_factory=lambda: np.zeros((N_BLOCKS, 3)))
    present: np.ndarray = field(default_factory=lambda: np.ones(N_BLOCKS, dtype=bool))
    bowl: np.ndarray = field(default_factory=lambda: np.array([0.5, 0.15]))

    def copy(self) -> SceneState:
        return SceneState(self.ee.copy(), self.rpy.copy(), self.gripper_open, self.held,
                          self.blocks.copy(), self.present.copy(), self.bowl.copy())


def clamp_action(action: np.ndarray, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray, bool] | None:
    """(translation, rotation, open) after the arm's per-step limits; None for a non-finite or
    malformed action (the arm then does nothing)."""
    a = np.asarray(action, dtype=np.float64).reshape(-1)
    if a.shape != (7,) or not np.all(np.isfinite(a)):
        return None
    d = a[:3] * scale
    n = float(np.linalg.norm(d))
    if n > MAX_TRANSLATION:
        d = d * (MAX_TRANSLATION / n)
    r = a[3:6] * scale
    n = float(np.linalg.norm(r))
    if n > MAX_ROTATION:
        r = r * (MAX_ROTATION / n)
    return d, r, bool(a[6] >= GRIPPER_THRESHOLD)


def rotate_rpy(rpy: np.ndarray, w: np.ndarray) -> np.ndarray:
    """The action convention's rotation (interface/action.py): the base-frame rotation vector w
    applied on the left, R_new = exp([w]x) R, returned as roll/pitch/yaw. The roll is kept near
    the previous one (+-2 pi), so the pointing-down home (roll = pi) does not wrap to -pi."""
    new = matrix_to_rpy(rotvec_to_matrix(w) @ rpy_to_matrix(rpy))
    new[0] += 2 * math.pi * round((rpy[0] - new[0]) / (2 * math.pi))
    new[2] += 2 * math.pi * round((rpy[2] - new[2]) / (2 * math.pi))
    return new


class Scene:
    """The single-scene simulator (the reference implementation; vec.py batches it)."""

    def __init__(self, state: SceneState | None = None):
        self.state = state if state is not None else SceneState()

    def reset_arm(self) -> None:
        """Home pose, gripper open (a held block is dropped where it is)."""
        s = self.state
        if s.held >= 0:
            self._release()
        s.ee = HOME_POSITION.copy()
        s.rpy = HOME_RPY.copy()
        s.gripper_open = True

    def apply_action(self, action: np.ndarray, scale: float = 1.0) -> bool:
        """One control step. ``scale`` < 1 executes only part of the motion (a slow arm).
        Returns False when the action was rejected (non-finite) and nothing moved."""
        clamped = clamp_action(action, scale)
        if clamped is None:
            return False
        d, r, want_open = clamped
        s = self.state
        self._move_ee(np.clip(s.ee + d, WORKSPACE_MIN, WORKSPACE_MAX))
        s.rpy = np.clip(rotate_rpy(s.rpy, r), RPY_MIN, RPY_MAX)
        if want_open and not s.gripper_open:
            s.gripper_open = True
            if s.held >= 0:
                self._release()
        elif not want_open and s.gripper_open:
            s.gripper_open = False
            self._try_grasp()
        return True

    # ------------------------------------------------------------ physics
    def _move_ee(self, new: np.ndarray) -> None:
        s = self.state
        old = s.ee
        if s.held >= 0:
            s.ee = new
            s.blocks[s.held] = (new[0], new[1], max(0.0, new[2] - HELD_DROP))
            return
        free = [i for i in range(N_BLOCKS) if s.present[i]]
        if new[2] < BLOCK_HEIGHT and old[2] >= BLOCK_HEIGHT:
            # coming down into the block layer: straddle a block (open, centred) or land on it
            for i in free:
                dist = math.hypot(new[0] - s.blocks[i, 0], new[1] - s.blocks[i, 1])
                straddles = s.gripper_open and dist <= GRASP_RADIUS
                if dist < PUSH_RADIUS and not straddles:
                    new = np.array([new[0], new[1], BLOCK_HEIGHT])
                    break
        if new[2] < BLOCK_HEIGHT:
            moved = False
            for i in free:
                b = s.blocks[i]
                was_between = (s.gripper_open and old[2] < BLOCK_HEIGHT
                               and math.hypot(old[0] - b[0], old[1] - b[1]) <= GRASP_RADIUS)
                if was_between:  # the fingers cage it: it moves with the hand
                    b[0] += new[0] - old[0]
                    b[1] += new[1] - old[1]
                    moved = True
                    continue
                dx, dy = b[0] - new[0], b[1] - new[1]
                dist = math.hypot(dx, dy)
                if s.gripper_open and old[2] >= BLOCK_HEIGHT and dist <= GRASP_RADIUS:
                    continue  # lowered around it from above
                if dist < PUSH_RADIUS:
                    if dist < 1e-9:  # degenerate: push along the motion, else +x
                        mx, my = new[0] - old[0], new[1] - old[1]
                        m = math.hypot(mx, my)
                        dx, dy, dist = (mx / m, my / m, 1.0) if m > 1e-9 else (1.0, 0.0, 1.0)
                    b[0] = new[0] + dx / dist * PUSH_RADIUS
                    b[1] = new[1] + dy / dist * PUSH_RADIUS
                    moved = True
            if moved:
                self._settle_blocks()
        s.ee = new

    def _settle_blocks(self) -> None:
        """One pass of pairwise separation (blocks as discs of BLOCK_SIZE), then the table edge."""
        s = self.state
        for i in range(N_BLOCKS):
            for j in range(i + 1, N_BLOCKS):
                if not (s.present[i] and s.present[j]) or s.held in (i, j):
                    continue
                if s.blocks[i, 2] > 0 or s.blocks[j, 2] > 0:
                    continue
                dx, dy = s.blocks[j, 0] - s.blocks[i, 0], s.blocks[j, 1] - s.blocks[i, 1]
                dist = math.hypot(dx, dy)
                if dist >= BLOCK_SIZE:
                    continue
                if dist < 1e-9:
                    dx, dy, dist = 1.0, 0.0, 1.0
                push = (BLOCK_SIZE - dist) / 2
                s.blocks[i, 0] -= dx / dist * push
                s.blocks[i, 1] -= dy / dist * push
                s.blocks[j, 0] += dx / dist * push
                s.blocks[j, 1] += dy / dist * push
        for i in range(N_BLOCKS):
            if s.present[i] and i != s.held:
                s.blocks[i, :2] = np.clip(s.blocks[i, :2], TABLE_MIN, TABLE_MAX)

    def _try_grasp(self) -> None:
        s = self.state
        if s.held >= 0 or s.ee[2] > GRASP_HEIGHT:
            return
        best, best_d = -1, GRASP_RADIUS
        for i in range(N_BLOCKS):
            if not s.present[i] or s.blocks[i, 2] > 0:
                continue
            dist = math.hypot(s.ee[0] - s.blocks[i, 0], s.ee[1] - s.blocks[i, 1])
            if dist <= best_d:
                best, best_d = i, dist
        if best >= 0:
            s.held = best
            s.blocks[best] = (s.ee[0], s.ee[1], max(0.0, s.ee[2] - HELD_DROP))

    def _release(self) -> None:
        s = self.state
        s.blocks[s.held, 2] = 0.0
        s.blocks[s.held, :2] = np.clip(s.blocks[s.held, :2], TABLE_MIN, TABLE_MAX)
        s.held = -1
        self._settle_blocks()

    def render(self, size: int = 96, camera: str = "front") -> np.ndarray:
        return render(self.state, size, camera)


# ---------------------------------------------------------------- rendering
@lru_cache(maxsize=64)
def _disk(radius_px: int) -> np.ndarray:
    r = max(0, radius_px)
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return (xx * xx + yy * yy) <= r * r + r  # "+ r" rounds small discs nicely


def _paint_disk(img: np.ndarray, cu: float, cv: float, radius_px: float, color) -> None:
    r = int(round(radius_px))
    mask = _disk(r)
    u0, v0 = int(round(cu)) - r, int(round(cv)) - r
    h, w = img.shape[:2]
    a0, b0 = max(0, v0), max(0, u0)
    a1, b1 = min(h, v0 + 2 * r + 1), min(w, u0 + 2 * r + 1)
    if a0 >= a1 or b0 >= b1:
        return
    sub = mask[a0 - v0:a1 - v0, b0 - u0:b1 - u0]
    img[a0:a1, b0:b1][sub] = color


def _paint_rect(img: np.ndarray, u0: float, u1: float, v0: float, v1: float, color) -> None:
    """Fill the pixels whose centres lie in [u0, u1] x [v0, v1]; at least one pixel per axis."""
    h, w = img.shape[:2]
    a, b = int(round(v0)), int(round(v1))
    c, d = int(round(u0)), int(round(u1))
    b, d = max(b, a + 1), max(d, c + 1)
    a, b, c, d = max(0, a), min(h, b), max(0, c), min(w, d)
    if a < b and c < d:
        img[a:b, c:d] = color


class _Projector:
    def __init__(self, size: int):
        self.size = size
        self.px = size / VIEW_SPAN  # pixels per metre

    def u(self, y: float) -> float:
        return (VIEW_Y - y) * self.px

    def v(self, x: float, z: float) -> float:
        return (VIEW_S_MAX - (x + HEIGHT_K * z)) * self.px


@lru_cache(maxsize=256)  # one entry per bowl position: covers a batch of scenes
def _front_background(size: int, bowl: tuple[float, float]) -> np.ndarray:
    """The static part of a frame (wall, table, workspace, bowl), cached per episode."""
    p = _Projector(size)
    img = np.empty((size, size, 3), dtype=np.uint8)
    img[:] = WALL_RGB
    # the table: x in [0.22, 0.78] (everything visible below its far edge), y beyond the view
    _paint_rect(img, 0, size, p.v(0.78, 0), size, TABLE_EDGE_RGB)
    _paint_rect(img, p.u(WORKSPACE_MAX[1]), p.u(WORKSPACE_MIN[1]), p.v(WORKSPACE_MAX[0], 0),
                p.v(WORKSPACE_MIN[0], 0), TABLE_RGB)
    bx, by = bowl
    _paint_disk(img, p.u(by), p.v(bx, 0), BOWL_RADIUS * p.px, BOWL_RIM_RGB)
    _paint_disk(img, p.u(by), p.v(bx, 0), (BOWL_RADIUS - 0.012) * p.px, BOWL_IN_RGB)
    img.setflags(write=False)
    return img


def _draw_block(img, p: _Projector, x, y, z, color_idx) -> None:
    h = BLOCK_SIZE / 2
    u0, u1 = p.u(y + h), p.u(y - h)
    top = z + BLOCK_HEIGHT
    _paint_rect(img, u0, u1, p.v(x + h, top), p.v(x - h, top), BLOCK_RGB[color_idx])
    _paint_rect(img, u0, u1, p.v(x - h, top), p.v(x - h, z), BLOCK_FRONT_RGB[color_idx])


def _draw_gripper(img, p: _Projector, x, y, z, gripper_open: bool, holding: bool) -> None:
    """Two black fingers under a palm (white: open, magenta: closed) and a thin wrist link; kept
    compact so that it hides little of the table."""
    grow = 1.0 + z  # nearer the camera when higher: a little larger
    if gripper_open:
        half_gap = 0.032
    elif holding:
        half_gap = BLOCK_SIZE / 2 + 0.005
    else:
        half_gap = 0.007
    half_gap *= grow
    fw = 0.005 * grow  # half finger width
    depth = 0.01
    for side in (-1.0, 1.0):
        fy = y + side * half_gap
        _paint_rect(img, p.u(fy + fw), p.u(fy - fw), p.v(x + depth, z + 0.045), p.v(x - depth, z), FINGER_RGB)
    palm = PALM_OPEN_RGB if gripper_open else PALM_CLOSED_RGB
    pw = half_gap + fw
    _paint_rect(img, p.u(y + pw), p.u(y - pw), p.v(x + 0.012, z + 0.065), p.v(x - 0.012, z + 0.045), palm)
    ww = 0.006 * grow
    _paint_rect(img, p.u(y + ww), p.u(y - ww), p.v(x + 0.006, z + 0.12), p.v(x - 0.006, z + 0.065), WRIST_RGB)


def render_front(state: SceneState, size: int = 96) -> np.ndarray:
    p = _Projector(size)
    img = _front_background(size, (float(state.bowl[0]), float(state.bowl[1]))).copy()
    ex, ey, ez = state.ee
    shadow_r = 0.022 * p.px
    _paint_disk(img, p.u(ey), p.v(ex, 0), shadow_r, SHADOW_RGB)
    if state.held >= 0:
        hx, hy, _ = state.blocks[state.held]
        _paint_disk(img, p.u(hy), p.v(hx, 0), shadow_r, SHADOW_RGB)
    # far blocks first: nearer ones (smaller x) occlude them
    order = sorted((i for i in range(N_BLOCKS) if state.present[i]), key=lambda i: -state.blocks[i, 0])
    for i in order:
        _draw_block(img, p, *state.blocks[i], i)
    _draw_gripper(img, p, ex, ey, ez, state.gripper_open, state.held >= 0)
    return img


WRIST_FOV = 1.2  # the wrist view spans 1.2 x (height + 0.05) metres of table


def render_wrist(state: SceneState, size: int = 96) -> np.ndarray:
    """Top-down view centred under the hand; image up = +x, image right = -y."""
    ex, ey, ez = state.ee
    span = WRIST_FOV * (ez + 0.05)
    px = size / span
    img = np.empty((size, size, 3), dtype=np.uint8)
    img[:] = TABLE_EDGE_RGB

    def uv(x, y):
        return (size / 2 + (ey - y) * px, size / 2 + (ex - x) * px)

    u0, v0 = uv(WORKSPACE_MAX[0], WORKSPACE_MAX[1])
    u1, v1 = uv(WORKSPACE_MIN[0], WORKSPACE_MIN[1])
    _paint_rect(img, u0, u1, v0, v1, TABLE_RGB)
    bu, bv = uv(*state.bowl)
    _paint_disk(img, bu, bv, BOWL_RADIUS * px, BOWL_RIM_RGB)
    _paint_disk(img, bu, bv, (BOWL_RADIUS - 0.012) * px, BOWL_IN_RGB)
    h = BLOCK_SIZE / 2
    for i in range(N_BLOCKS):
        if state.present[i] and i != state.held:
            x, y, _ = state.blocks[i]
            a0, b0 = uv(x + h, y + h)
            a1, b1 = uv(x - h, y - h)
            _paint_rect(img, a0, a1, b0, b1, BLOCK_RGB[i])
    # the fingers at the image's edges, closer together when closed
    gap = 0.35 if state.gripper_open else 0.1
    fw = max(1, size // 24)
    c = size // 2
    for side in (-1, 1):
        fu = int(c + side * gap * size)
        img[size - size // 4:, max(0, fu - fw):fu + fw] = FINGER_RGB
    if state.held >= 0:
        hu = size // 2
        img[size // 2 - size // 8:size // 2 + size // 8, hu - size // 8:hu + size // 8] = BLOCK_RGB[state.held]
    return img


def render(state: SceneState, size: int = 96, camera: str = "front") -> np.ndarray:
    if not 16 <= size <= 512:
        raise ValueError(f"image size {size} out of range 16..512")
    if camera == "front":
        return render_front(state, size)
    if camera == "wrist":
        return render_wrist(state, size)
    raise ValueError(f"unknown mock camera {camera!r} (front | wrist)")
