"""`calibration.yaml`: the one file that says where the arm may go and where the cameras are.

The robot client reads the safety box (``workspace``, ``limits``) and ``home`` from it; every
episode's metadata carries a copy. Units: metres and radians, all positions in the robot base
frame. Camera transforms ``T`` are 4x4 homogeneous matrices (row-major nested lists):

* eye-to-hand: ``T`` is the camera pose in the base frame, ``p_base = T @ p_cam``;
* eye-in-hand: ``T`` is the camera pose in the end-effector frame, ``p_ee = T @ p_cam``.

Orientations are roll, pitch, yaw with ``R = Rz(yaw) @ Ry(pitch) @ Rx(roll)`` (see
``calibration.transforms``).
"""

from __future__ import annotations

import math
import os
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

HOW_TO_MAKE = ("make one with `vlaloop calibrate workspace --corners x0,y0,z0 x1,y1,z1 --out PATH` "
               "(or record it by guiding the arm: `vlaloop calibrate workspace --guide --out PATH`)")

Vec3 = Annotated[list[float], Field(min_length=3, max_length=3)]
Matrix4 = Annotated[list[Annotated[list[float], Field(min_length=4, max_length=4)]],
                    Field(min_length=4, max_length=4)]
CameraMode = Literal["eye-in-hand", "eye-to-hand"]


class CalibrationError(ValueError):
    """calibration.yaml is missing, unreadable or inconsistent; the message says what and how to fix."""


class Workspace(BaseModel):
    """The safety box for the end-effector position, base frame."""

    min: Vec3
    max: Vec3

    @model_validator(mode="after")
    def _ordered(self) -> Workspace:
        for axis, lo, hi in zip("xyz", self.min, self.max, strict=True):
            if not lo < hi:
                raise ValueError(f"workspace.min.{axis} = {lo} must be < workspace.max.{axis} = {hi}")
        return self

    def contains(self, position: Any, tol: float = 0.0) -> bool:
        p = np.asarray(position, dtype=float)
        return bool(np.all(p >= np.asarray(self.min) - tol) and np.all(p <= np.asarray(self.max) + tol))

    def clamp(self, position: Any) -> np.ndarray:
        return np.clip(np.asarray(position, dtype=float), self.min, self.max)


class Home(BaseModel):
    position: Vec3
    rpy: Vec3


class Limits(BaseModel):
    max_translation_per_step: float = Field(gt=0, description="m per control step")
    max_rotation_per_step: float = Field(gt=0, description="rad per control step")


class Intrinsics(BaseModel):
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    fx: float = Field(gt=0)
    fy: float = Field(gt=0)
    cx: float
    cy: float
    dist: list[float] = Field(default_factory=list, description="OpenCV distortion coefficients")

    def matrix(self) -> np.ndarray:
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    def dist_array(self) -> np.ndarray:
        return np.asarray(self.dist if self.dist else [0.0] * 5, dtype=float)


class CameraCalibration(BaseModel):
    serial: str = ""
    intrinsics: Intrinsics | None = None
    mode: CameraMode | None = None
    T: Matrix4 | None = Field(default=None, description="base->cam (eye-to-hand) or ee->cam (eye-in-hand)")
    method: str | None = Field(default=None, description="hand-eye method whose result is T")
    residuals: dict[str, Any] = Field(default_factory=dict, description="per-method residuals")

    @field_validator("T")
    @classmethod
    def _rigid(cls, T: list[list[float]] | None) -> list[list[float]] | None:
        if T is None:
            return T
        m = np.asarray(T, dtype=float)
        if not np.all(np.isfinite(m)):
            raise ValueError("T has non-finite entries")
        if not np.allclose(m[3], [0, 0, 0, 1], atol=1e-9):
            raise ValueError(f"T's last row must be [0, 0, 0, 1], got {m[3].tolist()}")
        R = m[:3, :3]
        if not np.allclose(R @ R.T, np.eye(3), atol=1e-4) or np.linalg.det(R) < 0:
            raise ValueError("T's upper-left 3x3 block is not a rotation matrix")
        return T

    @model_validator(mode="after")
    def _mode_with_T(self) -> CameraCalibration:
        if (self.T is None) != (self.mode is None):
            raise ValueError("a camera needs both `mode` and `T` (or neither, before hand-eye calibration)")
        return self

    def transform(self) -> np.ndarray:
        if self.T is None:
            raise CalibrationError("this camera has no hand-eye transform yet; run "
                                   "`vlaloop calibrate handeye --camera NAME --mode ...`")
        return np.asarray(self.T, dtype=float)


