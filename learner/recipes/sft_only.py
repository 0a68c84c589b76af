"""The controls without online RL: an SFT phase per iteration on the demos alone ("just train
longer"), or on the demos plus `demos` new expert demonstrations per iteration (as many as the RL
recipes get online episodes)."""

from __future__ import annotations

from dataclasses import dataclass

from learner.recipes.base import Phase
from learner.recipes.irevla import sft


@dataclass(frozen=True)
class SFTOnly:
    name: str
    demos: int = 0  # new expert demos each iteration's SFT waits for (0: none)

    def check(self, trainer) -> None:
        return None

    def next_phase(self, iteration: int, done: list[dict]) -> Phase | None:
        return None if done else sft(0, demos=self.demos)
