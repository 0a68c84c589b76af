"""`vlaloop calibrate intrinsics | handeye | workspace` -> calibration.yaml (see docs/calibration.md)."""

from __future__ import annotations

import argparse
import logging
import math
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import yaml
from pydantic import ValidationError

from calibration.board import BoardSpec, detect_corners
from calibration.handeye import (
    HandEyeRefused,
    MotionPlan,
    Sample,
    collect_samples,
    load_samples,
    save_samples,
    solve_handeye,
)
from calibration.intrinsics import capture_images, charuco_intrinsics, read_images, realsense_intrinsics
from calibration.schema import (
    CalibrationError,
    CalibrationFile,
    CameraCalibration,
    Home,
    Limits,
    default_mock_calibration,
    load_calibration,
    save_calibration,
)
from calibration.transforms import invert, rotation_angle
from calibration.workspace import (
    box_with_margin,
    parse_point,
    record_guided_positions,
    stop_on_enter,
    workspace_from_corners,
)
from interface.robot import ArmError

log = logging.getLogger("calibration")
DEFAULT_LIMITS = Limits(max_translation_per_step=0.03, max_rotation_per_step=0.15)


# ---------------------------------------------------------------- argument parsing


def _board_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("ChArUco board (defaults: 5x7 squares of 0.03 m, 0.022 m markers, DICT_5X5_100)")
    g.add_argument("--squares", default=None, help="squares along x and y, e.g. 5x7")
    g.add_argument("--square-size", type=float, default=None, help="measured square edge, metres")
    g.add_argument("--marker-size", type=float, default=None, help="marker edge, metres")
    g.add_argument("--dictionary", default=None, help="cv2.aruco dictionary name")


def _common(p: argparse.ArgumentParser, backends: list[str]) -> None:
    p.add_argument("--out", default=None, help="calibration.yaml to update (default: robot.calibration or "
                                               "./calibration.yaml)")
    p.add_argument("--backend", choices=backends, default=None, help="default: robot.backend from the config")
    p.add_argument("--camera", default=None, help="camera name (default: the first of model.cameras)")


def configure(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="calib_command", required=True)

    p = sub.add_parser("intrinsics", help="camera intrinsics: RealSense factory values or a ChArUco calibration")
    _common(p, ["mock", "franka", "realsense"])
    p.add_argument("--serial", action="append", default=None, help="RealSense serial (repeatable; default: "
                                                                    "robot.camera_serials, else all connected)")
    p.add_argument("--images", default=None, help="folder of ChArUco images: calibrate with OpenCV instead")
    p.add_argument("--capture", type=int, default=0, help="capture this many ChArUco views, then calibrate")
    p.add_argument("--interval", type=float, default=1.0, help="seconds between captured views")
    p.add_argument("--save-images", default=None, help="folder to keep the captured views")
    _board_args(p)

    p = sub.add_parser("handeye", help="hand-eye calibration with a ChArUco board (moves the arm)")
    _common(p, ["mock", "franka"])
    p.add_argument("--mode", choices=["eye-in-hand", "eye-to-hand"], default=None)
    p.add_argument("--resolve", default=None, help="re-solve the samples saved in this folder (no motion)")
    p.add_argument("--samples-dir", default=None, help="where to save samples (default: next to --out)")
    p.add_argument("--from-home", action="store_true", help="reset_home() first; else start where the arm is")
    p.add_argument("--poses", type=int, default=12)
    p.add_argument("--max-angle", type=float, default=25.0, help="deg")
    p.add_argument("--max-shift", type=float, default=0.05, help="m")
    p.add_argument("--pivot", type=float, default=None, help="rotate about this point on the tool axis, m "
                                                             "(default: eye-in-hand the board distance, else 0)")
    p.add_argument("--settle", type=float, default=None, help="s at each pose (default 0.5; mock 0)")
    p.add_argument("--step-period", type=float, default=None, help="s per small delta (default 0.2; mock 0)")
    p.add_argument("--frames", type=int, default=3, help="frames averaged per pose")
    p.add_argument("--max-residual-mm", type=float, default=3.0)
    p.add_argument("--max-residual-deg", type=float, default=0.75)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--mock-noise", type=float, default=2.0, help="mock camera pixel noise sigma")
    p.add_argument("--mock-move-board-at", type=int, default=None,
                   help="mock fault: bump the board after this many samples")
    _board_args(p)

    p = sub.add_parser("workspace", help="the safety box: entered corners or recorded by guiding the arm")
    _common(p, ["mock", "franka"])
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--corners", nargs=2, metavar="X,Y,Z", help="two opposite corners, metres, base frame")
    src.add_argument("--guide", action="store_true", help="record while the operator guides the arm")
    p.add_argument("--duration", type=float, default=60.0, help="guide: stop after this many s (or Enter)")
    p.add_argument("--margin", type=float, default=0.01, help="shrink the box by this much on every side, m")
    p.add_argument("--home", default=None, metavar="X,Y,Z", help="home position (default: keep the file's)")
    p.add_argument("--home-rpy", default=None, metavar="R,P,Y", help="home orientation, rad")
    p.add_argument("--max-translation-per-step", type=float, default=None)
    p.add_argument("--max-rotation-per-step", type=float, default=None)


