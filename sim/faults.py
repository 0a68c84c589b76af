"""Fault injection shared by the simulators: ``FaultConfig`` and an arm, a camera and a robot base.

A simulator subclasses ``SimulatedArm`` (how its scene homes, moves and reports the hand),
``SimulatedCamera`` (how it renders one camera) and ``SimulatedRobot`` (how it loads an episode
and runs its expert). The faults, counters, locking and the order of every random draw live here
once, so that the same seed gives the same faults in every simulator.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from interface.robot import Arm, ArmError, ArmState, Camera, Frame


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


class SimulatedArm(Arm):
    """An ``Arm`` over a simulated scene, with the injected arm faults of ``robot.faults``.

    Subclasses supply the scene hooks ``_home``, ``_pose`` and ``_apply``."""

    def __init__(self, robot: SimulatedRobot):
        self._robot = robot
        self.error: str | None = None
        self.n_moves = 0  # move_delta calls in this episode (accepted or not)
        self.n_holds = 0
        self.n_recovers = 0
        self.n_rejected = 0  # actions the scene refused (non-finite, wrong shape)

    def _home(self) -> None:
        """Put the hand at its home pose."""
        raise NotImplementedError

    def _pose(self) -> tuple[np.ndarray, np.ndarray, float]:
        """(position [3], rpy [3], gripper opening 0..1) of the hand now."""
        raise NotImplementedError

    def _apply(self, action: np.ndarray, slow_factor: float) -> bool:
        """Execute ``action`` with its motion divided by ``slow_factor``; False if the scene
        rejected it."""
        raise NotImplementedError

    def _raise_if_in_error(self) -> None:
        if self.error is not None:
            raise ArmError(f"arm in error state ({self.error}); call recover() first")

    def reset_home(self) -> None:
        with self._robot.lock:
            self._raise_if_in_error()
            self._home()

    def state(self) -> ArmState:
        with self._robot.lock:
            position, rpy, gripper = self._pose()
            return ArmState(position=position, rpy=rpy, gripper=gripper, t=time.time(), error=self.error)

    def move_delta(self, action: np.ndarray) -> None:
        robot = self._robot
        with robot.lock:
            self._raise_if_in_error()
            step = self.n_moves
            self.n_moves += 1
            faults = robot.faults
            draw = robot.fault_rng.random()  # drawn every call so the stream stays aligned
            if faults.arm_error_at_step == step or draw < faults.arm_error_prob:
                self.error = f"cartesian reflex at move {step}"
                raise ArmError(self.error)
            if not self._apply(action, faults.slow_arm_factor):
                self.n_rejected += 1

    def hold(self) -> None:
        # a motion is one simulator step: between commands the arm already stands still
        with self._robot.lock:
            self.n_holds += 1

    def recover(self) -> None:
        with self._robot.lock:
            self.error = None
            self.n_recovers += 1


class SimulatedCamera(Camera):
    """A ``Camera`` over a simulated scene, with dropped and late frames and camera loss.

    Subclasses set ``NAMES`` (the cameras the scene has) and ``SIMULATOR`` (for messages) and
    supply ``_render``."""

    NAMES: tuple[str, ...] = ()
    SIMULATOR = "simulated"

    def __init__(self, robot: SimulatedRobot, name: str):
        if name not in self.NAMES:
            raise ValueError(f"unknown {self.SIMULATOR} camera {name!r} (one of {self.NAMES})")
        self.name = name
        self._robot = robot
        self._last: Frame | None = None
        self.seq = 0
        self.n_dropped = 0
        self.n_late = 0
        self.rng = np.random.default_rng(0)

    def _render(self) -> np.ndarray:
        """The scene as this camera sees it now (uint8 image)."""
        raise NotImplementedError

    def reseed(self, seed: int) -> None:
        self.rng = np.random.default_rng([seed, 0xCA, self.NAMES.index(self.name)])

    def forget_last_frame(self) -> None:
        """No frame to repeat until the next read renders one."""
        self._last = None

    def read(self) -> Frame:
        robot = self._robot
        with robot.lock:
            faults = robot.faults
            if faults.camera_fail:
                raise RuntimeError(f"{self.SIMULATOR} camera {self.name!r} is gone (injected fault)")
            drop, late = self.rng.random(), self.rng.random()
            if self._last is not None and drop < faults.drop_frame_prob:
                self.n_dropped += 1
                last = self._last
                return Frame(last.image.copy(), last.t_capture, last.seq, dict(last.meta, dropped=True))
            image = self._render()
            self.seq += 1
            t = time.time()
            meta = {"camera": self.name, "sim_step": robot.arm.n_moves}
            if late < faults.late_frame_prob:
                self.n_late += 1
                t -= faults.late_frame_s
                meta["late"] = True
            self._last = Frame(image, t, self.seq, meta)
            return Frame(image.copy(), t, self.seq, dict(meta))


def normalize_instruction(text: str) -> str:
    """Case, surrounding blanks, repeated spaces and a final full stop do not change an instruction."""
    return " ".join(text.lower().split()).rstrip(".")


class SimulatedRobot:
    """One simulated robot: ``.arm``, ``.cameras``, the current task, its expert and its faults.

    Subclasses build ``self.scene``, ``self.arm`` and ``self.cameras`` after ``__init__`` here,
    then call ``new_episode()``; they supply ``_load_episode`` and ``expert_action_pair``.
    ``self.task`` (set by ``_load_episode``) has ``instruction`` and ``max_steps``."""

    task: Any
    arm: SimulatedArm
    cameras: dict[str, SimulatedCamera]

    def __init__(self, task: str, image_size: int, faults: FaultConfig | None, expert_noise: float,
                 split: str, seed: int):
        self.lock = threading.RLock()
        self.default_task = task
        self.split = split
        self.image_size = int(image_size)
        self.faults = faults or FaultConfig()
        self.expert_noise = float(expert_noise)
        self._seeds = np.random.default_rng([int(seed), 0x5EED])

    def _load_episode(self, seed: int, task: str, split: str) -> None:
        """Set ``self.task`` and the scene to the episode of ``seed``."""
        raise NotImplementedError

    def new_episode(self, seed: int | None = None, task: str | None = None, split: str | None = None) -> str:
        """Load the task and layout of ``seed`` (else the robot's own seed sequence) with the hand
        at its start pose, and return the instruction. An arm error persists."""
        with self.lock:
            if seed is None:
                seed = int(self._seeds.integers(2**31 - 1))
            self._load_episode(int(seed), task or self.default_task, split or self.split)
            self.seed = int(seed)
            self.fault_rng = np.random.default_rng([self.seed, 0xFA17])
            self.noise_rng = np.random.default_rng([self.seed, 0xE4])
            self.arm.n_moves = 0
            for cam in self.cameras.values():
                cam.reseed(self.seed)
            return self.task.instruction

    def new_episode_for(self, instruction: str, seed: int) -> str:
        """An episode of the task that ``instruction`` (typed by the operator) names, with that exact
        instruction; ValueError, saying what the simulator knows, when it has no such task."""
        want = normalize_instruction(instruction)
        task = self.task_for_instruction(want)
        if task is not None:
            with self.lock:
                for k in range(400):  # the scene of a seed whose task matches (colour, direction, ...)
                    self.new_episode(seed=seed + 7919 * k, task=task, split="all")
                    if self.instruction_matches(want):
                        self.task = dataclasses.replace(self.task, instruction=instruction.strip())
                        return self.task.instruction
        raise ValueError(f"the {type(self).__name__} has no task for the instruction {instruction!r}; "
                         f"it knows e.g. {self.example_instructions()}")

    def task_for_instruction(self, normalized: str) -> str | None:
        """The task name whose episodes can have this (normalized) instruction, or None."""
        return None

    def instruction_matches(self, normalized: str) -> bool:
        """The loaded episode's task is the one the instruction names (its wording aside)."""
        return normalize_instruction(self.task.instruction) == normalized

    def example_instructions(self) -> list[str]:
        return []

    @property
    def instruction(self) -> str:
        return self.task.instruction

    @property
    def max_steps(self) -> int:
        return self.task.max_steps

    def expert_action(self, noise: float | None = None) -> np.ndarray:
        """The scripted expert's next action [7], with ``noise`` (default: the robot's
        ``expert_noise``) drawn from the episode's noise generator."""
        return self.expert_action_pair(noise)[1]

    def expert_action_pair(self, noise: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(clean, noisy) expert actions [7]: what the expert means, what it executes."""
        raise NotImplementedError
