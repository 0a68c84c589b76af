"""The RL algorithms a recipe (learner/recipes/) can run in its RL rounds, by name.

Each entry builds the algorithm on the model it trains in place (the head algorithms on its
heads, whole-model PPO on every parameter) and names the deployment section its hyperparameters
come from. Adding an algorithm = one module with an RLAlgorithm class (learner/rl/base.py) and
one entry here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from learner.rl.base import RLAlgorithm
from learner.rl.ppo import PPO
from learner.rl.ppo_whole import WholeModelPPO
from learner.rl.sac import SAC, sac_config


@dataclass(frozen=True)
class AlgorithmEntry:
    build: Callable[..., RLAlgorithm]  # (cfg, model, generator) -> the algorithm
    config: Callable  # (learner config) -> its hyperparameters: its section of the config
    publishes: str = "head"  # the version kind a round publishes: "full" when the trunk moves too


ALGORITHMS = {
    "ppo": AlgorithmEntry(lambda cfg, model, g: PPO(cfg, model.heads, g), lambda lc: lc.ppo),
    "sac": AlgorithmEntry(lambda cfg, model, g: SAC(cfg, model.heads, g), sac_config),
    "ppo_whole": AlgorithmEntry(WholeModelPPO, lambda lc: lc.ppo, publishes="full"),
}


def _lookup(name: str) -> AlgorithmEntry:
    if name not in ALGORITHMS:
        raise ValueError(f"unknown RL algorithm {name!r}; choose one of {sorted(ALGORITHMS)}")
    return ALGORITHMS[name]


def algorithm_config(name: str, lc):
    """The hyperparameters of algorithm `name` from the learner config (the Trainer holds them, so a
    bench can change a field before the first round)."""
    return _lookup(name).config(lc)


def make_algorithm(name: str, cfg, model, generator: torch.Generator) -> RLAlgorithm:
    """The algorithm `name`, training `model` (a VLAModel, or anything with the `heads` a head
    algorithm trains) in place."""
    return _lookup(name).build(cfg, model, generator)


def publishes(name: str) -> str:
    """The kind of version ("head" or "full") a round of algorithm `name` publishes."""
    return _lookup(name).publishes