def run(args: argparse.Namespace, config) -> int:
    handlers = {"intrinsics": run_intrinsics, "handeye": run_handeye, "workspace": run_workspace}
    try:
        return handlers[args.calib_command](args, config)
    except (CalibrationError, ArmError, RuntimeError, OSError) as e:
        # hardware trouble (no arm, no camera, a reflex mid-motion) is one line, never a traceback
        print(f"vlaloop calibrate {args.calib_command}: {one_line(e)}", file=sys.stderr)
        return 1


def one_line(e: BaseException) -> str:
    """The message of a library's exception on one line; its type where the text alone says little."""
    text = " ".join(str(e).split())
    return text if isinstance(e, (CalibrationError, ArmError)) else f"{type(e).__name__}: {text}"


# ---------------------------------------------------------------- shared pieces


def _out_path(args, config) -> Path:
    return Path(args.out or config.robot.calibration or "calibration.yaml")


def _backend(args, config) -> str:
    return args.backend or config.robot.backend


def _camera_name(args, config) -> str:
    return args.camera or (config.model.cameras[0] if config.model.cameras else "front")


def _board_spec(args, base: BoardSpec | None = None) -> BoardSpec:
    b = base or BoardSpec()
    sx, sy = b.squares_x, b.squares_y
    if args.squares:
        try:
            sx, sy = (int(v) for v in args.squares.lower().split("x"))
        except ValueError:
            raise CalibrationError(f"--squares must look like 5x7, got {args.squares!r}") from None
    square = args.square_size or b.square_m
    marker = args.marker_size or (b.marker_m * square / b.square_m)  # same print, rescaled
    return BoardSpec(sx, sy, square, marker, args.dictionary or b.dictionary)


def _base_calibration(path: Path, backend: str) -> CalibrationFile:
    """The file to update. The mock starts from its fixed defaults; real hardware needs the safety
    box first, because hand-eye moves the arm inside it."""
    if path.exists():
        return load_calibration(path)
    if backend == "mock":
        return default_mock_calibration()
    raise CalibrationError(f"{path} does not exist; record the safety box first: `vlaloop calibrate workspace "
                           f"--guide --out {path}` (or --corners x0,y0,z0 x1,y1,z1)")


def _note(cal: CalibrationFile, text: str) -> None:
    cal.notes.append(f"{datetime.now(timezone.utc).isoformat(timespec='seconds')} {text}")


def _open_arm(config, home: Home):
    """The franka arm of the robot client's backend (franky imported only there)."""
    try:
        from hardware.franka import FrankaArm
    except ImportError as e:
        raise CalibrationError(f"the franka backend is not available ({e}); install the `robot` extra or use "
                               f"--backend mock") from None
    r = config.robot
    try:
        return FrankaArm.connect(r.franka_host, realtime=r.franka_realtime, home_position=home.position,
                                 home_rpy=home.rpy, relative_dynamics_factor=r.relative_dynamics_factor,
                                 gripper_speed=r.gripper_speed, gripper_force=r.gripper_force)
    except RuntimeError as e:  # FrankaSetupError: no realtime kernel, no FCI at franka_host, ...
        raise CalibrationError(str(e)) from None


def _open_camera(config, name: str, serial: str):
    try:
        from hardware.realsense import RealSenseCamera
    except ImportError as e:
        raise CalibrationError(f"the realsense backend is not available ({e})") from None
    if not serial:
        raise CalibrationError(f"no serial for camera {name!r}: pass --serial, set robot.camera_serials, or run "
                               f"`vlaloop calibrate intrinsics` (it records the serial)")
    r = config.robot
    try:
        return RealSenseCamera(name, serial, r.camera_width, r.camera_height, r.camera_fps)
    except RuntimeError as e:  # a serial that is not plugged in, a camera that does not stream
        raise CalibrationError(f"camera {name!r} does not start: {e}") from None


# ---------------------------------------------------------------- intrinsics


