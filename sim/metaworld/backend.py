"""MetaWorld behind the robot client's ``Arm`` / ``Camera`` interfaces, with the mock's faults.

``MetaWorldRobot`` mirrors ``MockRobot``: ``.arm``, ``.cameras``, ``new_episode()``,
``.instruction``, ``.success()``, ``.max_steps``, ``expert_action_pair()``. Everything random
(layout, instruction paraphrase, expert noise, faults) is drawn from generators seeded by the
episode seed. Injected faults (``FaultConfig``, as the mock's): dropped and late frames, a slow
arm (translation scaled by 1/k), arm errors (a reflex until ``recover()``), a failed camera.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from interface.robot import Arm, ArmError, ArmState, Camera, Frame
from sim.metaworld.actions import HOME_RPY
from sim.metaworld.env import CAMERA_NAMES, MetaWorldScene
from sim.metaworld.expert import add_noise
from sim.metaworld.tasks import TASK_NAMES, TaskSpec
from sim.mock.backend import FaultConfig

__all__ = ["FaultConfig", "MetaWorldArm", "MetaWorldCamera", "MetaWorldRobot"]


class MetaWorldArm(Arm):
    def __init__(self, robot: MetaWorldRobot):
        self._robot = robot
        self.error: str | None = None
        self.n_moves = 0
        self.n_holds = 0
        self.n_recovers = 0
        self.n_rejected = 0

    def reset_home(self) -> None:
        """MetaWorld has no separate homing: the episode's reset put the hand at its start pose."""
        with self._robot.lock:
            if self.error is not None:
                raise ArmError(f"arm in error state ({self.error}); call recover() first")

    def state(self) -> ArmState:
        with self._robot.lock:
            v = self._robot.scene.state_vector()
            return ArmState(position=v[:3].astype(np.float64), rpy=HOME_RPY.copy(), gripper=float(v[6]),
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
            a = np.array(action, dtype=np.float64).reshape(-1)
            if a.shape == (7,):
                a[:6] /= faults.slow_arm_factor
            if a.shape != (7,) or not robot.scene.step(a):
                self.n_rejected += 1

    def hold(self) -> None:
        with self._robot.lock:  # one MetaWorld step is one motion: between commands the arm stands
            self.n_holds += 1

    def recover(self) -> None:
        with self._robot.lock:
            self.error = None
            self.n_recovers += 1


class MetaWorldCamera(Camera):
    def __init__(self, robot: MetaWorldRobot, name: str):
        if name not in CAMERA_NAMES:
            raise ValueError(f"unknown MetaWorld camera {name!r} (one of {CAMERA_NAMES})")
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
                raise RuntimeError(f"MetaWorld camera {self.name!r} is gone (injected fault)")
            drop, late = self.rng.random(), self.rng.random()
            if self._last is not None and drop < faults.drop_frame_prob:
                self.n_dropped += 1
                last = self._last
                return Frame(last.image.copy(), last.t_capture, last.seq, dict(last.meta, dropped=True))
            image = robot.scene.render(self.name)
            self.seq += 1
            t = time.time()
            meta = {"camera": self.name, "sim_step": robot.arm.n_moves}
            if late < faults.late_frame_prob:
                self.n_late += 1
                t -= faults.late_frame_s
                meta["late"] = True
            self._last = Frame(image, t, self.seq, meta)
            return Frame(image.copy(), t, self.seq, dict(meta))


class MetaWorldRobot:
    """One MetaWorld robot: ``.arm``, ``.cameras``, the current task and its scripted expert."""

    def __init__(self, task: str = "button-press-topdown", image_size: int = 96,
                 cameras: tuple[str, ...] = ("front",), faults: FaultConfig | None = None,
                 expert_noise: float = 0.0, split: str = "train", seed: int = 0):
        if task not in TASK_NAMES:
            raise ValueError(f"unknown MetaWorld task {task!r} (one of {TASK_NAMES})")
        self.lock = threading.RLock()
        self.default_task = task
        self.split = split
        self.image_size = int(image_size)
        self.faults = faults or FaultConfig()
        self.expert_noise = float(expert_noise)
        self.scene = MetaWorldScene(self.image_size)
        self.arm = MetaWorldArm(self)
        self.cameras: dict[str, MetaWorldCamera] = {name: MetaWorldCamera(self, name) for name in cameras}
        self._seeds = np.random.default_rng([int(seed), 0x5EED])
        self.new_episode()

    def new_episode(self, seed: int | None = None, task: str | None = None, split: str | None = None) -> str:
        """Reset to the layout of ``seed`` (else the robot's own seed sequence); returns the
        instruction. An arm error persists."""
        with self.lock:
            if seed is None:
                seed = int(self._seeds.integers(2**31 - 1))
            self.task: TaskSpec = self.scene.reset(task or self.default_task, int(seed), split or self.split)
            self.seed = int(seed)
            self.fault_rng = np.random.default_rng([self.seed, 0xFA17])
            self.noise_rng = np.random.default_rng([self.seed, 0xE4])
            self.arm.n_moves = 0
            for cam in self.cameras.values():
                cam.reseed(self.seed)
                cam._last = None
            return self.task.instruction

    @property
    def instruction(self) -> str:
        return self.task.instruction

    @property
    def task_name(self) -> str:
        return self.task.name

    @property
    def max_steps(self) -> int:
        return self.task.max_steps

    def success(self) -> bool:
        with self.lock:
            return self.scene.success()

    def expert_action(self, noise: float | None = None) -> np.ndarray:
        return self.expert_action_pair(noise)[1]

    def expert_action_pair(self, noise: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(clean, noisy) expert actions [7] (float32): what the expert means, what it executes."""
        with self.lock:
            clean = self.scene.expert_action()
            noisy = add_noise(clean, self.noise_rng, self.expert_noise if noise is None else noise)
            return clean.astype(np.float32), noisy

    def close(self) -> None:
        self.scene.close()
