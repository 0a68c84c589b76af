"""The recipes a deployment can name (`learner.algorithm`), each built from the learner config.

    ppo | sac         iRe-VLA: head-only RL rounds (PPO or SAC from demonstrations), then SFT
    rl_only           head-only PPO rounds, no SFT consolidation (an ablation)
    ppo_whole         PPO on the whole model, no SFT (the seed papers' unstable baseline)
    recap             RECAP; `recap.weighting` picks the indicator (RECAP) or AWR part
    sft_only          an SFT phase per iteration on the demos alone (the control)
    sft_extra_demos   an SFT phase per iteration after as many new expert demos as RL gets episodes

This is the one place that maps a method's name to what it runs. A new recipe = its module and an
entry here (and its name in deployment/learner.py's `algorithm` choices).
"""

from __future__ import annotations

from collections.abc import Callable

from learner.recap.phase import RecapConfig
from learner.recipes.base import Recipe
from learner.recipes.irevla import IReVLA
from learner.recipes.recap import Recap
from learner.recipes.sft_only import SFTOnly


def _progress(lc):
    """The progress-shaping part of the RL rounds (learner.progress), or None."""
    if not lc.progress.enabled:
        return None
    from learner.progress.round import ProgressShaping

    return ProgressShaping(lc.progress)


def _irevla(algorithm: str, sft: bool = True) -> Callable[[str, object], Recipe]:
    def build(name: str, lc) -> Recipe:
        return IReVLA(name, algorithm, lc.rl_rounds_per_phase, lc.episodes_per_round, sft=sft,
                      schedule=lc.rl_schedule, plateau_rounds=lc.plateau_rounds, plateau_delta=lc.plateau_delta,
                      progress=_progress(lc))
    return build


def _recap(name: str, lc) -> Recipe:
    episodes = lc.recap.episodes_per_iteration or lc.episodes_per_round * lc.rl_rounds_per_phase
    return Recap(name, RecapConfig.from_learner(lc), episodes)


RECIPES: dict[str, Callable[[str, object], Recipe]] = {
    "ppo": _irevla("ppo"),
    "sac": _irevla("sac"),
    "rl_only": _irevla("ppo", sft=False),
    "ppo_whole": _irevla("ppo_whole", sft=False),
    "recap": _recap,
    "sft_only": lambda name, lc: SFTOnly(name),
    "sft_extra_demos": lambda name, lc: SFTOnly(name, demos=lc.episodes_per_round * lc.rl_rounds_per_phase),
}


def recipe_for(lc, name: str | None = None) -> Recipe:
    """The recipe `name` (default: `lc.algorithm`) with the learner config's settings."""
    name = name or lc.algorithm
    if name not in RECIPES:
        raise ValueError(f"unknown learner recipe {name!r}; choose one of {sorted(RECIPES)}")
    return RECIPES[name](name, lc)