def run_intrinsics(args, config) -> int:
    out, backend, name = _out_path(args, config), _backend(args, config), _camera_name(args, config)
    cal = _base_calibration(out, backend)
    spec = _board_spec(args)
    if args.images or args.capture:
        if args.images:
            images, source = read_images(args.images), f"images in {args.images}"
        else:
            images, source = _capture_views(args, config, backend, name, spec), f"{args.capture} captured views"
        intr, rms, used = charuco_intrinsics(images, spec)
        serial = (args.serial or [cal.cameras.get(name, CameraCalibration()).serial])[0]
        _set_intrinsics(cal, name, serial, intr)
        _note(cal, f"intrinsics {name}: ChArUco ({source}), {used} views, RMS {rms:.3f} px")
        print(f"{name}: fx={intr.fx:.2f} fy={intr.fy:.2f} cx={intr.cx:.2f} cy={intr.cy:.2f} "
              f"dist={np.round(intr.dist, 5).tolist()}  RMS {rms:.3f} px over {used} views")
    else:
        if backend == "mock":
            from calibration.mock_rig import mock_intrinsics

            found = {"mock-0001": (mock_intrinsics(), "none")}
        else:
            r = config.robot
            found = realsense_intrinsics(args.serial or r.camera_serials or None, r.camera_width,
                                         r.camera_height, r.camera_fps)
        if len(found) == 1:
            names = [name]
        elif not args.serial and config.robot.camera_serials:  # robot.camera_serials follow model.cameras
            names = list(config.model.cameras)
        else:
            names = []  # no way to tell which is which: name them by serial
        for i, (serial, (intr, model)) in enumerate(found.items()):
            cam = names[i] if i < len(names) else serial
            _set_intrinsics(cal, cam, serial, intr)
            _note(cal, f"intrinsics {cam}: factory values of serial {serial} (distortion model {model})")
            print(f"{cam} ({serial}): fx={intr.fx:.2f} fy={intr.fy:.2f} cx={intr.cx:.2f} cy={intr.cy:.2f} "
                  f"model={model}")
    save_calibration(cal, out)
    print(f"wrote {out}")
    return 0


def _set_intrinsics(cal: CalibrationFile, name: str, serial: str, intr) -> None:
    cam = cal.cameras.get(name, CameraCalibration())
    cal.cameras[name] = cam.model_copy(update={"serial": serial or cam.serial, "intrinsics": intr})


def _capture_views(args, config, backend, name, spec) -> list[np.ndarray]:
    if backend == "mock":  # the wrist camera of the mock rig, tilted through wide poses
        from calibration.handeye import generate_poses, move_to
        from calibration.mock_rig import make_mock_rig
        from calibration.transforms import pose_to_T

        rig = make_mock_rig("eye-in-hand", spec)
        plan = MotionPlan(n_poses=args.capture, max_angle_deg=25.0, pivot_m=0.2, step_period_s=0, settle_s=0)
        s = rig.arm.state()
        targets = generate_poses(pose_to_T(s.position, s.rpy), plan)
        return capture_images(rig.camera, args.capture, 0, args.save_images,
                              between=lambda i: move_to(rig.arm, targets[i], plan))
    serial = (args.serial or config.robot.camera_serials or [""])[0]
    camera = _open_camera(config, name, serial)
    try:
        print(f"capturing {args.capture} views, {args.interval} s apart: move the board between them")
        return capture_images(camera, args.capture, args.interval, args.save_images)
    finally:
        camera.close()


# ---------------------------------------------------------------- hand-eye


