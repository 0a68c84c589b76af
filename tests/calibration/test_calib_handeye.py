"""Hand-eye calibration on the mock rig: images rendered from known poses with pixel noise."""

import math

import cv2
import numpy as np
import pytest

from calibration.board import BoardSpec, board_pose, detect_corners
from calibration.board_render import render_board
from calibration.handeye import (
    HandEyeRefused,
    MotionPlan,
    collect_samples,
    generate_poses,
    load_samples,
    move_to,
    save_samples,
    solve_handeye,
)
from calibration.mock_rig import KinematicArm, make_mock_rig, mock_intrinsics
from calibration.schema import CalibrationError, default_mock_calibration
from calibration.transforms import invert, make_T, pose_to_T, rot_x, rot_y, rot_z, rotation_angle

PIVOT = {"eye-in-hand": 0.2, "eye-to-hand": 0.0}  # board distance along the tool axis / flange


def _plan(mode, seed=0):
    return MotionPlan(pivot_m=PIVOT[mode], step_period_s=0, settle_s=0, seed=seed)


def _errors(T, truth):
    D = invert(truth) @ T
    return np.linalg.norm(D[:3, 3]) * 1000, math.degrees(rotation_angle(D[:3, :3]))


@pytest.fixture(scope="module", params=["eye-in-hand", "eye-to-hand"])
def recorded(request):
    mode = request.param
    rig = make_mock_rig(mode, noise_sigma=2.0, seed=1)
    samples = collect_samples(rig.arm, rig.camera, _plan(mode), workspace=default_mock_calibration().workspace)
    return mode, rig, samples


def test_renderer_gives_the_pose_it_was_asked_for():
    spec, K = BoardSpec(), mock_intrinsics().matrix()
    R = rot_x(0.4) @ rot_y(-0.3) @ rot_z(0.5)
    T = make_T(R, np.array([0.01, -0.02, 0.32]) - R @ spec.center())
    img = render_board(spec, K, T, (640, 480), noise_sigma=2.0, rng=np.random.default_rng(0))
    corners = detect_corners(img, spec)
    truth = cv2.projectPoints(spec.board().getChessboardCorners()[corners.ids], cv2.Rodrigues(R)[0], T[:3, 3],
                              K, np.zeros(5))[0].reshape(-1, 2)
    # no systematic offset: OpenCV < 4.13's CharucoDetector adds +0.5 px (opencv#25539), we remove it
    assert np.abs((corners.points - truth).mean(axis=0)).max() < 0.1
    est, rms = board_pose(corners, spec, K, np.zeros(5))
    t_mm, r_deg = _errors(est, T)
    assert rms < 0.3 and t_mm < 1.0 and r_deg < 0.3
    behind = make_T(R, [0, 0, -0.3])  # a board behind the camera is not drawn
    assert detect_corners(render_board(spec, K, behind, (640, 480), 0.0), spec) is None


def test_recovers_the_hidden_transform(recorded):
    mode, rig, samples = recorded
    sol = solve_handeye(samples, mode, rig.scene.spec, rig.scene.intrinsics)
    assert set(sol.methods) == {"TSAI", "PARK", "HORAUD", "ANDREFF", "DANIILIDIS"}
    assert sol.n_samples == len(samples) >= 12 and sol.n_dropped == 0
    assert sol.best is min(sol.methods.values(), key=lambda r: r.score(3.0, 0.75))
    t_mm, r_deg = _errors(sol.best.T, rig.scene.truth())
    assert t_mm < 2.0 and r_deg < 0.5, (mode, t_mm, r_deg, sol.table())


def test_wrong_square_size_is_refused_with_the_reason(recorded):
    mode, rig, samples = recorded
    wrong = rig.scene.spec.with_square(rig.scene.spec.square_m * 1.10)
    with pytest.raises(HandEyeRefused) as e:
        solve_handeye(samples, mode, wrong, rig.scene.intrinsics)
    msg = str(e.value)
    assert "refused" in msg and "--square-size looks wrong by about -9%" in msg, msg
    assert "| PARK" in msg  # the per-method table comes with the refusal


def test_saved_samples_resolve_to_the_same_answer(recorded, tmp_path):
    mode, rig, samples = recorded
    save_samples(tmp_path, samples, mode, rig.scene.spec, rig.scene.intrinsics, "front")
    loaded, mode2, spec2, intr2, name = load_samples(tmp_path)
    assert (mode2, spec2, intr2, name) == (mode, rig.scene.spec, rig.scene.intrinsics, "front")
    for s, back in zip(samples, loaded, strict=True):
        np.testing.assert_array_equal(s.T_base_ee, back.T_base_ee)
        assert all(np.array_equal(a, b) for a, b in zip(s.images, back.images, strict=True))  # PNG is lossless


