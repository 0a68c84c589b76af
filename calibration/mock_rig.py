"""A hardware-free hand-eye rig: a kinematic arm and a camera that renders the ChArUco board
from hidden true transforms, so `vlaloop calibrate handeye --backend mock` runs end to end.

* eye-in-hand: the camera rides on the end effector (hidden ``T_ee_cam``), the board lies on the
  table (hidden ``T_base_board``);
* eye-to-hand: the camera stands still (hidden ``T_base_cam``), the board is bolted to the end
  effector (hidden ``T_ee_board``).

Faults for tests: ``move_board(T)`` shifts the board mid-run (as a bumped board would).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np

from calibration.board import BoardSpec
from calibration.board_render import render_board
from calibration.schema import CameraMode, Intrinsics, default_mock_calibration
from calibration.transforms import (
    invert,
    look_at,
    make_T,
    pose_to_T,
    rot_x,
    rot_z,
)
from interface.action import apply_action
from interface.robot import Arm, ArmError, ArmState, Camera, Frame


class KinematicArm(Arm):
    """Pose integrates the commanded deltas exactly, by the action convention (interface/action.py):
    base-frame translation d[:3], base-frame rotation vector d[3:6] applied on the left."""

    def __init__(self, home_position, home_rpy, state_noise_m: float = 0.0, rng: np.random.Generator | None = None):
        self.home_position = np.asarray(home_position, dtype=float)
        self.home_rpy = np.asarray(home_rpy, dtype=float)
        self.state_noise_m = state_noise_m
        self.rng = rng or np.random.default_rng(0)
        self.position = self.home_position.copy()
        self.rpy = self.home_rpy.copy()
        self.gripper = 1.0
        self.n_moves = 0

    def reset_home(self) -> None:
        self.position, self.rpy, self.gripper = self.home_position.copy(), self.home_rpy.copy(), 1.0

    def state(self) -> ArmState:
        noise = self.rng.normal(0.0, self.state_noise_m, 3) if self.state_noise_m else 0.0
        return ArmState(position=self.position + noise, rpy=self.rpy.copy(), gripper=self.gripper, t=time.time())

    def move_delta(self, action: np.ndarray) -> None:
        a = np.asarray(action, dtype=float)
        if a.shape != (7,) or not np.all(np.isfinite(a)):
            raise ArmError(f"refused non-finite or mis-shaped action {a!r}")
        self.position, self.rpy, _ = apply_action(self.position, self.rpy, a)  # interface/action.py
        self.gripper = float(np.clip(a[6], 0.0, 1.0))
        self.n_moves += 1

    def hold(self) -> None:
        pass  # a kinematic arm is still between commands

    def recover(self) -> None:
        pass

    def true_T_base_ee(self) -> np.ndarray:
        return pose_to_T(self.position, self.rpy)


@dataclass
class HandEyeScene:
    """The hidden truth of the rig."""

    mode: CameraMode
    spec: BoardSpec
    intrinsics: Intrinsics
    T_ee_cam: np.ndarray | None = None  # eye-in-hand
    T_base_board: np.ndarray | None = None  # eye-in-hand
    T_base_cam: np.ndarray | None = None  # eye-to-hand
    T_ee_board: np.ndarray | None = None  # eye-to-hand
    noise_sigma: float = 2.0

    def T_cam_board(self, T_base_ee: np.ndarray) -> np.ndarray:
        if self.mode == "eye-in-hand":
            return invert(T_base_ee @ self.T_ee_cam) @ self.T_base_board
        return invert(self.T_base_cam) @ T_base_ee @ self.T_ee_board

    def truth(self) -> np.ndarray:
        """What hand-eye calibration must recover: T_ee_cam or T_base_cam."""
        return self.T_ee_cam if self.mode == "eye-in-hand" else self.T_base_cam


class BoardCamera(Camera):
    def __init__(self, arm: KinematicArm, scene: HandEyeScene, name: str = "front", seed: int = 0):
        self.arm, self.scene, self.name = arm, scene, name
        self.rng = np.random.default_rng(seed)
        self.seq = 0

    def read(self) -> Frame:
        T_cam_board = self.scene.T_cam_board(self.arm.true_T_base_ee())
        K = self.scene.intrinsics.matrix()
        size = (self.scene.intrinsics.width, self.scene.intrinsics.height)
        image = render_board(self.scene.spec, K, T_cam_board, size, self.scene.noise_sigma, self.rng)
        self.seq += 1
        return Frame(image=image, t_capture=time.time(), seq=self.seq)

    def move_board(self, T_delta: np.ndarray) -> None:
        """The board is bumped: its pose changes by T_delta (applied in its own frame)."""
        if self.scene.mode == "eye-in-hand":
            self.scene.T_base_board = self.scene.T_base_board @ T_delta
        else:
            self.scene.T_ee_board = self.scene.T_ee_board @ T_delta


@dataclass
class MockRig:
    arm: KinematicArm
    camera: BoardCamera
    scene: HandEyeScene
    serial: str = "mock-0001"
    extras: dict = field(default_factory=dict)


def mock_intrinsics() -> Intrinsics:
    return Intrinsics(width=640, height=480, fx=450.0, fy=452.0, cx=322.0, cy=238.5, dist=[0.0] * 5)


def _board_facing(spec: BoardSpec, center, normal_into_board, up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """Board pose whose centre sits at `center` and whose z axis (into the print) is `normal`."""
    center = np.asarray(center, dtype=float)
    T = look_at(center, center + np.asarray(normal_into_board, dtype=float), up)
    T[:3, 3] = center - T[:3, :3] @ spec.center()
    return T


def make_mock_rig(mode: CameraMode, spec: BoardSpec | None = None, noise_sigma: float = 2.0,
                  seed: int = 0, name: str = "front") -> MockRig:
    spec = spec or BoardSpec()
    home = default_mock_calibration().home
    arm = KinematicArm(home.position, home.rpy)
    T_base_ee_home = arm.true_T_base_ee()
    if mode == "eye-in-hand":
        # wrist camera 9 cm above the flange, 6 cm to the side, looking down at the board on the table,
        # rolled about its optical axis so that no axis of T_ee_cam is trivially aligned
        T_base_cam = look_at([0.56, 0.03, 0.29], [0.50, 0.0, 0.0]) @ make_T(rot_z(0.35), [0, 0, 0])
        scene = HandEyeScene(mode, spec, mock_intrinsics(), T_ee_cam=invert(T_base_ee_home) @ T_base_cam,
                             T_base_board=_board_facing(spec, [0.50, 0.0, 0.0], [0, 0, -1], up=(1, 0, 0)),
                             noise_sigma=noise_sigma)
    else:
        # camera on a stand in front of the robot; board bolted 6 cm below the flange, facing it
        T_base_cam = look_at([0.52, -0.33, 0.31], [0.50, -0.02, 0.15])
        board_center = np.array([0.50, -0.02, 0.15])
        T_base_board = _board_facing(spec, board_center, board_center - T_base_cam[:3, 3])
        T_base_board = T_base_board @ make_T(rot_x(math.radians(5.0)), [0, 0, 0])
        scene = HandEyeScene(mode, spec, mock_intrinsics(), T_base_cam=T_base_cam,
                             T_ee_board=invert(T_base_ee_home) @ T_base_board, noise_sigma=noise_sigma)
    return MockRig(arm=arm, camera=BoardCamera(arm, scene, name=name, seed=seed), scene=scene)
