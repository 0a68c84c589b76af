"""RECAP (pi*0.6, docs/recap.md), one phase per iteration:

    collect  `episodes` new labelled online episodes
    value    the value function on every labelled episode in the store
    labels   n-step advantages, per-task thresholds, written to runs/<run>/recap/
    sft      conditioned SFT on every stored step, then publish a full version

How the advantages become SFT samples is the config's weighting part (learner/recap/weighting.py):
the advantage indicator in the prompt (RECAP) or AWR's weighted draws (its paper's baseline).
With nothing to condition "positive" on (no demo, success or correction in the store) the phase
raises WaitForData: nothing is published and the episodes stay unconsumed.
"""

from __future__ import annotations

from dataclasses import dataclass

from learner.recap.labels import NoPositiveSteps
from learner.recap.phase import NoLabelledEpisodes, RecapConfig, recap_iteration
from learner.recipes.base import Phase, PhaseHooks, WaitForData


@dataclass(frozen=True)
class RecapPart:
    """The RECAP iteration part: value function -> labels -> conditioned (or weighted) SFT."""
    cfg: RecapConfig

    def __call__(self, trainer, metas: list[dict], hooks: PhaseHooks) -> dict:
        try:
            return recap_iteration(trainer, hooks.iteration, self.cfg, progress=hooks.progress,
                                   on_phase=hooks.on_phase, on_progress=hooks.on_progress)
        except (NoLabelledEpisodes, NoPositiveSteps) as e:
            raise WaitForData(str(e)) from e


@dataclass(frozen=True)
class Recap:
    name: str
    cfg: RecapConfig
    episodes: int  # new online episodes per iteration

    def check(self, trainer) -> None:
        """The weighting's backbone requirement (the indicator needs a prompt that takes it)."""
        try:
            self.cfg.weighting.check_backbone(trainer.model.preprocessor)
        except ValueError as e:
            raise RuntimeError(f"learner.algorithm {self.name} cannot run on this backbone: {e}") from e

    def next_phase(self, iteration: int, done: list[dict]) -> Phase | None:
        if done:
            return None
        return Phase("recap", 0, "full", RecapPart(self.cfg), episodes=self.episodes, needs_sft_data=True,
                     status="value", waiting="collect",
                     describe=f"RECAP iteration {iteration} ({self.cfg.weighting.name}): value function")