@pytest.mark.parametrize("mode", ["eye-in-hand", "eye-to-hand"])
def test_a_board_moved_halfway_is_refused(mode):
    rig = make_mock_rig(mode, noise_sigma=2.0, seed=2)

    def bump(k, sample):
        if k == 7:  # between sample 7 and 8 of 13
            rig.camera.move_board(make_T(rot_z(math.radians(3.0)), [0.01, 0.005, 0.0]))

    samples = collect_samples(rig.arm, rig.camera, _plan(mode), on_sample=bump)
    with pytest.raises(HandEyeRefused) as e:
        solve_handeye(samples, mode, rig.scene.spec, rig.scene.intrinsics)
    msg = str(e.value)
    assert "board seems to have moved between pose" in msg and "board moved during the run" in msg, msg


def test_too_few_board_views_is_refused():
    rig = make_mock_rig("eye-in-hand", seed=3)
    samples = collect_samples(rig.arm, rig.camera, MotionPlan(n_poses=4, pivot_m=0.2, step_period_s=0, settle_s=0))
    for s in samples[:3]:
        s.images = [np.zeros_like(img) for img in s.images]
    with pytest.raises(HandEyeRefused, match=r"found in only 2 of 5 samples"):
        solve_handeye(samples, "eye-in-hand", rig.scene.spec, rig.scene.intrinsics)


class RecordingArm(KinematicArm):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.deltas, self.holds = [], 0

    def move_delta(self, action):
        self.deltas.append(np.asarray(action, dtype=float))
        super().move_delta(action)

    def hold(self):
        self.holds += 1


def test_motion_is_small_deltas_about_two_axes_and_returns_to_start():
    home = default_mock_calibration().home
    arm = RecordingArm(home.position, home.rpy)
    rig = make_mock_rig("eye-in-hand")
    rig.camera.arm = arm
    plan = MotionPlan(n_poses=6, pivot_m=0.2, step_period_s=0, settle_s=0)
    targets = generate_poses(pose_to_T(home.position, home.rpy), plan)
    start = pose_to_T(home.position, home.rpy)
    tilt_axes = [np.cross([0, 0, 1], start[:3, :3].T @ T[:3, :3] @ [0, 0, 1]) for T in targets[:4]]
    dominant = {int(np.argmax(np.abs(v))) for v in tilt_axes}
    assert dominant == {0, 1}  # tilts about both the tool x and y axes
    samples = collect_samples(arm, rig.camera, plan)
    assert len(samples) == 7
    steps = np.array(arm.deltas)
    assert np.abs(steps[:, :3]).max() <= plan.step_translation_m + 1e-9
    assert np.linalg.norm(steps[:, :3], axis=1).max() <= plan.step_translation_m + 1e-9
    assert np.abs(steps[:, 3:6]).max() <= plan.step_rotation_rad + 1e-9
    np.testing.assert_allclose(arm.position, home.position, atol=1e-6)  # back where it started


class MirroredArm(RecordingArm):
    """An arm whose rotation deltas go the other way: calibration must stop, not wander off."""

    def move_delta(self, action):
        a = np.asarray(action, dtype=float).copy()
        a[3:6] *= -1
        super().move_delta(a)


def test_an_arm_that_does_not_converge_is_held_and_reported():
    home = default_mock_calibration().home
    arm = MirroredArm(home.position, home.rpy)
    target = pose_to_T(home.position, home.rpy) @ make_T(rot_x(0.2), [0, 0, 0])
    with pytest.raises(CalibrationError, match="does not converge"):
        move_to(arm, target, MotionPlan(step_period_s=0))
    assert arm.holds >= 1


class BrokenCamera:
    name = "front"

    def read(self):
        raise RuntimeError("camera unplugged")


def test_a_failing_camera_leaves_the_arm_held():
    home = default_mock_calibration().home
    arm = RecordingArm(home.position, home.rpy)
    with pytest.raises(RuntimeError, match="unplugged"):
        collect_samples(arm, BrokenCamera(), MotionPlan(step_period_s=0, settle_s=0))
    assert arm.holds >= 1


class RpyIncrementArm(RecordingArm):
    """Reads the rotation delta as rpy += d, not as the action convention's base-frame rotation
    vector (no backend does any more): the correction rounds must still reach every pose."""

    def move_delta(self, action):
        self.deltas.append(np.asarray(action, dtype=float))
        a = np.asarray(action, dtype=float)
        self.position = self.position + a[:3]
        self.rpy = (self.rpy + a[3:6] + math.pi) % (2 * math.pi) - math.pi


def test_an_rpy_increment_arm_also_calibrates():
    home = default_mock_calibration().home
    rig = make_mock_rig("eye-to-hand", seed=4)
    rig.arm = RpyIncrementArm(home.position, home.rpy)
    rig.camera.arm = rig.arm
    plan = _plan("eye-to-hand")
    plan.n_poses = 8
    samples = collect_samples(rig.arm, rig.camera, plan)
    np.testing.assert_allclose(rig.arm.position, home.position, atol=1e-3)
    sol = solve_handeye(samples, "eye-to-hand", rig.scene.spec, rig.scene.intrinsics)
    t_mm, r_deg = _errors(sol.best.T, rig.scene.truth())
    assert t_mm < 2.0 and r_deg < 0.5