def run_handeye(args, config) -> int:
    out, backend, name = _out_path(args, config), _backend(args, config), _camera_name(args, config)
    cal = _base_calibration(out, backend)
    truth = None
    if args.resolve:
        samples, mode, saved_spec, intrinsics, name = load_samples(args.resolve)
        name = args.camera or name
        mode = args.mode or mode
        spec = _board_spec(args, saved_spec)
        samples_dir = Path(args.resolve)
        serial = cal.cameras.get(name, CameraCalibration()).serial
    else:
        if args.mode is None:
            raise CalibrationError("--mode eye-in-hand|eye-to-hand is required (or --resolve DIR)")
        mode, spec = args.mode, _board_spec(args)
        samples, intrinsics, serial, truth = _collect(args, config, backend, cal, mode, spec, name)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
        samples_dir = Path(args.samples_dir or out.parent / "calibration_samples" / f"handeye-{mode}-{stamp}")
        save_samples(samples_dir, samples, mode, spec, intrinsics, name)
        print(f"saved {len(samples)} samples to {samples_dir} (re-solve: vlaloop calibrate handeye "
              f"--resolve {samples_dir})")
    try:
        sol = solve_handeye(samples, mode, spec, intrinsics, args.max_residual_mm, args.max_residual_deg)
    except HandEyeRefused as e:
        print(f"vlaloop calibrate handeye: {e}", file=sys.stderr)
        return 1
    print(f"{mode}, camera {name}: {sol.n_samples} samples ({sol.n_dropped} without the board), board "
          f"reprojection {sol.reprojection_px:.3f} px\n{sol.table()}")
    if truth is not None:  # the mock knows the answer: report how far off we are
        D = invert(truth) @ sol.best.T
        print(f"mock truth: error {np.linalg.norm(D[:3, 3]) * 1000:.3f} mm, "
              f"{math.degrees(rotation_angle(D[:3, :3])):.4f} deg")
    cam = cal.cameras.get(name, CameraCalibration())
    cal.cameras[name] = CameraCalibration(  # the intrinsics stored are the ones this T was solved with
        serial=serial or cam.serial, intrinsics=intrinsics, mode=mode, T=np.round(sol.best.T, 8).tolist(),
        method=sol.best.method, residuals={n: r.residuals() for n, r in sol.methods.items()})
    _note(cal, f"handeye {name} {mode}: {sol.best.method} of 5 methods, {sol.n_samples} samples in {samples_dir}, "
               f"residual {sol.best.translation_mm:.2f} mm / {sol.best.rotation_deg:.3f} deg, board {spec.squares_x}x"
               f"{spec.squares_y} squares of {spec.square_m} m")
    save_calibration(cal, out)
    print(f"wrote {out}: {name}.T = {'ee->cam' if mode == 'eye-in-hand' else 'base->cam'} ({sol.best.method})")
    return 0


def _collect(args, config, backend, cal, mode, spec, name):
    mock = backend == "mock"
    if mock:
        from calibration.mock_rig import make_mock_rig

        rig = make_mock_rig(mode, spec, noise_sigma=args.mock_noise, seed=args.seed, name=name)
        arm, camera, intrinsics, serial, truth = rig.arm, rig.camera, rig.scene.intrinsics, rig.serial, rig.scene.truth()
    else:
        entry = cal.cameras.get(name)
        serial = (entry.serial if entry else "") or (config.robot.camera_serials or [""])[0]
        if entry is None or entry.intrinsics is None:
            raise CalibrationError(f"camera {name!r} has no intrinsics in the calibration file; run "
                                   f"`vlaloop calibrate intrinsics --camera {name}` first")
        intrinsics, truth = entry.intrinsics, None
        camera = _open_camera(config, name, serial)
        try:
            arm = _open_arm(config, cal.home)
        except BaseException:
            camera.close()
            raise
    try:
        if args.from_home:
            arm.reset_home()
        pivot = args.pivot if args.pivot is not None else _default_pivot(mode, camera, spec, intrinsics)
        plan = MotionPlan(
            n_poses=args.poses, max_angle_deg=args.max_angle, max_shift_m=args.max_shift, pivot_m=pivot,
            step_translation_m=min(0.01, cal.limits.max_translation_per_step),
            step_rotation_rad=min(0.05, cal.limits.max_rotation_per_step),
            step_period_s=args.step_period if args.step_period is not None else (0.0 if mock else 0.2),
            settle_s=args.settle if args.settle is not None else (0.0 if mock else 0.5),
            frames_per_pose=args.frames, seed=args.seed)

        def on_sample(k: int, sample: Sample) -> None:
            print(f"  sample {k}/{plan.n_poses + 1}", flush=True)
            if mock and args.mock_move_board_at is not None and k == args.mock_move_board_at:
                from calibration.transforms import make_T, rot_z

                camera.move_board(make_T(rot_z(math.radians(3.0)), [0.01, 0.005, 0.0]))

        samples = collect_samples(arm, camera, plan, workspace=cal.workspace, on_sample=on_sample)
    finally:
        arm.hold()
        if not mock:
            camera.close()
            arm.close()
    return samples, intrinsics, serial, truth


def _default_pivot(mode, camera, spec, intrinsics) -> float:
    """Eye-in-hand: orbit about the board, so it stays in view; its distance from the first view
    stands in for the distance along the tool axis. Eye-to-hand: rotate about the flange."""
    if mode == "eye-to-hand":
        return 0.0
    from calibration.board import board_pose

    corners = detect_corners(camera.read().image, spec)
    pose = board_pose(corners, spec, intrinsics.matrix(), intrinsics.dist_array()) if corners else None
    if pose is None:
        raise CalibrationError("the ChArUco board is not visible from the start pose; move the arm so the "
                               "camera sees the whole board, or check --squares/--dictionary")
    return float(np.linalg.norm(pose[0][:3, :3] @ spec.center() + pose[0][:3, 3]))


