"""N mock scenes in one process, stepped with numpy over the batch: for algorithm benchmarks and for
measuring success rates fast. The physics mirrors ``sim.Scene`` step by step (tests check that
both agree on the same seeds); layouts, success predicates and the expert are the same code.

    vec = VecScene(256, seeds=range(256), task="push")
    while not vec.done.all():
        vec.step(vec.expert_actions(noise=0.1))
    print(vec.succeeded.mean())
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from sim.mock.expert import add_noise, expert_actions_batch
from sim.mock.sim import (
    BLOCK_HEIGHT,
    BLOCK_SIZE,
    GRASP_HEIGHT,
    GRASP_RADIUS,
    GRIPPER_THRESHOLD,
    HELD_DROP,
    HOME_POSITION,
    HOME_RPY,
    MAX_ROTATION,
    MAX_TRANSLATION,
    N_BLOCKS,
    PUSH_RADIUS,
    RPY_MAX,
    RPY_MIN,
    TABLE_MAX,
    TABLE_MIN,
    WORKSPACE_MAX,
    WORKSPACE_MIN,
    SceneState,
    render,
    rotate_rpy,
)
from sim.mock.tasks import FAMILY_ID, MAX_STEPS, TaskSpec, sample_episode, success_batch

_PAIRS = [(i, j) for i in range(N_BLOCKS) for j in range(i + 1, N_BLOCKS)]


class VecScene:
    def __init__(self, n: int, image_size: int = 96, seeds: Iterable[int] | None = None, task: str = "reach",
                 split: str = "train"):
        self.n = int(n)
        self.image_size = int(image_size)
        self.tasks: list[TaskSpec] = []
        self.reset(range(self.n) if seeds is None else seeds, task, split)

    # ------------------------------------------------------------ episodes
    def reset(self, seeds: Iterable[int], task: str = "reach", split: str = "train") -> list[str]:
        """Start one episode per scene (same layouts as ``sample_episode``); returns instructions."""
        seeds = [int(s) for s in seeds]
        if len(seeds) != self.n:
            raise ValueError(f"need {self.n} seeds, got {len(seeds)}")
        episodes = [sample_episode(s, task, split) for s in seeds]
        self.seeds = seeds
        self.tasks = [e.task for e in episodes]
        n = self.n
        self.ee = np.tile(HOME_POSITION, (n, 1))
        self.rpy = np.tile(HOME_RPY, (n, 1))
        self.gripper_open = np.ones(n, dtype=bool)
        self.held = np.full(n, -1)
        self.blocks = np.stack([e.state.blocks for e in episodes]).astype(np.float64)
        self.present = np.stack([e.state.present for e in episodes])
        self.bowl = np.stack([e.state.bowl for e in episodes])
        self.family = np.array([FAMILY_ID[t.family] for t in self.tasks])
        self.target = np.array([t.target for t in self.tasks])
        self.direction = np.stack([t.direction_vector for t in self.tasks])
        self.start_xy = np.stack([e.start_xy for e in episodes])
        self.max_steps = np.array([MAX_STEPS[t.family] for t in self.tasks])
        self.steps = np.zeros(n, dtype=int)
        self.succeeded = np.zeros(n, dtype=bool)
        self.noise_rngs = [np.random.default_rng([s, 0xE4]) for s in seeds]  # as MockRobot's
        return [t.instruction for t in self.tasks]

    @property
    def done(self) -> np.ndarray:
        """Succeeded or out of steps; done scenes are not stepped any more."""
        return self.succeeded | (self.steps >= self.max_steps)

    def success(self) -> np.ndarray:
        return success_batch(self.family, self.target, self.direction, self.start_xy, self.ee, self.held,
                             self.blocks, self.bowl)

    def states(self) -> np.ndarray:
        """[N, 7] float32: x, y, z, roll, pitch, yaw, gripper (ArmState.vector())."""
        return np.column_stack([self.ee, self.rpy, self.gripper_open.astype(np.float64)]).astype(np.float32)

    def scene_state(self, i: int) -> SceneState:
        return SceneState(self.ee[i].copy(), self.rpy[i].copy(), bool(self.gripper_open[i]), int(self.held[i]),
                          self.blocks[i].copy(), self.present[i].copy(), self.bowl[i].copy())

    def render(self, size: int | None = None, camera: str = "front") -> np.ndarray:
        size = size or self.image_size
        out = np.empty((self.n, size, size, 3), dtype=np.uint8)
        for i in range(self.n):
            out[i] = render(self.scene_state(i), size, camera)
        return out

    def expert_actions(self, noise: float = 0.0) -> np.ndarray:
        """[N, 7] expert actions; noise draws from each scene's own generator (as MockRobot does)."""
        a = expert_actions_batch(self.family, self.target, self.direction, self.ee, self.gripper_open,
                                 self.held, self.blocks, self.bowl)
        return np.stack([add_noise(a[i], self.noise_rngs[i], noise) for i in range(self.n)])

    # ------------------------------------------------------------ physics
    def step(self, actions: np.ndarray, scale: float = 1.0) -> np.ndarray:
        """Apply one action per scene that is not done, then update ``succeeded``. Returns the
        mask of scenes whose action was accepted (finite and not done)."""
        a = np.asarray(actions, dtype=np.float64)
        if a.shape != (self.n, 7):
            raise ValueError(f"actions must be [{self.n}, 7], got {a.shape}")
        active = ~self.done & np.all(np.isfinite(a), axis=1)
        was_done = self.done
        a = np.where(active[:, None], a, 0.0)
        d = a[:, :3] * scale
        nd = np.linalg.norm(d, axis=1, keepdims=True)
        d = np.where(nd > MAX_TRANSLATION, d * (MAX_TRANSLATION / np.maximum(nd, 1e-300)), d)
        r = a[:, 3:6] * scale
        nr = np.linalg.norm(r, axis=1, keepdims=True)
        r = np.where(nr > MAX_ROTATION, r * (MAX_ROTATION / np.maximum(nr, 1e-300)), r)
        want_open = a[:, 6] >= GRIPPER_THRESHOLD

        new = np.clip(self.ee + d, WORKSPACE_MIN, WORKSPACE_MAX)
        self._move_ee(np.where(active[:, None], new, self.ee), active)
        turned = np.array([rotate_rpy(self.rpy[i], r[i]) if active[i] and np.any(r[i]) else self.rpy[i]
                           for i in range(len(self.rpy))])
        self.rpy = np.where(active[:, None], np.clip(turned, RPY_MIN, RPY_MAX), self.rpy)
        opening = active & want_open & ~self.gripper_open
        closing = active & ~want_open & self.gripper_open
        self.gripper_open = (self.gripper_open | opening) & ~closing
        self._release(opening & (self.held >= 0))
        self._grasp(closing)
        self.steps += (~was_done).astype(int)
        self.succeeded |= self.success() & ~was_done
        return active

    def _move_ee(self, new: np.ndarray, active: np.ndarray) -> None:
        old = self.ee
        rows = np.arange(self.n)
        holding = self.held >= 0
        hold_rows = rows[active & holding]
        if len(hold_rows):
            self.blocks[hold_rows, self.held[hold_rows]] = np.column_stack(
                [new[hold_rows, 0], new[hold_rows, 1], np.maximum(0.0, new[hold_rows, 2] - HELD_DROP)])
        free = active & ~holding
        is_open = self.gripper_open[:, None]
        bxy = self.blocks[:, :, :2]
        dist_new = np.hypot(new[:, None, 0] - bxy[..., 0], new[:, None, 1] - bxy[..., 1])
        # coming down into the block layer: straddle (open, centred) or land on the block's top
        descending = free & (new[:, 2] < BLOCK_HEIGHT) & (old[:, 2] >= BLOCK_HEIGHT)
        blocking = self.present & (dist_new < PUSH_RADIUS) & ~(is_open & (dist_new <= GRASP_RADIUS))
        land = descending & blocking.any(axis=1)
        new = new.copy()
        new[land, 2] = BLOCK_HEIGHT
        low = free & (new[:, 2] < BLOCK_HEIGHT)
        mask = low[:, None] & self.present
        dist_old = np.hypot(old[:, None, 0] - bxy[..., 0], old[:, None, 1] - bxy[..., 1])
        was_between = mask & is_open & (old[:, None, 2] < BLOCK_HEIGHT) & (dist_old <= GRASP_RADIUS)
        entered = is_open & (old[:, None, 2] >= BLOCK_HEIGHT) & (dist_new <= GRASP_RADIUS)
        pushed = mask & ~was_between & ~entered & (dist_new < PUSH_RADIUS)
        step_xy = new[:, :2] - old[:, :2]
        dragged_xy = bxy + step_xy[:, None, :]
        dx, dy = bxy[..., 0] - new[:, None, 0], bxy[..., 1] - new[:, None, 1]
        dist = np.hypot(dx, dy)
        degenerate = dist < 1e-9
        m = np.hypot(step_xy[:, 0], step_xy[:, 1])
        mx = np.where(m > 1e-9, step_xy[:, 0] / np.maximum(m, 1e-300), 1.0)
        my = np.where(m > 1e-9, step_xy[:, 1] / np.maximum(m, 1e-300), 0.0)
        dx = np.where(degenerate, mx[:, None], dx)
        dy = np.where(degenerate, my[:, None], dy)
        dist = np.where(degenerate, 1.0, dist)
        pushed_xy = np.stack([new[:, None, 0] + dx / dist * PUSH_RADIUS,
                              new[:, None, 1] + dy / dist * PUSH_RADIUS], axis=-1)
        bxy = np.where(was_between[..., None], dragged_xy, np.where(pushed[..., None], pushed_xy, bxy))
        self.blocks[:, :, :2] = bxy
        self._settle((was_between | pushed).any(axis=1))
        self.ee = np.where(active[:, None], new, self.ee)

    def _settle(self, scenes: np.ndarray) -> None:
        if not scenes.any():
            return
        b = self.blocks
        for i, j in _PAIRS:
            ok = (scenes & self.present[:, i] & self.present[:, j] & (self.held != i) & (self.held != j)
                  & (b[:, i, 2] <= 0) & (b[:, j, 2] <= 0))
            dx, dy = b[:, j, 0] - b[:, i, 0], b[:, j, 1] - b[:, i, 1]
            dist = np.hypot(dx, dy)
            ok &= dist < BLOCK_SIZE
            if not ok.any():
                continue
            deg = dist < 1e-9
            dx, dy, dist = np.where(deg, 1.0, dx), np.where(deg, 0.0, dy), np.where(deg, 1.0, dist)
            push = (BLOCK_SIZE - dist) / 2
            ux, uy = np.where(ok, dx / dist * push, 0.0), np.where(ok, dy / dist * push, 0.0)
            b[:, i, 0] -= ux
            b[:, i, 1] -= uy
            b[:, j, 0] += ux
            b[:, j, 1] += uy
        keep = scenes[:, None] & self.present & (np.arange(N_BLOCKS)[None] != self.held[:, None])
        clipped = np.clip(b[:, :, :2], TABLE_MIN, TABLE_MAX)
        b[:, :, :2] = np.where(keep[..., None], clipped, b[:, :, :2])

    def _release(self, scenes: np.ndarray) -> None:
        rows = np.flatnonzero(scenes)
        if not len(rows):
            return
        h = self.held[rows]
        self.blocks[rows, h, 2] = 0.0
        self.blocks[rows, h, :2] = np.clip(self.blocks[rows, h, :2], TABLE_MIN, TABLE_MAX)
        self.held[rows] = -1
        self._settle(scenes)

    def _grasp(self, closing: np.ndarray) -> None:
        can = closing & (self.held < 0) & (self.ee[:, 2] <= GRASP_HEIGHT)
        if not can.any():
            return
        bxy = self.blocks[:, :, :2]
        dist = np.hypot(self.ee[:, None, 0] - bxy[..., 0], self.ee[:, None, 1] - bxy[..., 1])
        ok = can[:, None] & self.present & (self.blocks[:, :, 2] <= 0) & (dist <= GRASP_RADIUS)
        dist = np.where(ok, dist, np.inf)
        best = N_BLOCKS - 1 - np.argmin(dist[:, ::-1], axis=1)  # ties: the last index, as Scene does
        rows = np.flatnonzero(ok.any(axis=1))
        self.held[rows] = best[rows]
        self.blocks[rows, best[rows]] = np.column_stack(
            [self.ee[rows, 0], self.ee[rows, 1], np.maximum(0.0, self.ee[rows, 2] - HELD_DROP)])


def run_policy(task: str, seeds: Iterable[int], policy, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    """Run ``policy(vec) -> actions [N, 7]`` on one episode per seed until every scene is done;
    returns (success [N] bool, steps [N] int)."""
    seeds = list(seeds)
    vec = VecScene(len(seeds), seeds=seeds, task=task, split=split)
    while not vec.done.all():
        vec.step(policy(vec))
    return vec.succeeded.copy(), vec.steps.copy()


def random_policy(seed: int = 0):
    """Uniform random actions within the arm's per-step limits, gripper uniform in [0, 1]."""
    rng = np.random.default_rng(seed)
    low = np.array([-MAX_TRANSLATION] * 3 + [-MAX_ROTATION] * 3 + [0.0])
    high = np.array([MAX_TRANSLATION] * 3 + [MAX_ROTATION] * 3 + [1.0])

    def act(vec: VecScene) -> np.ndarray:
        return rng.uniform(low, high, (vec.n, 7))

    return act


def expert_policy(noise: float = 0.1):
    def act(vec: VecScene) -> np.ndarray:
        return vec.expert_actions(noise)

    return act
