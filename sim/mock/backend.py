"""The mock robot behind the `Arm` / `Camera` interfaces, with task episodes and fault injection.

``MockRobot`` bundles one simulated scene, its arm (``.arm``), its cameras (``.cameras``), the
current task (``.new_episode()``, ``.instruction``, ``.success()``, ``.max_steps``) and the
scripted expert (``.expert_action()``). Everything random (layout, expert noise, faults) is drawn
from generators seeded by the episode seed: the same seed gives the same frames and outcomes.
"""

from __future__ import annotations

import numpy as np

from sim.faults import FaultConfig, SimulatedArm, SimulatedCamera, SimulatedRobot
from sim.mock.expert import add_noise, expert_action
from sim.mock.sim import Scene, SceneState
from sim.mock.tasks import TASK_NAMES, TaskSpec, parse_instruction, sample_episode, success

__all__ = ["CAMERA_NAMES", "FaultConfig", "MockArm", "MockCamera", "MockRobot"]

CAMERA_NAMES = ("front", "wrist")


class MockArm(SimulatedArm):
    def _home(self) -> None:
        self._robot.scene.reset_arm()

    def _pose(self) -> tuple[np.ndarray, np.ndarray, float]:
        s = self._robot.scene.state
        return s.ee.copy(), s.rpy.copy(), 1.0 if s.gripper_open else 0.0

    def _apply(self, action: np.ndarray, slow_factor: float) -> bool:
        return self._robot.scene.apply_action(action, scale=1.0 / slow_factor)


class MockCamera(SimulatedCamera):
    NAMES = CAMERA_NAMES
    SIMULATOR = "mock"

    def _render(self) -> np.ndarray:
        return self._robot.scene.render(self._robot.image_size, self.name)


class MockRobot(SimulatedRobot):
    """One simulated robot: ``.arm``, ``.cameras``, the current task and its expert."""

    def __init__(self, task: str = "reach", image_size: int = 96, cameras: tuple[str, ...] = ("front",),
                 faults: FaultConfig | None = None, expert_noise: float = 0.0, split: str = "train",
                 seed: int = 0):
        if task not in TASK_NAMES:
            raise ValueError(f"unknown task {task!r} (one of {TASK_NAMES})")
        super().__init__(task, image_size, faults, expert_noise, split, seed)
        self.scene = Scene()
        self.arm = MockArm(self)
        self.cameras: dict[str, MockCamera] = {name: MockCamera(self, name) for name in cameras}
        self.new_episode()

    def _load_episode(self, seed: int, task: str, split: str) -> None:
        episode = sample_episode(seed, task, split)
        self.task: TaskSpec = episode.task
        self.scene.state = episode.state
        self.start_xy = episode.start_xy

    @property
    def task_name(self) -> str:
        return self.task.family

    def task_for_instruction(self, normalized: str) -> str | None:
        parsed = parse_instruction(normalized)
        return None if parsed is None else parsed[0]

    def instruction_matches(self, normalized: str) -> bool:
        t = self.task
        return parse_instruction(normalized) == (t.family, t.color, t.direction)

    def example_instructions(self) -> list[str]:
        return ["reach the red block", "push the blue block to the left", "put the green block in the bowl"]

    @property
    def state(self) -> SceneState:
        return self.scene.state

    def success(self) -> bool:
        with self.lock:
            return success(self.task, self.scene.state, self.start_xy)

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
