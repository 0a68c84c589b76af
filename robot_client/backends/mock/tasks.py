"""Task families with language instructions, randomized layouts, success predicates and the
held-out split used to measure generalization to unseen (task, colour) combinations.

Families (max episode length in steps):
* ``reach``: "reach the red block" -- success when the fingertips are within 3 cm (xy) of the
  block's centre and at most 7 cm above the table (30 steps).
* ``push``: "push the blue block to the left" -- success when the block has moved >= 6 cm in that
  direction (left = +y, right = -y, forward = +x away from the robot, backward = -x) (40 steps).
* ``pick_place``: "put the green block in the bowl" -- success when the block rests on the table
  with its centre within the bowl's radius (60 steps).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robot_client.backends.mock.sim import (
    BOWL_RADIUS,
    COLORS,
    N_BLOCKS,
    SceneState,
)

FAMILIES = ("reach", "push", "pick_place")
TASK_NAMES = (*FAMILIES, "mixed")
MAX_STEPS = {"reach": 30, "push": 40, "pick_place": 60}
DIRECTIONS = {"left": (0.0, 1.0), "right": (0.0, -1.0), "forward": (1.0, 0.0), "backward": (-1.0, 0.0)}

REACH_XY_TOL = 0.03
REACH_Z_MAX = 0.07
PUSH_DISTANCE = 0.06

TEMPLATES = {
    "reach": ("reach the {c} block", "move to the {c} block", "go to the {c} block",
              "touch the {c} block", "move the gripper to the {c} block"),
    "push": ("push the {c} block {d}", "slide the {c} block {d}", "push the {c} block {d} a little"),
    "pick_place": ("pick up the {c} block and put it in the bowl", "put the {c} block in the bowl",
                   "place the {c} block into the bowl", "pick the {c} block and place it in the bowl"),
}
DIRECTION_WORDS = {"left": ("to the left", "left"), "right": ("to the right", "right"),
                   "forward": ("forward", "away from the robot"),
                   "backward": ("backward", "toward the robot")}

# (family, colour) combinations never used for demonstrations or training (issue 10 measures how
# well a policy does on them).
HELD_OUT = frozenset({("reach", "yellow"), ("push", "green"), ("pick_place", "blue")})
SPLITS = ("train", "held_out", "all")


def is_held_out(family: str, color: str) -> bool:
    return (family, color) in HELD_OUT


def split_colors(family: str, split: str = "train") -> tuple[str, ...]:
    """The colours a family may use in a split: ``train`` (demos, training), ``held_out`` (only
    the unseen combinations) or ``all``."""
    if family not in FAMILIES:
        raise ValueError(f"unknown task family {family!r} (one of {FAMILIES})")
    if split == "all":
        return COLORS
    if split == "train":
        return tuple(c for c in COLORS if not is_held_out(family, c))
    if split == "held_out":
        return tuple(c for c in COLORS if is_held_out(family, c))
    raise ValueError(f"unknown split {split!r} (one of {SPLITS})")


@dataclass(frozen=True)
class TaskSpec:
    family: str
    color: str
    direction: str | None
    instruction: str
    seed: int

    @property
    def target(self) -> int:
        return COLORS.index(self.color)

    @property
    def max_steps(self) -> int:
        return MAX_STEPS[self.family]

    @property
    def held_out(self) -> bool:
        return is_held_out(self.family, self.color)

    @property
    def direction_vector(self) -> np.ndarray:
        return np.array(DIRECTIONS[self.direction] if self.direction else (0.0, 0.0))

    def to_dict(self) -> dict:
        return {"family": self.family, "color": self.color, "direction": self.direction,
                "instruction": self.instruction, "seed": self.seed, "held_out": self.held_out}


@dataclass
class Episode:
    """A sampled task and its start layout; ``start_xy`` is the target block's start position."""

    task: TaskSpec
    state: SceneState

    @property
    def start_xy(self) -> np.ndarray:
        return self.state.blocks[self.task.target, :2].copy()


def sample_task(rng: np.random.Generator, family: str, split: str = "train", seed: int = 0) -> TaskSpec:
    if family == "mixed":
        family = FAMILIES[int(rng.integers(len(FAMILIES)))]
    colors = split_colors(family, split)
    color = colors[int(rng.integers(len(colors)))]
    templates = TEMPLATES[family]
    template = templates[int(rng.integers(len(templates)))]
    direction = None
    words = ""
    if family == "push":
        direction = tuple(DIRECTIONS)[int(rng.integers(len(DIRECTIONS)))]
        options = DIRECTION_WORDS[direction]
        words = options[int(rng.integers(len(options)))]
    return TaskSpec(family, color, direction, template.format(c=color, d=words), seed)


