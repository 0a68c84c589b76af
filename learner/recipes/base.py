"""What a recipe is: a `Phase` at a time, chosen from what the iteration has done so far.

    recipe = recipe_for(config.learner)             # registry.py
    recipe.check(trainer)                           # refuse a backbone it cannot run on, before any wait
    phase = recipe.next_phase(iteration, done)      # None: the iteration is over
    metas = <phase.episodes new online episodes>    # (and phase.demos new expert demos)
    metrics = phase.train(trainer, metas, hooks)    # trains the trainer's model, publishes nothing
    version = trainer.publish(phase.publish, phase.name, metrics)

`done` is the iteration's committed phases, oldest first, as dicts with at least ``phase``,
``round`` and ``metrics``: the live loop's learner_state.json entries, or the bench's in-process
records. A recipe keeps no state of its own between calls, so a restarted learner asks it again
with what learner_state.json says was done, and gets the same answer: that is the resume rule's
half that belongs to the recipe.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol


class WaitForData(Exception):
    """A phase found nothing it can learn from yet (e.g. RECAP with no labelled episode): the driver
    publishes nothing, keeps the phase's episodes unconsumed and tries again when more arrive."""


@dataclass
class PhaseHooks:
    """What a phase may tell its driver while it trains."""
    iteration: int
    progress: bool = False  # a tqdm bar on stderr
    on_phase: Callable[[str], None] | None = None  # a named step inside the phase began ("value", ...)
    on_progress: Callable[[float], None] | None = None  # fraction of the phase's training done


@dataclass(frozen=True)
class Phase:
    """One step of a recipe: what it waits for, how it trains, what it publishes."""
    name: str
    """The phase record's and the published version's phase: "rl", "sft", "recap"."""
    round: int
    """Its place in the iteration (the number of phases the iteration committed before it)."""
    publish: str
    """The kind of version it publishes: "head" (only the action head changed) or "full"."""
    train: Callable
    """(trainer, metas, PhaseHooks) -> metrics: trains the trainer's model on `metas` (unpublished)."""
    episodes: int = 0
    """New labelled online episodes it trains on, oldest first (0: none)."""
    demos: int = 0
    """New expert demonstrations it waits for before training (0: none)."""
    needs_sft_data: bool = False
    """It waits until the store holds a demo or a successful episode to imitate."""
    reject_on_error: bool = False
    """An exception while training sets its episodes aside (one bad episode must not crash-loop the
    learner); otherwise the exception stops the learner."""
    status: str = ""
    """The status.json phase while it trains ("" = `name`)."""
    waiting: str = ""
    """The status.json phase while it waits for episodes ("" = `name`)."""
    describe: str = ""
    """One line for status.json and the log while it trains."""
    progress: tuple[float, float] = (0.0, 1.0)
    """The fraction of the iteration done before and after it (status.json's progress bar)."""


class Recipe(Protocol):
    name: str

    def check(self, trainer) -> None:
        """Raise RuntimeError if the recipe cannot run on the trainer's model (checked before any wait)."""

    def next_phase(self, iteration: int, done: list[dict]) -> Phase | None:
        """The phase after `done` in `iteration`, or None when the iteration is over."""
