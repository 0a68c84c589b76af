"""Task families with language instructions, randomized layouts, success predicates and the
held-out split used to measure generalization to unseen (task, colour) combinations.

Families (max episode length in steps):
* ``reach``: "reach the red block" -- success when the fingertips are within 3 cm (xy) of the
  block's centre and at most 7 cm above the table (30 steps).
* ``push``: "push the blue block to the left" -- success when the block has moved >= 6 cm in that
  direction (left = +y, right = -y, forward = +x away from the robot, backward = -x) (40 steps).
* ``pick_place``: "put the green block in the bowl" -- success when the block rests on the table
  with its centre within the bowl's radius (60 steps).

Task name ``reach_slots`` (not a family of its own): the ``reach`` family (same instructions,
expert, success and max steps) on a structured layout -- every colour has a home slot on the
table and its block lies within +-SLOT_JITTER (per axis) of it. Reaching then means mapping the
colour word to its slot (what behaviour cloning from a few demos learns) and correcting for the
jitter from the image (what RL/SFT can add). `vlaloop demo` uses it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from sim.mock.sim import (
    BOWL_RADIUS,
    COLORS,
    N_BLOCKS,
    SceneState,
)

FAMILIES = ("reach", "push", "pick_place")
# task names that are a family on another layout: name -> family
LAYOUT_TASKS = {"reach_slots": "reach"}
TASK_NAMES = (*FAMILIES, "mixed", *LAYOUT_TASKS)
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
# Phrasings kept out of demonstrations and training (one template per family): evaluation gives
# them to a trained policy to measure whether it follows an instruction worded differently from
# what it was drilled on. sample_task draws only the other templates unless asked for these.
HELD_OUT_TEMPLATES = {"reach": ("touch the {c} block",), "push": ("slide the {c} block {d}",),
                      "pick_place": ("place the {c} block into the bowl",)}
PHRASINGS = ("train", "held_out", "all")
DIRECTION_WORDS = {"left": ("to the left", "left"), "right": ("to the right", "right"),
                   "forward": ("forward", "away from the robot"),
                   "backward": ("backward", "toward the robot")}

# (family, colour) combinations never used for demonstrations or training (the held-out results measure how
# well a policy does on them).
HELD_OUT = frozenset({("reach", "yellow"), ("push", "green"), ("pick_place", "blue")})
# (family, colour) combinations of the train split that the results bench (bench/learning.py) keeps
# out of the demonstrations and trains only online (the paper's "new tasks learnt by RL"); the
# split "demo" is train minus these, the split "rl" is exactly these. Everything else uses "train".
RL_ONLY = frozenset({("reach", "blue"), ("push", "red"), ("pick_place", "green")})
SPLITS = ("train", "held_out", "all", "demo", "rl")


def is_held_out(family: str, color: str) -> bool:
    return (family, color) in HELD_OUT


def split_colors(family: str, split: str = "train") -> tuple[str, ...]:
    """The colours a family may use in a split: ``train`` (demos, training), ``held_out`` (only
    the unseen combinations), ``all``, or the two parts of ``train`` the results bench separates:
    ``demo`` (demonstrated) and ``rl`` (trained online only)."""
    if family not in FAMILIES:
        raise ValueError(f"unknown task family {family!r} (one of {FAMILIES})")
    if split == "all":
        return COLORS
    if split == "train":
        return tuple(c for c in COLORS if not is_held_out(family, c))
    if split == "held_out":
        return tuple(c for c in COLORS if is_held_out(family, c))
    if split == "demo":
        return tuple(c for c in COLORS if not is_held_out(family, c) and (family, c) not in RL_ONLY)
    if split == "rl":
        return tuple(c for c in COLORS if (family, c) in RL_ONLY)
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


def phrasing_templates(family: str, phrasing: str = "train") -> tuple[str, ...]:
    """A family's instruction templates in a phrasing split: ``train`` (demos and training),
    ``held_out`` (evaluation only) or ``all``."""
    templates, held = TEMPLATES[family], HELD_OUT_TEMPLATES[family]
    if phrasing == "all":
        return templates
    if phrasing == "train":
        return tuple(t for t in templates if t not in held)
    if phrasing == "held_out":
        return held
    raise ValueError(f"unknown phrasing {phrasing!r} (one of {PHRASINGS})")


def _template(rng: np.random.Generator, family: str, phrasing: str) -> str:
    # One draw over all templates whatever the phrasing, so a seed's layout does not depend on it.
    index = int(rng.integers(len(TEMPLATES[family])))
    chosen = TEMPLATES[family][index]
    allowed = phrasing_templates(family, phrasing)
    return chosen if chosen in allowed else allowed[index % len(allowed)]


def phrase(task: TaskSpec, phrasing: str = "held_out", index: int | None = None) -> str:
    """The instruction of `task` (same family, colour, direction) worded in a phrasing split;
    `index` picks the template (default: by the task's seed)."""
    templates = phrasing_templates(task.family, phrasing)
    template = templates[(task.seed if index is None else index) % len(templates)]
    words = DIRECTION_WORDS[task.direction][0] if task.direction else ""
    return template.format(c=task.color, d=words)


def other_task_instruction(task: TaskSpec) -> str:
    """The (train-phrased) instruction of another task of the same family: another colour, and for
    a push the same direction. A policy that reads the words should fail the episode's own task."""
    others = [c for c in COLORS if c != task.color]
    other = TaskSpec(task.family, others[task.seed % len(others)], task.direction, "", task.seed)
    return phrase(other, "train")


def sample_task(rng: np.random.Generator, family: str, split: str = "train", seed: int = 0,
                phrasing: str = "train") -> TaskSpec:
    family = LAYOUT_TASKS.get(family, family)
    if family == "mixed":
        family = FAMILIES[int(rng.integers(len(FAMILIES)))]
    colors = split_colors(family, split)
    color = colors[int(rng.integers(len(colors)))]
    template = _template(rng, family, phrasing)
    direction = None
    words = ""
    if family == "push":
        direction = tuple(DIRECTIONS)[int(rng.integers(len(DIRECTIONS)))]
        options = DIRECTION_WORDS[direction]
        words = options[int(rng.integers(len(options)))]
    return TaskSpec(family, color, direction, template.format(c=color, d=words), seed)


def _segment_distance(p: tuple[float, float], a: tuple[float, float], b: tuple[float, float]) -> float:
    abx, aby = b[0] - a[0], b[1] - a[1]
    t = ((p[0] - a[0]) * abx + (p[1] - a[1]) * aby) / max(abx * abx + aby * aby, 1e-12)
    t = min(1.0, max(0.0, t))
    return math.hypot(p[0] - a[0] - t * abx, p[1] - a[1] - t * aby)


BLOCK_X, BLOCK_Y = (0.38, 0.62), (-0.18, 0.18)  # where blocks start
BOWL_X, BOWL_Y = (0.37, 0.63), (-0.18, 0.18)
MIN_BLOCK_GAP = 0.09  # between block centres at the start
MIN_BOWL_GAP = BOWL_RADIUS + 0.06  # bowl centre to block centres
PUSH_LANE = 0.08  # other blocks keep this far from a push's approach and path
# reach_slots: a home slot per colour (>= 20 cm apart, so jittered blocks stay >= 12 cm apart)
COLOR_SLOTS = {"red": (0.40, 0.12), "green": (0.40, -0.12), "blue": (0.60, 0.12), "yellow": (0.60, -0.12)}
SLOT_JITTER = 0.04


def _place(rng: np.random.Generator, task: TaskSpec, order: list[int]) -> tuple[dict, tuple] | None:
    """Place the blocks one after the other (target first), then the bowl; None if stuck."""
    pos: dict[int, tuple[float, float]] = {}
    lane = None
    for i in order:
        for _ in range(200):
            p = (float(rng.uniform(*BLOCK_X)), float(rng.uniform(*BLOCK_Y)))
            if any(math.hypot(p[0] - q[0], p[1] - q[1]) < MIN_BLOCK_GAP for q in pos.values()):
                continue
            if lane is not None and _segment_distance(p, *lane) < PUSH_LANE:
                continue
            pos[i] = p
            break
        else:
            return None
        if i == task.target and task.family == "push":  # keep the approach and the path free
            dx, dy = DIRECTIONS[task.direction]
            lane = ((p[0] - 0.09 * dx, p[1] - 0.09 * dy), (p[0] + 0.12 * dx, p[1] + 0.12 * dy))
    for _ in range(200):
        bowl = (float(rng.uniform(*BOWL_X)), float(rng.uniform(*BOWL_Y)))
        if all(math.hypot(bowl[0] - q[0], bowl[1] - q[1]) >= MIN_BOWL_GAP for q in pos.values()):
            return pos, bowl
    return None


def _place_slots(rng: np.random.Generator, order: list[int]) -> tuple[dict, tuple]:
    """reach_slots: each block near its colour's slot; the bowl at the far edge, out of the way."""
    pos = {i: (COLOR_SLOTS[COLORS[i]][0] + float(rng.uniform(-SLOT_JITTER, SLOT_JITTER)),
               COLOR_SLOTS[COLORS[i]][1] + float(rng.uniform(-SLOT_JITTER, SLOT_JITTER))) for i in order}
    return pos, (0.50, 0.0)


def parse_instruction(normalized: str) -> tuple[str, str, str | None] | None:
    """(family, colour, direction) of an instruction one of the mock's templates makes, else None.
    ``normalized``: lower case, single spaces, no final full stop (sim.faults.normalize_instruction)."""
    for family, templates in TEMPLATES.items():
        directions = DIRECTION_WORDS.items() if family == "push" else [(None, ("",))]
        for direction, words in directions:
            for color in COLORS:
                for template in templates:
                    for w in words:
                        if " ".join(template.format(c=color, d=w).split()) == normalized:
                            return family, color, direction
    return None


def sample_episode(seed: int, family: str = "reach", split: str = "train", phrasing: str = "train") -> Episode:
    """Same seed, family and split -> the same task and layout (whatever the phrasing)."""
    if family not in TASK_NAMES:
        raise ValueError(f"unknown task {family!r} (one of {TASK_NAMES})")
    rng = np.random.default_rng([int(seed), 0x51A7])
    task = sample_task(rng, family, split, int(seed), phrasing)
    n = int(rng.integers(3, N_BLOCKS + 1))
    others = [i for i in range(N_BLOCKS) if i != task.target]
    rng.shuffle(others)
    order = [task.target, *others[:n - 1]]
    if family in LAYOUT_TASKS:
        placed = _place_slots(rng, order)
    else:
        for _ in range(1000):
            placed = _place(rng, task, order)
            if placed is not None:
                break
        else:  # pragma: no cover - the constraints leave plenty of room
            raise RuntimeError(f"could not sample a layout for seed {seed}")
    pos, bowl = placed
    present = np.zeros(N_BLOCKS, dtype=bool)
    present[order] = True
    # absent blocks sit far off the table; they are never drawn and never touched
    blocks = np.array([[*pos[i], 0.0] if i in pos else [10.0, 10.0, 0.0] for i in range(N_BLOCKS)])
    state = SceneState(blocks=blocks, present=present, bowl=np.array(bowl))
    return Episode(task, state)


def layout_ok(task: TaskSpec, state: SceneState) -> bool:
    """The start-layout constraints (for tests): gaps between blocks and bowl, a free push lane."""
    idx = [int(i) for i in np.flatnonzero(state.present)]
    pts = {i: (float(state.blocks[i, 0]), float(state.blocks[i, 1])) for i in idx}
    for k, i in enumerate(idx):
        for j in idx[k + 1:]:
            if math.hypot(pts[i][0] - pts[j][0], pts[i][1] - pts[j][1]) < MIN_BLOCK_GAP - 1e-12:
                return False
        if math.hypot(pts[i][0] - state.bowl[0], pts[i][1] - state.bowl[1]) < MIN_BOWL_GAP - 1e-12:
            return False
    if task.family == "push":
        t, (dx, dy) = task.target, DIRECTIONS[task.direction]
        p = pts[t]
        lane = ((p[0] - 0.09 * dx, p[1] - 0.09 * dy), (p[0] + 0.12 * dx, p[1] + 0.12 * dy))
        if any(_segment_distance(pts[j], *lane) < PUSH_LANE - 1e-12 for j in idx if j != t):
            return False
    return True


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