def _segment_distance(p: np.ndarray, a: np.ndarray, b: np.ndarray) -> float:
    ab = b - a
    t = float(np.clip(np.dot(p - a, ab) / max(np.dot(ab, ab), 1e-12), 0.0, 1.0))
    return float(np.linalg.norm(p - (a + t * ab)))


def _layout_ok(task: TaskSpec, blocks: np.ndarray, present: np.ndarray, bowl: np.ndarray) -> bool:
    idx = np.flatnonzero(present)
    for k, i in enumerate(idx):
        for j in idx[k + 1:]:
            if np.linalg.norm(blocks[i] - blocks[j]) < 0.09:
                return False
        if np.linalg.norm(blocks[i] - bowl) < BOWL_RADIUS + 0.06:
            return False
    if task.family == "push":  # keep the approach and the push path free of other blocks
        t = task.target
        d = task.direction_vector
        a, b = blocks[t] - 0.09 * d, blocks[t] + 0.12 * d
        for j in idx:
            if j != t and _segment_distance(blocks[j], a, b) < 0.08:
                return False
    return True


def sample_episode(seed: int, family: str = "reach", split: str = "train") -> Episode:
    """Same seed, family and split -> the same task and layout."""
    if family not in TASK_NAMES:
        raise ValueError(f"unknown task {family!r} (one of {TASK_NAMES})")
    rng = np.random.default_rng([int(seed), 0x51A7])
    task = sample_task(rng, family, split, int(seed))
    n = int(rng.integers(3, N_BLOCKS + 1))
    others = [i for i in range(N_BLOCKS) if i != task.target]
    rng.shuffle(others)
    present = np.zeros(N_BLOCKS, dtype=bool)
    present[[task.target, *others[:n - 1]]] = True
    for _ in range(10_000):
        blocks = np.column_stack([rng.uniform(0.38, 0.62, N_BLOCKS), rng.uniform(-0.18, 0.18, N_BLOCKS)])
        bowl = np.array([rng.uniform(0.37, 0.63), rng.uniform(-0.18, 0.18)])
        if _layout_ok(task, blocks, present, bowl):
            break
    else:  # pragma: no cover - the constraints leave plenty of room
        raise RuntimeError(f"could not sample a layout for seed {seed}")
    state = SceneState(blocks=np.column_stack([blocks, np.zeros(N_BLOCKS)]), present=present, bowl=bowl)
    # absent blocks sit far off the table; they are never drawn and never touched
    state.blocks[~present] = (10.0, 10.0, 0.0)
    return Episode(task, state)


# ---------------------------------------------------------------- success (batched)
FAMILY_ID = {f: i for i, f in enumerate(FAMILIES)}


def success_batch(family: np.ndarray, target: np.ndarray, direction: np.ndarray, start_xy: np.ndarray,
                  ee: np.ndarray, held: np.ndarray, blocks: np.ndarray, bowl: np.ndarray) -> np.ndarray:
    """Success predicates for N scenes at once. family [N] (FAMILY_ID), target [N] block index,
    direction [N, 2], start_xy [N, 2], ee [N, 3], held [N], blocks [N, B, 3], bowl [N, 2]."""
    n = len(family)
    b = blocks[np.arange(n), target]  # [N, 3]
    reach = (np.hypot(ee[:, 0] - b[:, 0], ee[:, 1] - b[:, 1]) <= REACH_XY_TOL) & (ee[:, 2] <= REACH_Z_MAX)
    moved = np.sum((b[:, :2] - start_xy) * direction, axis=1)
    push = (moved >= PUSH_DISTANCE) & (held != target)
    in_bowl = np.hypot(b[:, 0] - bowl[:, 0], b[:, 1] - bowl[:, 1]) <= BOWL_RADIUS
    place = in_bowl & (held != target) & (b[:, 2] <= 0.0)
    return np.where(family == 0, reach, np.where(family == 1, push, place))


def success(task: TaskSpec, state: SceneState, start_xy: np.ndarray) -> bool:
    return bool(success_batch(np.array([FAMILY_ID[task.family]]), np.array([task.target]),
                              task.direction_vector[None], np.asarray(start_xy)[None], state.ee[None],
                              np.array([state.held]), state.blocks[None], state.bowl[None])[0])