class CalibrationFile(BaseModel):
    version: int = 1
    created: str = Field(default_factory=lambda: datetime.now(timezone.utc).isoformat(timespec="seconds"))
    workspace: Workspace
    home: Home
    limits: Limits
    cameras: dict[str, CameraCalibration] = Field(default_factory=dict)
    notes: list[str] = Field(default_factory=list, description="how each part was obtained")

    @model_validator(mode="after")
    def _home_inside(self) -> CalibrationFile:
        if not self.workspace.contains(self.home.position):
            raise ValueError(f"home.position {list(self.home.position)} is outside the workspace box "
                             f"min {list(self.workspace.min)} max {list(self.workspace.max)}")
        return self


def default_mock_calibration() -> CalibrationFile:
    """The fixed calibration of the mock simulator (table top at z = 0)."""
    return CalibrationFile(
        workspace=Workspace(min=[0.30, -0.25, 0.00], max=[0.70, 0.25, 0.30]),
        home=Home(position=[0.5, 0.0, 0.20], rpy=[math.pi, 0.0, 0.0]),
        limits=Limits(max_translation_per_step=0.03, max_rotation_per_step=0.15),
        notes=["mock simulator defaults (calibration.schema.default_mock_calibration)"],
    )


def metaworld_calibration() -> CalibrationFile:
    """The safety box for MetaWorld's Sawyer (sim.metaworld): its hand limits (the widest over the
    tasks) and up to 1 cm per step on every axis (the backend clips each axis to 1 cm itself)."""
    return CalibrationFile(
        workspace=Workspace(min=[-0.525, 0.348, -0.0525], max=[0.525, 1.025, 0.7]),
        home=Home(position=[0.0, 0.6, 0.2], rpy=[math.pi, 0.0, 0.0]),
        limits=Limits(max_translation_per_step=0.01 * math.sqrt(3) + 1e-6, max_rotation_per_step=0.15),
        notes=["MetaWorld defaults (calibration.schema.metaworld_calibration)"],
    )


def _describe(e: ValidationError) -> str:
    lines = []
    for err in e.errors():
        where = ".".join(str(p) for p in err["loc"]) or "(top level)"
        if err["type"] == "missing":
            lines.append(f"  missing field `{where}`")
        else:
            lines.append(f"  `{where}`: {err['msg']}")
    return "\n".join(lines)


class _Dumper(yaml.SafeDumper):
    """Block style, except that lists of numbers (vectors, matrix rows) stay on one line."""


def _represent_list(dumper: yaml.SafeDumper, data: list) -> yaml.Node:
    flow = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flow)


_Dumper.add_representer(list, _represent_list)


def load_calibration(path: str | os.PathLike) -> CalibrationFile:
    p = Path(path)
    if not p.exists():
        raise CalibrationError(f"calibration file {p} does not exist; {HOW_TO_MAKE}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise CalibrationError(f"calibration file {p} is not valid YAML ({e}); fix it or {HOW_TO_MAKE}") from None
    if not isinstance(data, dict):
        raise CalibrationError(f"calibration file {p} must hold a mapping with workspace, home and limits; "
                               f"{HOW_TO_MAKE}")
    try:
        return CalibrationFile.model_validate(data)
    except ValidationError as e:
        raise CalibrationError(f"calibration file {p} is invalid:\n{_describe(e)}\nFix it or {HOW_TO_MAKE}") from None


def save_calibration(cal: CalibrationFile, path: str | os.PathLike) -> Path:
    """Write atomically: a reader sees the old file or the new one, never half of one."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    text = yaml.dump(cal.model_dump(mode="json"), Dumper=_Dumper, sort_keys=False)
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", suffix=".tmp", dir=p.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    dir_fd = os.open(p.parent, os.O_RDONLY)
    try:  # make the rename itself durable
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return p
