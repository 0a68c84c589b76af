"""Hand-eye calibration with a ChArUco board, eye-in-hand or eye-to-hand.

Collect: the arm visits poses generated around a start pose (small safe deltas, settle, several
frames per pose), each sample keeps its images and the arm pose, saved to a folder so a run can be
re-solved offline. Solve: board pose per sample by PnP on the averaged ChArUco corners, then all
five ``cv2.calibrateHandEye`` methods. Residual of a method = spread, across samples, of the
transform that must be constant: base->board (eye-in-hand) or ee->board (eye-to-hand). The best
method is kept; a result whose residual is above the threshold is refused with the likely cause.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from calibration.board import BoardSpec, average_corners, board_pose, detect_corners
from calibration.schema import CalibrationError, CameraMode, Intrinsics, Workspace
from calibration.transforms import (
    T_to_pose,
    invert,
    make_T,
    matrix_to_rotvec,
    mean_rotation,
    pose_to_T,
    rotation_angle,
    rotvec_to_matrix,
    rpy_to_matrix,
)
from interface.robot import Arm, Camera

log = logging.getLogger(__name__)

METHODS = {
    "TSAI": cv2.CALIB_HAND_EYE_TSAI,
    "PARK": cv2.CALIB_HAND_EYE_PARK,
    "HORAUD": cv2.CALIB_HAND_EYE_HORAUD,
    "ANDREFF": cv2.CALIB_HAND_EYE_ANDREFF,
    "DANIILIDIS": cv2.CALIB_HAND_EYE_DANIILIDIS,
}
MIN_SAMPLES = 5
CAUSES = ("Usual causes: a wrong --square-size (measure one printed square in metres: a scaled "
          "print changes it), the board moved during the run (fix it rigidly; for eye-to-hand bolt "
          "it to the flange), the arm was not settled when frames were captured (raise --settle), "
          "or wrong camera intrinsics.")


class HandEyeRefused(CalibrationError):
    """The solution is not consistent enough to be trusted; nothing was written."""


@dataclass
class MotionPlan:
    n_poses: int = 12
    max_angle_deg: float = 25.0  # rotation offsets about the end-effector axes (wider = more accurate)
    max_shift_m: float = 0.05  # translation offsets; distance changes are what pin down the board's scale
    pivot_m: float = 0.0  # rotate about the point this far along the tool z axis (the board)
    step_translation_m: float = 0.01  # each move_delta stays this small ...
    step_rotation_rad: float = 0.05  # ... and this
    step_period_s: float = 0.2  # wait after each delta so the (asynchronous) motion finishes
    settle_s: float = 0.5  # wait at each pose before capturing
    frames_per_pose: int = 3
    seed: int = 0


@dataclass
class Sample:
    T_base_ee: np.ndarray
    images: list[np.ndarray] = field(default_factory=list)


@dataclass
class MethodResult:
    method: str
    T: np.ndarray  # T_ee_cam (eye-in-hand) or T_base_cam (eye-to-hand)
    translation_mm: float  # RMS spread of the constant transform's translation
    rotation_deg: float  # RMS spread of its rotation
    max_translation_mm: float
    max_rotation_deg: float

    def score(self, max_mm: float, max_deg: float) -> float:
        return self.translation_mm / max_mm + self.rotation_deg / max_deg

    def residuals(self) -> dict:
        return {"translation_mm": round(self.translation_mm, 3), "rotation_deg": round(self.rotation_deg, 4),
                "max_translation_mm": round(self.max_translation_mm, 3),
                "max_rotation_deg": round(self.max_rotation_deg, 4)}


@dataclass
class HandEyeSolution:
    mode: CameraMode
    best: MethodResult
    methods: dict[str, MethodResult]
    n_samples: int
    n_dropped: int
    reprojection_px: float

    def table(self) -> str:
        rows = ["| method | translation RMS (mm) | rotation RMS (deg) | translation max (mm) | rotation max (deg) |",
                "|---|---|---|---|---|"]
        for name, r in self.methods.items():
            mark = " (best)" if name == self.best.method else ""
            rows.append(f"| {name}{mark} | {r.translation_mm:.3f} | {r.rotation_deg:.4f} | "
                        f"{r.max_translation_mm:.3f} | {r.max_rotation_deg:.4f} |")
        return "\n".join(rows)


# ---------------------------------------------------------------- poses and motion


def generate_poses(T_start: np.ndarray, plan: MotionPlan) -> list[np.ndarray]:
    """Targets around T_start: rotations about the tool's x and y (and some z) axes, each about a
    pivot on the tool axis, plus small shifts. The first four are pure +-x / +-y tilts so at least
    two rotation axes are always covered; the rest are seeded random mixes."""
    a = math.radians(plan.max_angle_deg)
    rng = np.random.default_rng(plan.seed)
    offsets = [np.array([a, 0, 0.3 * a]), np.array([-a, 0, -0.3 * a]),
               np.array([0, a, -0.3 * a]), np.array([0, -a, 0.3 * a])]
    while len(offsets) < plan.n_poses:
        v = rng.uniform(-1, 1, 3) * np.array([a, a, 0.6 * a])
        if np.linalg.norm(v[:2]) > 0.5 * a:  # small tilts add little information
            offsets.append(v)
    pivot = make_T(np.eye(3), [0, 0, plan.pivot_m])
    targets = []
    for i, rotvec in enumerate(offsets[: plan.n_poses]):
        shift = rng.uniform(-1, 1, 3) * plan.max_shift_m if i >= 4 else np.zeros(3)
        R = make_T(rotvec_to_matrix(rotvec), [0, 0, 0])
        targets.append(T_start @ pivot @ R @ invert(pivot) @ make_T(np.eye(3), shift))
    return targets


def wait_until_still(arm: Arm, timeout_s: float = 5.0, poll_s: float = 0.05, tol_m: float = 5e-5,
                     tol_rad: float = 2e-4) -> bool:
    """Poll the state until two readings a poll apart agree (the asynchronous motion is over)."""
    deadline = time.monotonic() + timeout_s
    last = arm.state()
    while time.monotonic() < deadline:
        time.sleep(poll_s)
        now = arm.state()
        moved = np.linalg.norm(now.position - last.position)
        turned = rotation_angle(rpy_to_matrix(now.rpy) @ rpy_to_matrix(last.rpy).T)
        if moved < tol_m and turned < tol_rad:
            return True
        last = now
    return False


def _pose_error(arm: Arm, T_target: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """(translation, rotation vector) from the current pose to T_target, both in the base frame."""
    s = arm.state()
    R_err = T_target[:3, :3] @ rpy_to_matrix(s.rpy).T
    return T_target[:3, 3] - s.position, matrix_to_rotvec(R_err), s.gripper


def move_to(arm: Arm, T_target: np.ndarray, plan: MotionPlan, tol_m: float = 5e-4,
            tol_rad: float = 2e-3, max_rounds: int = 4) -> None:
    """Reach T_target by a sequence of small deltas, re-reading the state after each round.

    A delta follows interface/action.py: a base-frame translation and a base-frame rotation
    vector applied on the left, so n equal steps of rotvec / n compose exactly to rotvec; the
    correction rounds close what the arm's own tracking leaves. An arm that does not converge is
    held and reported."""
    last = math.inf
    for _ in range(max_rounds):
        dp, rotvec, gripper = _pose_error(arm, T_target)
        err = max(np.linalg.norm(dp) / tol_m, np.linalg.norm(rotvec) / tol_rad)
        if err <= 1.0:
            return
        if err > 0.9 * last:
            arm.hold()
            raise CalibrationError("the arm does not converge to the calibration pose: it does not move "
                                   "by the deltas it is sent (check the backend's move_delta convention)")
        last = err
        n = max(1, math.ceil(max(np.linalg.norm(dp) / plan.step_translation_m,
                                 np.linalg.norm(rotvec) / plan.step_rotation_rad)))
        step = np.concatenate([dp / n, rotvec / n, [gripper]])
        for _ in range(n):
            arm.move_delta(step)
            if plan.step_period_s:
                time.sleep(plan.step_period_s)
        if plan.step_period_s:  # a real arm: let the last motion finish before measuring the error
            wait_until_still(arm)
    dp, rotvec, _ = _pose_error(arm, T_target)
    if np.linalg.norm(dp) > 4 * tol_m or np.linalg.norm(rotvec) > 4 * tol_rad:
        arm.hold()
        raise CalibrationError(f"the arm stopped {np.linalg.norm(dp) * 1000:.1f} mm / "
                               f"{math.degrees(np.linalg.norm(rotvec)):.2f} deg from the calibration pose")


def _mean_pose(Ts: list[np.ndarray]) -> np.ndarray:
    return make_T(mean_rotation([T[:3, :3] for T in Ts]), np.mean([T[:3, 3] for T in Ts], axis=0))


def capture_sample(arm: Arm, camera: Camera, plan: MotionPlan) -> Sample:
    """Settle (motion over, then the vibration), then average several frames and arm readings."""
    if plan.settle_s:
        if not wait_until_still(arm):
            log.warning("the arm did not come to rest within 5 s; capturing anyway")
        time.sleep(plan.settle_s)
    images, poses = [], []
    for _ in range(plan.frames_per_pose):
        s = arm.state()
        poses.append(pose_to_T(s.position, s.rpy))
        images.append(camera.read().image)
        s = arm.state()
        poses.append(pose_to_T(s.position, s.rpy))
    return Sample(T_base_ee=_mean_pose(poses), images=images)


def collect_samples(arm: Arm, camera: Camera, plan: MotionPlan, workspace: Workspace | None = None,
                    on_sample=None) -> list[Sample]:
    """Visit the generated poses and capture a sample at each; always ends back at the start pose,
    and holds the arm if anything goes wrong."""
    s0 = arm.state()
    T_start = pose_to_T(s0.position, s0.rpy)
    samples = []
    try:
        samples.append(capture_sample(arm, camera, plan))
        if on_sample:
            on_sample(1, samples[0])
        for i, T in enumerate(generate_poses(T_start, plan)):
            if workspace is not None and not workspace.contains(T[:3, 3]):
                log.warning("skipping pose %d: %s is outside the workspace box", i, np.round(T[:3, 3], 3))
                continue
            move_to(arm, T, plan)
            samples.append(capture_sample(arm, camera, plan))
            if on_sample:
                on_sample(len(samples), samples[-1])
        move_to(arm, T_start, plan)
    except BaseException:
        arm.hold()
        raise
    return samples


# ---------------------------------------------------------------- persistence (offline re-solve)


def save_samples(directory: str | Path, samples: list[Sample], mode: CameraMode, spec: BoardSpec,
                 intrinsics: Intrinsics, camera: str) -> Path:
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    entries = []
    for i, s in enumerate(samples):
        names = []
        for k, img in enumerate(s.images):
            name = f"pose{i:03d}_f{k}.png"
            cv2.imwrite(str(d / name), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))  # PNG: lossless
            names.append(name)
        p, rpy = T_to_pose(s.T_base_ee)
        entries.append({"T_base_ee": s.T_base_ee.tolist(), "position": p.tolist(), "rpy": rpy.tolist(),
                        "images": names})
    meta = {"mode": mode, "camera": camera, "board": spec.to_dict(), "intrinsics": intrinsics.model_dump(),
            "samples": entries}
    (d / "samples.json").write_text(json.dumps(meta, indent=1))
    return d


def load_samples(directory: str | Path) -> tuple[list[Sample], CameraMode, BoardSpec, Intrinsics, str]:
    d = Path(directory)
    if not (d / "samples.json").exists():
        raise CalibrationError(f"{d} holds no samples.json; record one with `vlaloop calibrate handeye "
                               f"--samples-dir {d} ...`")
    meta = json.loads((d / "samples.json").read_text())
    samples = []
    for e in meta["samples"]:
        images = []
        for name in e["images"]:
            img = cv2.imread(str(d / name), cv2.IMREAD_COLOR)
            if img is None:
                raise CalibrationError(f"cannot read sample image {d / name}")
            images.append(cv2.cvtColor(img, cv2.COLOR_BGR2RGB))
        samples.append(Sample(T_base_ee=np.asarray(e["T_base_ee"], dtype=float), images=images))
    return (samples, meta["mode"], BoardSpec(**meta["board"]), Intrinsics(**meta["intrinsics"]),
            meta.get("camera", "front"))


# ---------------------------------------------------------------- solving


def board_poses(samples: list[Sample], spec: BoardSpec, intrinsics: Intrinsics
                ) -> tuple[list[np.ndarray], list[np.ndarray], float]:
    """(T_base_ee, T_cam_board) pairs for samples where the board was found; mean reprojection px."""
    K, dist = intrinsics.matrix(), intrinsics.dist_array()
    ees, boards, rms = [], [], []
    for s in samples:
        corners = average_corners([detect_corners(img, spec) for img in s.images])
        pose = board_pose(corners, spec, K, dist) if corners is not None else None
        if pose is None:
            continue
        ees.append(s.T_base_ee)
        boards.append(pose[0])
        rms.append(pose[1])
    return ees, boards, float(np.mean(rms)) if rms else math.nan


def constant_chain(mode: CameraMode, X: np.ndarray, T_base_ee: list[np.ndarray],
                   T_cam_board: list[np.ndarray]) -> list[np.ndarray]:
    """The transform that a correct X makes the same for every sample."""
    if mode == "eye-in-hand":  # base->board = base->ee . ee->cam . cam->board
        return [Te @ X @ Tb for Te, Tb in zip(T_base_ee, T_cam_board, strict=True)]
    return [invert(Te) @ X @ Tb for Te, Tb in zip(T_base_ee, T_cam_board, strict=True)]  # ee->board


def spread(Ts: list[np.ndarray]) -> tuple[float, float, float, float]:
    """RMS and max deviation from the mean: translation (mm), rotation (deg)."""
    ts = np.array([T[:3, 3] for T in Ts])
    dt = np.linalg.norm(ts - ts.mean(axis=0), axis=1) * 1000
    R_mean = mean_rotation([T[:3, :3] for T in Ts])
    dr = np.degrees([rotation_angle(R_mean.T @ T[:3, :3]) for T in Ts])
    return float(np.sqrt(np.mean(dt**2))), float(np.sqrt(np.mean(dr**2))), float(dt.max()), float(dr.max())


def _solve_one(mode: CameraMode, method: int, T_base_ee: list[np.ndarray], T_cam_board: list[np.ndarray]
               ) -> np.ndarray:
    # OpenCV solves AX = XB for eye-in-hand; eye-to-hand is the same problem with base->ee poses
    # inverted, and the answer is then cam->base (OpenCV's naming), i.e. T_base_cam.
    arm_T = T_base_ee if mode == "eye-in-hand" else [invert(T) for T in T_base_ee]
    R, t = cv2.calibrateHandEye([T[:3, :3] for T in arm_T], [T[:3, 3] for T in arm_T],
                                [T[:3, :3] for T in T_cam_board], [T[:3, 3] for T in T_cam_board],
                                method=method)
    return make_T(R, t.reshape(3))


def solve_all(mode: CameraMode, T_base_ee: list[np.ndarray], T_cam_board: list[np.ndarray]
              ) -> dict[str, MethodResult]:
    results = {}
    for name, flag in METHODS.items():
        X = _solve_one(mode, flag, T_base_ee, T_cam_board)
        if not np.all(np.isfinite(X)):
            continue
        results[name] = MethodResult(name, X, *spread(constant_chain(mode, X, T_base_ee, T_cam_board)))
    return results


def _diagnose(mode: CameraMode, T_base_ee: list[np.ndarray], T_cam_board: list[np.ndarray],
              best: MethodResult, max_mm: float) -> list[str]:
    """Look for the two commonest causes in the data themselves. Each returned hint is decisive:
    the result is refused even when the residual is under the threshold."""
    hints = []
    # A wrong square size scales every board translation. Pure rotations about the board cannot
    # show it (it looks like a camera offset along the optical axis); distance changes can.
    scales = np.linspace(0.8, 1.25, 46)
    fits = []
    for k in scales:
        scaled = [make_T(T[:3, :3], k * T[:3, 3]) for T in T_cam_board]
        X = _solve_one(mode, METHODS["PARK"], T_base_ee, scaled)
        fits.append(spread(constant_chain(mode, X, T_base_ee, scaled))[0])
    k_best = float(scales[int(np.argmin(fits))])
    if abs(k_best - 1.0) >= 0.03 and min(fits) < 0.5 * best.translation_mm:
        hints.append(f"The data fit best if the board were {k_best:.2f}x the stated size "
                     f"(residual {min(fits):.2f} mm instead of {best.translation_mm:.2f} mm): the "
                     f"--square-size looks wrong by about {100 * (k_best - 1):+.0f}%.")
    # a bumped board splits the constant transform into two groups, before and after
    chain = constant_chain(mode, best.T, T_base_ee, T_cam_board)
    n = len(chain)
    if n >= 2 * MIN_SAMPLES - 2:
        jumps = []
        for cut in range(3, n - 2):
            a, b = chain[:cut], chain[cut:]
            gap = np.linalg.norm(np.mean([T[:3, 3] for T in a], 0) - np.mean([T[:3, 3] for T in b], 0)) * 1000
            within = max(spread(a)[0], spread(b)[0])
            jumps.append((gap / max(within, 1e-6), cut, gap))
        ratio, cut, gap = max(jumps)
        if ratio > 3.0 and gap > max_mm:
            hints.append(f"The board seems to have moved between pose{cut - 1:03d} and pose{cut:03d} (as saved): "
                         f"the samples form two groups {gap:.1f} mm apart. Fix the board and re-run.")
    return hints


def solve_handeye(samples: list[Sample], mode: CameraMode, spec: BoardSpec, intrinsics: Intrinsics,
                  max_translation_mm: float = 3.0, max_rotation_deg: float = 0.75) -> HandEyeSolution:
    """Solve with all five methods and keep the best; raise HandEyeRefused if even the best is
    above the residual thresholds."""
    T_base_ee, T_cam_board, reproj = board_poses(samples, spec, intrinsics)
    dropped = len(samples) - len(T_base_ee)
    if len(T_base_ee) < MIN_SAMPLES:
        raise HandEyeRefused(f"the board was found in only {len(T_base_ee)} of {len(samples)} samples "
                             f"(need {MIN_SAMPLES}); check that it is in view at every pose (smaller "
                             f"--max-angle), lit evenly, and that --squares/--dictionary match the print.")
    methods = solve_all(mode, T_base_ee, T_cam_board)
    if not methods:
        raise HandEyeRefused("every hand-eye method failed; the poses lack rotation diversity")
    best = min(methods.values(), key=lambda r: r.score(max_translation_mm, max_rotation_deg))
    solution = HandEyeSolution(mode, best, methods, len(T_base_ee), dropped, reproj)
    hints = _diagnose(mode, T_base_ee, T_cam_board, best, max_translation_mm)
    if hints or best.translation_mm > max_translation_mm or best.rotation_deg > max_rotation_deg:
        raise HandEyeRefused(
            f"hand-eye result refused: the best method ({best.method}) leaves a residual of "
            f"{best.translation_mm:.2f} mm / {best.rotation_deg:.3f} deg (limits {max_translation_mm} mm / "
            f"{max_rotation_deg} deg) over {len(T_base_ee)} samples.\n" + "\n".join(hints + [CAUSES])
            + f"\n\n{solution.table()}")
    return solution
