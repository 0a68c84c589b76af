"""iRe-VLA (and its ablations): RL rounds on the robot's episodes, then an SFT phase that
consolidates the successes into the trunk.

    { RL round (algorithm: ppo | sac head, or ppo_whole) } x rounds   each publishes a version
    SFT phase (LoRA + head on the demos and every success)           unless `sft` is False

With `schedule` "plateau" the RL rounds also stop once the rounds' sampled success stops improving
over `plateau_rounds` rounds (by less than `plateau_delta`).
"""

from __future__ import annotations

from dataclasses import dataclass

from learner.recipes.base import Phase, PhaseHooks
from learner.rl.algorithms import publishes


@dataclass(frozen=True)
class RLRound:
    """The RL round part: one round of an RL algorithm (learner/rl/algorithms.py) on the episodes,
    its rewards shaped by the progress model when the recipe holds that part
    (learner/progress/round.py; `learner.progress.enabled`)."""
    algorithm: str
    progress: object = None  # learner.progress.round.ProgressShaping, or None: sparse rewards

    def __call__(self, trainer, metas: list[dict], hooks: PhaseHooks) -> dict:
        if self.progress is None:
            return trainer.rl_round(metas, self.algorithm)
        return self.progress.rl_round(trainer, metas, self.algorithm)


def sft_phase(trainer, metas: list[dict], hooks: PhaseHooks) -> dict:
    """The SFT part: LoRA + head on the expert demos and every successful episode in the store."""
    return trainer.sft_phase(progress=hooks.progress, on_progress=hooks.on_progress)


def sft(round_: int, demos: int = 0) -> Phase:
    return Phase("sft", round_, "full", sft_phase, demos=demos, needs_sft_data=True,
                 describe="SFT: LoRA + head on expert and successes")


@dataclass(frozen=True)
class IReVLA:
    name: str
    algorithm: str  # the RL rounds' algorithm
    rounds: int  # RL rounds per iteration
    episodes: int  # online episodes per round
    sft: bool = True  # consolidate with an SFT phase after the rounds
    schedule: str = "fixed"  # fixed | plateau
    plateau_rounds: int = 2
    plateau_delta: float = 0.05
    progress: object = None  # the progress-shaping part of its RL rounds (None: sparse rewards)

    def check(self, trainer) -> None:
        return None

    def plateau(self, rl_done: list[dict]) -> bool:
        """Success stopped improving over the last `plateau_rounds` rounds of this phase."""
        if self.schedule != "plateau":
            return False
        rates = [r for r in (e["metrics"].get("success_rate") for e in rl_done) if r is not None]
        k = self.plateau_rounds
        return len(rates) > k and max(rates[-k:]) < max(rates[:-k]) + self.plateau_delta

    def next_phase(self, iteration: int, done: list[dict]) -> Phase | None:
        rl_done = [e for e in done if e["phase"] == "rl"]
        if len(rl_done) < self.rounds and not self.plateau(rl_done):
            r = len(rl_done)
            return Phase("rl", r, publishes(self.algorithm), RLRound(self.algorithm, self.progress), episodes=self.episodes,
                         reject_on_error=True, describe=f"RL round {r} on {self.episodes} episodes",
                         progress=(r / self.rounds, (r + 1) / self.rounds))
        if self.sft and not any(e["phase"] == "sft" for e in done):
            return sft(len(done))
        return None
