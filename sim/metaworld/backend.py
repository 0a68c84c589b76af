"""MetaWorld behind the robot client's ``Arm`` / ``Camera`` interfaces, with the mock's faults.

``MetaWorldRobot`` mirrors ``MockRobot``: ``.arm``, ``.cameras``, ``new_episode()``,
``.instruction``, ``.success()``, ``.max_steps``, ``expert_action_pair()``. Everything random
(layout, instruction paraphrase, expert noise, faults) is drawn from generators seeded by the
episode seed. Injected faults (``FaultConfig``, as the mock's): dropped and late frames, a slow
arm (translation scaled by 1/k), arm errors (a reflex until ``recover()``), a failed camera.
"""

from __future__ import annotations

import numpy as np

from sim.faults import FaultConfig, SimulatedArm, SimulatedCamera, SimulatedRobot, normalize_instruction
from sim.metaworld.actions import HOME_RPY
from sim.metaworld.env import CAMERA_NAMES, MetaWorldScene
from sim.metaworld.expert import add_noise
from sim.metaworld.tasks import LANGUAGE, TASK_NAMES, TaskSpec

__all__ = ["FaultConfig", "MetaWorldArm", "MetaWorldCamera", "MetaWorldRobot"]


class MetaWorldArm(SimulatedArm):
    def _home(self) -> None:
        """MetaWorld has no separate homing: the episode's reset put the hand at its start pose."""

    def _pose(self) -> tuple[np.ndarray, np.ndarray, float]:
        v = self._robot.scene.state_vector()
        return v[:3].astype(np.float64), HOME_RPY.copy(), float(v[6])

    def _apply(self, action: np.ndarray, slow_factor: float) -> bool:
        a = np.array(action, dtype=np.float64).reshape(-1)
        if a.shape != (7,):
            return False
        a[:6] /= slow_factor
        return self._robot.scene.step(a)


class MetaWorldCamera(SimulatedCamera):
    NAMES = CAMERA_NAMES
    SIMULATOR = "MetaWorld"

    def _render(self) -> np.ndarray:
        return self._robot.scene.render(self.name)


class MetaWorldRobot(SimulatedRobot):
    """One MetaWorld robot: ``.arm``, ``.cameras``, the current task and its scripted expert."""

    def __init__(self, task: str = "button-press-topdown", image_size: int = 96,
                 cameras: tuple[str, ...] = ("front",), faults: FaultConfig | None = None,
                 expert_noise: float = 0.0, split: str = "train", seed: int = 0):
        if task not in TASK_NAMES:
            raise ValueError(f"unknown MetaWorld task {task!r} (one of {TASK_NAMES})")
        super().__init__(task, image_size, faults, expert_noise, split, seed)
        self.scene = MetaWorldScene(self.image_size)
        self.arm = MetaWorldArm(self)
        self.cameras: dict[str, MetaWorldCamera] = {name: MetaWorldCamera(self, name) for name in cameras}
        self.new_episode()

    def _load_episode(self, seed: int, task: str, split: str) -> None:
        self.task: TaskSpec = self.scene.reset(task, seed, split)
        for cam in self.cameras.values():  # the reset scene: the last episode's frame is no repeat
            cam.forget_last_frame()

    @property
    def task_name(self) -> str:
        return self.task.name

    def task_for_instruction(self, normalized: str) -> str | None:
        for name, phrases in LANGUAGE.items():
            if normalized in (normalize_instruction(p) for p in phrases):
                return name
        return None

    def instruction_matches(self, normalized: str) -> bool:
        return self.task.name == self.task_for_instruction(normalized)

    def example_instructions(self) -> list[str]:
        return [phrases[0] for phrases in list(LANGUAGE.values())[:3]]

    def success(self) -> bool:
        with self.lock:
            return self.scene.success()

    def expert_action_pair(self, noise: float | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(clean, noisy) expert actions [7] (float32): what the expert means, what it executes."""
        with self.lock:
            clean = self.scene.expert_action()
            noisy = add_noise(clean, self.noise_rng, self.expert_noise if noise is None else noise)
            return clean.astype(np.float32), noisy

    def close(self) -> None:
        self.scene.close()
