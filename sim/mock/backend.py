"""The mock robot behind the `Arm` / `Camera` interfaces, with task episodes and fault injection.

``MockRobot`` bundles one simulated scene, its arm (``.arm``), its cameras (``.cameras``), the
current task (``.new_episode()``, ``.instruction``, ``.success()``, ``.max_steps``) and the
scripted expert (``.expert_action()``). Everything random (layout, expert noise, faults) is drawn
from generators seeded by the episode seed: the same seed gives the same frames and outcomes.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np

from interface.robot import Arm, ArmError, ArmState, Camera, Frame
from sim.mock.expert import add_noise, expert_action
from sim.mock.sim import Scene, SceneState
from sim.mock.tasks import TASK_NAMES, TaskSpec, sample_episode, success

CAMERA_NAMES = ("front", "wrist")


@dataclass
class FaultConfig:
    """Injected faults (all off by default). Each is drawn from a generator seeded per episode.

    * ``drop_frame_prob``: a camera read returns the previous frame again (same image, same
      ``seq``, same ``t_capture``) -- a dropped frame; the client sees a repeated seq.
    * ``late_frame_prob`` / ``late_frame_s``: the frame shows the current scene but its
      ``t_capture`` lies ``late_frame_s`` in the past (``meta["late"] = True``) -- a frame that
      arrived late; the client must notice the stale timestamp.
    * ``slow_arm_factor`` k >= 1: each motion executes only 1/k of its commanded translation and
      rotation before the next command replaces it (the gripper still acts at once).
    * ``arm_error_prob`` (per ``move_delta``) / ``arm_error_at_step`` (the n-th ``move_delta`` of
      an episode, counted from 0): like a Franka reflex, ``move_delta`` raises ``ArmError``
      without moving, and every later ``move_delta`` / ``reset_home`` raises too until
      ``recover()``; ``state().error`` says why.
    * ``camera_fail``: ``read()`` raises RuntimeError (the camera is gone).
    """

    drop_frame_prob: float = 0.0
    late_frame_prob: float = 0.0
    late_frame_s: float = 0.5
    slow_arm_factor: float = 1.0
    arm_error_prob: float = 0.0
    arm_error_at_step: int | None = None
    camera_fail: bool = False

    def __post_init__(self) -> None:
        for name in ("drop_frame_prob", "late_frame_prob", "arm_error_prob"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0, 1]")
        if self.slow_arm_factor < 1.0:
            raise ValueError("slow_arm_factor must be >= 1")
        if self.late_frame_s < 0:
            raise ValueError("late_frame_s must be >= 0")


class MockArm(Arm):
    def __init__(self, robot: MockRobot):
        self._robot = robot
        self.error: str | None = None
        self.n_moves = 0  # move_delta calls in this episode (accepted or not)
        self.n_holds = 0
        self.n_recovers = 0
        self.n_rejected = 0  # non-finite actions ignored

    def reset_home(self) -> None:
        with self._robot.lock:
            if self.error is not None:
                raise ArmError(f"arm in error state ({self.error}); call recover() first")
            self._robot.scene.reset_arm()

    def state(self) -> ArmState:
        with self._robot.lock:
            s = self._robot.scene.state
            return ArmState(position=s.ee.copy(), rpy=s.rpy.copy(), gripper=1.0 if s.gripper_open else 0.0,
                            t=time.time(), error=self.error)

    def move_delta(self, action: np.ndarray) -> None:
        robot = self._robot
        with robot.lock:
            if self.error is not None:
                raise ArmError(f"arm in error state ({self.error}); call recover() first")
            step = self.n_moves
            self.n_moves += 1
            faults = robot.faults
            draw = robot.fault_rng.random()  # drawn every call so the stream stays aligned
            if faults.arm_error_at_step == step or draw < faults.arm_error_prob:
                self.error = f"cartesian reflex at move {step}"
                raise ArmError(self.error)
            if not robot.scene.apply_action(action, scale=1.0 / faults.slow_arm_factor):
                self.n_rejected += 1

    def hold(self) -> None:
        # motions are single kinematic steps: between commands the arm already stands still
        with self._robot.lock:
            self.n_holds += 1

    def recover(self) -> None:
        with self._robot.lock:
            self.error = None
            self.n_recovers += 1


class MockCamera(Camera):
    def __init__(self, robot: MockRobot, name: str):
        if name not in CAMERA_NAMES:
            raise ValueError(f"unknown mock camera {name!r} (one of {CAMERA_NAMES})")
        self.name = name
        self._robot = robot
        self._last: Frame | None = None
        self.seq = 0
        self.n_dropped = 0
        self.n_late = 0
        self.rng = np.random.default_rng(0)

    def reseed(self, seed: int) -> None:
        self.rng = np.random.default_rng([seed, 0xCA, CAMERA_NAMES.index(self.name)])

    def read(self) -> Frame:
        robot = self._robot
        with robot.lock:
            faults = robot.faults
            if faults.camera_fail:
                raise RuntimeError(f"mock camera {self.name!r} is gone (injected fault)")
            drop, late = self.rng.random(), self.rng.random()
            if self._last is not None and drop < faults.drop_frame_prob:
                self.n_dropped += 1
                last = self._last
                return Frame(last.image.copy(), last.t_capture, last.seq, dict(last.meta, dropped=True))
            image = robot.scene.render(robot.image_size, self.name)
            self.seq += 1
            t = time.time()
            meta = {"camera": self.name, "sim_step": robot.arm.n_moves}
            if late < faults.late_frame_prob:
                self.n_late += 1
                t -= faults.late_frame_s
                meta["late"] = True
            self._last = Frame(image, t, self.seq, meta)
            return Frame(image.copy(), t, self.seq, dict(meta))


class MockRobot:
    """One simulated robot: ``.arm``, ``.cameras``, the current task and its expert."""

    def __init__(self, task: str = "reach", image_size: int = 96, cameras: tuple[str, ...] = ("front",),
                 faults: FaultConfig | None = None, expert_noise: float = 0.0, split: str = "train",
                 seed: int = 0):
        if task not in TASK_NAMES:
            raise ValueError(f"unknown task {task!r} (one of {TASK_NAMES})")
        self.lock = threading.RLock()
        self.default_task = task
        self.split = split
        self.image_size = int(image_size)
        self.faults = faults or FaultConfig()
        self.expert_noise = float(expert_noise)
        self.scene = Scene()
        self.arm = MockArm(self)
        self.cameras: dict[str, MockCamera] = {name: MockCamera(self, name) for name in cameras}
        self._seeds = np.random.default_rng([int(seed), 0x5EED])
        self.new_episode()

    def new_episode(self, seed: int | None = None, task: str | None = None, split: str | None = None) -> str:
        """Sample a task and layout (from ``seed``, else the robot's own seed sequence), put the
        arm home with the gripper open, and return the instruction. An arm error persists."""
        with self.lock:
            if seed is None:
                seed = int(self._seeds.integers(2**31 - 1))
            episode = sample_episode(int(seed), task or self.default_task, split or self.split)
            self.seed = int(seed)
            self.task: TaskSpec = episode.task
            self.scene.state = episode.state
            self.start_xy = episode.start_xy
            self.fault_rng = np.random.default_rng([self.seed, 0xFA17])
            self.noise_rng = np.random.default_rng([self.seed, 0xE4])
            self.arm.n_moves = 0
            for cam in self.cameras.values():
                cam.reseed(self.seed)
            return self.task.instruction

    @property
    def instruction(self) -> str:
        return self.task.instruction

    @property
    def task_name(self) -> str:
        return self.task.family

    @property
    def max_steps(self) -> int:
        return self.task.max_steps

    @property
    def state(self) -> SceneState:
        return self.scene.state

    def success(self) -> bool:
        with self.lock:
            return success(self.task, self.scene.state, self.start_xy)

    def expert_action(self, noise: float | None = None) -> np.ndarray:
        """The scripted expert's next action [7] (float32), with ``noise`` (default: the robot's
        ``expert_noise``) drawn from the episode's noise generator."""
        return self.expert_action_pair(noise)[1]

    def expert_action_pair(self, noise: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(clean, noisy) expert actions [7] (float32): what the expert means, what it executes."""
        with self.lock:
            clean = expert_action(self.task, self.scene.state)
            noisy = add_noise(clean, self.noise_rng, self.expert_noise if noise is None else noise)
            return clean.astype(np.float32), noisy.astype(np.float32)

    def close(self) -> None:
        self.arm.close()
        for cam in self.cameras.values():
            cam.close()
