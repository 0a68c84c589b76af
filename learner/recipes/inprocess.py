"""A recipe run in one process, on episodes the caller makes on the spot (the learning bench's
rollouts, the demo's control): the same phases the live loop runs, without robots, waits or a
resume rule of its own (the caller saves what it needs between iterations).

    run = InProcessRun(trainer, recipe, collect=..., record_demos=..., on_published=...)
    for it in range(iterations):
        run.iteration(it)

Every phase gets a ``start`` and an ``end`` line in runs/<run>/phases.jsonl like the live loop's
(episodes.status.PhaseLog), so the two can be compared record for record.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from episodes.status import PHASE_LOG, PhaseLog
from episodes.store import episode_key
from learner.metrics import scalar_metrics
from learner.recipes.base import Phase, PhaseHooks, Recipe


class InProcessRun:
    def __init__(self, trainer, recipe: Recipe, collect: Callable[[Phase, int], list[dict]] | None = None,
                 record_demos: Callable[[Phase, int], None] | None = None,
                 on_published: Callable[[Phase, dict, dict, Phase | None], None] | None = None,
                 run_dir: str | Path | None = None):
        """`collect(phase, iteration)` -> the metas of `phase.episodes` new online episodes (stored in the
        trainer's store); `record_demos(phase, iteration)` stores `phase.demos` new expert demos and returns their metas;
        `on_published(phase, entry, metrics, next_phase)` after each publish (next_phase None: the
        iteration is over)."""
        self.trainer, self.recipe = trainer, recipe
        self.collect, self.record_demos, self.on_published = collect, record_demos, on_published
        self.phase_log = PhaseLog(Path(run_dir or trainer.run_dir) / PHASE_LOG)
        recipe.check(trainer)

    def _needs(self, phase: Phase, it: int) -> tuple[list[dict], list[dict]]:
        """(the phase's online episodes, its new expert demos), made now."""
        demos, episodes = [], []
        if phase.demos:
            if self.record_demos is None:
                raise RuntimeError(f"recipe {self.recipe.name}: its {phase.name} phase needs new expert demos "
                                   "and this run has no demo source")
            demos = self.record_demos(phase, it)
        if phase.episodes:
            if self.collect is None:
                raise RuntimeError(f"recipe {self.recipe.name}: its {phase.name} phase needs online episodes and "
                                   "this run collects none")
            episodes = self.collect(phase, it)
        return episodes, demos

    def iteration(self, it: int) -> list[dict]:
        """Every phase of iteration `it`; returns the committed entries (learner_state.json's shape,
        plus ``seconds``: the phase's training and publish)."""
        done: list[dict] = []
        phase = self.recipe.next_phase(it, done)
        while phase is not None:
            self.phase_log.append({"event": "start", "phase": phase.name, "iteration": it, "round": phase.round,
                                   "serving_version": self.trainer.version})
            metas, demos = self._needs(phase, it)
            t = time.time()
            metrics = phase.train(self.trainer, metas, PhaseHooks(it))
            version = self.trainer.publish(phase.publish, phase.name, metrics)
            keys = [episode_key(m) for m in metas + demos]  # what it trained on, as the live loop counts it
            entry = {"iteration": it, "round": phase.round, "phase": phase.name, "version": version,
                     "episodes": keys, "metrics": scalar_metrics(metrics), "seconds": time.time() - t}
            done.append(entry)
            self.phase_log.append({"event": "end", "phase": phase.name, "iteration": it, "round": phase.round,
                                   "version": version, "trained_on": keys, "collected": keys})
            following = self.recipe.next_phase(it, done)
            if self.on_published is not None:
                self.on_published(phase, entry, metrics, following)
            phase = following
        return done