# ---------------------------------------------------------------- workspace


def run_workspace(args, config) -> int:
    out, backend = _out_path(args, config), _backend(args, config)
    kept = _kept_from(out, backend)
    home = _home(args, kept.get("home"))
    if args.corners:
        box = workspace_from_corners(parse_point(args.corners[0]), parse_point(args.corners[1]), args.margin)
        source = f"corners {args.corners[0]} / {args.corners[1]}"
    else:
        positions = _guide(args, config, backend, home)
        box = box_with_margin(positions, args.margin)
        source = f"guided, {len(positions)} positions"
    limits = kept.get("limits", DEFAULT_LIMITS)
    limits = Limits(max_translation_per_step=args.max_translation_per_step or limits.max_translation_per_step,
                    max_rotation_per_step=args.max_rotation_per_step or limits.max_rotation_per_step)
    if not box.contains(home.position):
        raise CalibrationError(f"home {home.position} is outside the workspace box min {box.min} max {box.max} "
                               f"(margin {args.margin} m included); give a --home inside it or record a larger box")
    cal = CalibrationFile(workspace=box, home=home, limits=limits, cameras=kept.get("cameras", {}),
                          notes=kept.get("notes", []))
    _note(cal, f"workspace: {source}, margin {args.margin} m")
    save_calibration(cal, out)
    print(f"workspace min {box.min} max {box.max}, home {home.position}\nwrote {out}")
    return 0


def _kept_from(out: Path, backend: str) -> dict:
    """What a new workspace keeps from the file it replaces: home, limits, cameras, notes. A file
    whose old box no longer fits its home is what this command repairs, so each part is read on
    its own and a broken part is dropped."""
    if not out.exists():
        mock = default_mock_calibration()
        return {"home": mock.home, "limits": mock.limits} if backend == "mock" else {}
    try:
        data = yaml.safe_load(out.read_text())
    except yaml.YAMLError:
        data = None
    if not isinstance(data, dict):
        log.warning("%s is not a calibration mapping; starting afresh", out)
        return {}
    kept: dict = {}
    parts = {"home": Home.model_validate, "limits": Limits.model_validate, "notes": list,
             "cameras": lambda d: {k: CameraCalibration.model_validate(v) for k, v in d.items()}}
    for key, parse in parts.items():
        if key in data:
            try:
                kept[key] = parse(data[key])
            except (ValidationError, TypeError, AttributeError) as e:
                log.warning("dropping the unreadable `%s` of %s: %s", key, out, e)
    return kept


def _home(args, previous: Home | None) -> Home:
    if args.home is None and previous is None:
        raise CalibrationError("no home pose: give --home x,y,z (and --home-rpy r,p,y)")
    position = parse_point(args.home).tolist() if args.home else list(previous.position)
    if args.home_rpy:
        rpy = parse_point(args.home_rpy).tolist()
    elif previous is not None:
        rpy = list(previous.rpy)
    else:
        rpy = [math.pi, 0.0, 0.0]  # tool pointing down
    return Home(position=position, rpy=rpy)


def _guide(args, config, backend, home: Home) -> np.ndarray:
    if backend == "mock":
        arm, operator = _mock_operator(args.duration)
    else:  # the arm only reports its pose here; the operator moves it in guiding mode
        arm = _open_arm(config, home)
        operator = None
    print(f"guide the arm through the corners of the safe region (hand-guiding mode); press Enter to stop "
          f"(or wait {args.duration:g} s)", flush=True)
    try:
        stop = stop_on_enter()
        if operator is not None:
            operator.start()
        return record_guided_positions(arm, args.duration, stop=stop)
    finally:
        arm.hold()
        if backend != "mock":
            arm.close()


def _mock_operator(duration_s: float):
    """A stand-in operator for the mock: walks the kinematic arm over the corners of a box a little
    larger than the mock default, so --guide can be tried without hardware."""
    from calibration.mock_rig import KinematicArm

    ws = default_mock_calibration().workspace
    arm = KinematicArm(default_mock_calibration().home.position, default_mock_calibration().home.rpy)
    lo, hi = np.array(ws.min) - 0.01, np.array(ws.max) + 0.01
    corners = [np.array([x, y, z]) for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])]

    def walk() -> None:
        dwell = max(0.02, 0.8 * duration_s / len(corners))
        for c in corners:
            arm.position = c.copy()
            time.sleep(dwell)

    return arm, threading.Thread(target=walk, daemon=True)
