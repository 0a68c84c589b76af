"""The MetaWorld tasks vlaloop uses: language (MetaWorld ships none), step limits, and the task
sets of the results bench.

Each task has an instruction and a few paraphrases; an episode's instruction is drawn from them by
the episode seed. Step limits are about twice the scripted expert's slowest episode seen with
noise 0.1 over 20 seeds (measured with ``sim.metaworld.report``), so a competent policy is never
cut short while a lost one does not run MetaWorld's 500 steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# task -> (instruction, paraphrases...)
LANGUAGE: dict[str, tuple[str, ...]] = {
    "reach": ("reach the red goal", "move the hand to the goal", "go to the target point"),
    "push": ("push the puck to the goal", "slide the puck to the target", "push the block to the green spot"),
    "pick-place": ("pick up the puck and place it at the goal", "put the puck on the target",
                   "pick the block and place it at the goal"),
    "door-open": ("open the door", "pull the door open", "swing the door open"),
    "drawer-open": ("open the drawer", "pull the drawer out", "pull the drawer open"),
    "drawer-close": ("close the drawer", "push the drawer shut", "push the drawer closed"),
    "button-press-topdown": ("press the button from the top", "push the button down",
                             "press down on the button"),
    "peg-insert-side": ("insert the peg into the hole", "put the peg in the hole from the side",
                        "slide the peg into the hole"),
    "window-open": ("open the window", "slide the window open", "push the window open"),
    "window-close": ("close the window", "slide the window shut", "push the window closed"),
    "door-close": ("close the door", "push the door shut", "swing the door closed"),
    "button-press": ("press the button on the wall", "push the button forward", "press the button"),
    "faucet-open": ("turn the faucet on", "open the faucet", "rotate the faucet handle open"),
    "faucet-close": ("turn the faucet off", "close the faucet", "rotate the faucet handle closed"),
    "handle-press": ("press the handle down", "push the handle down", "press down on the handle"),
    "plate-slide": ("slide the plate into the goal", "push the plate to the target",
                    "slide the plate forward"),
    "coffee-button": ("press the coffee machine button", "push the button on the coffee machine",
                      "start the coffee machine"),
    "reach-wall": ("reach the goal behind the wall", "move the hand over the wall to the goal",
                   "reach around the wall to the target"),
}
TASKS = tuple(LANGUAGE)
# The last phrasing of every task is kept out of demonstrations and training: evaluation gives it to
# a trained policy (does it follow a wording it was not drilled on?).
HELD_OUT_PHRASES = 1
PHRASINGS = ("train", "held_out", "all")


def phrases(name: str, phrasing: str = "train") -> tuple[str, ...]:
    """A task's instructions in a phrasing split: ``train``, ``held_out`` or ``all``."""
    every = LANGUAGE[name]
    if phrasing == "all":
        return every
    if phrasing == "train":
        return every[:-HELD_OUT_PHRASES]
    if phrasing == "held_out":
        return every[-HELD_OUT_PHRASES:]
    raise ValueError(f"unknown phrasing {phrasing!r} (one of {PHRASINGS})")


def other_task_instruction(name: str, seed: int) -> str:
    """The (train-phrased) instruction of another MetaWorld task, picked by the seed."""
    others = [t for t in TASKS if t != name]
    return phrases(others[int(seed) % len(others)], "train")[0]
MT10 = ("reach", "push", "pick-place", "door-open", "drawer-open", "drawer-close", "button-press-topdown",
        "peg-insert-side", "window-open", "window-close")

# step limit per task (see the module docstring)
MAX_STEPS: dict[str, int] = {
    "reach": 150, "push": 250, "pick-place": 130, "door-open": 240, "drawer-open": 200, "drawer-close": 180,
    "button-press-topdown": 170, "peg-insert-side": 250, "window-open": 200, "window-close": 200,
    "door-close": 160, "button-press": 140, "faucet-open": 140, "faucet-close": 150, "handle-press": 100,
    "plate-slide": 120, "coffee-button": 100, "reach-wall": 160,
}

# Task sets: a task name, or one of these, selects what an episode may be. The results bench's
# protocol (as the iRe-VLA paper's): tasks with expert demos ("demo"), tasks trained online from
# a weak start with only a few demos ("rl"), tasks never trained on ("held_out").
TASK_SETS: dict[str, dict[str, tuple[str, ...]]] = {
    "mt10": {"train": MT10, "demo": MT10, "rl": (), "held_out": ()},
    "bench": {
        # reach is left out: 600 SFT steps on 20 demos leave the tiny model at 0 on it from 96 px
        # pixels (its goal is a small red dot); every other demo task came off zero (docs/metaworld.md)
        "demo": ("button-press-topdown", "drawer-close", "window-open", "door-close", "faucet-open"),
        "rl": ("drawer-open", "window-close", "button-press"),
        "held_out": ("faucet-close", "handle-press", "coffee-button", "door-open"),
    },
}
for _sets in TASK_SETS.values():
    _sets.setdefault("train", _sets["demo"] + _sets["rl"])
    _sets["all"] = tuple(dict.fromkeys(_sets["train"] + _sets["held_out"]))
SPLITS = ("train", "demo", "rl", "held_out", "all")
TASK_NAMES = TASKS + tuple(TASK_SETS)


@dataclass(frozen=True)
class TaskSpec:
    """One episode's task: the MetaWorld task name, its instruction and the episode seed."""

    name: str
    instruction: str
    seed: int

    @property
    def max_steps(self) -> int:
        return MAX_STEPS[self.name]

    def to_dict(self) -> dict:
        return {"family": self.name, "instruction": self.instruction, "seed": self.seed}


def split_tasks(task: str, split: str = "train") -> tuple[str, ...]:
    """The MetaWorld tasks ``task`` (a task or a task set) may draw in ``split``; a single task
    ignores the split."""
    if task in LANGUAGE:
        return (task,)
    if task not in TASK_SETS:
        raise ValueError(f"unknown MetaWorld task {task!r} (one of {TASK_NAMES})")
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r} (one of {SPLITS})")
    tasks = TASK_SETS[task][split]
    if not tasks:
        raise ValueError(f"task set {task!r} has no tasks in split {split!r}")
    return tasks


def sample_task(seed: int, task: str, split: str = "train", phrasing: str = "train") -> TaskSpec:
    """Same seed, task and split -> the same task and instruction."""
    rng = np.random.default_rng([int(seed), 0x3E7A])
    tasks = split_tasks(task, split)
    name = tasks[int(rng.integers(len(tasks)))]
    index = int(rng.integers(len(LANGUAGE[name])))  # one draw whatever the phrasing
    allowed = phrases(name, phrasing)
    chosen = LANGUAGE[name][index]
    return TaskSpec(name, chosen if chosen in allowed else allowed[index % len(allowed)], int(seed))
