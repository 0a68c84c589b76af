"""The head-only RL algorithms the learner can run, by the name `learner.algorithm` gives."""

from __future__ import annotations

import torch
from torch import nn

from learner.rl.base import RLAlgorithm
from learner.rl.ppo import PPO, PPOConfig
from learner.rl.sac import SAC, SACConfig

ALGORITHMS = {"ppo": (PPO, PPOConfig), "sac": (SAC, SACConfig)}


def _lookup(name: str):
    if name not in ALGORITHMS:
        raise ValueError(f"unknown RL algorithm {name!r}; choose one of {sorted(ALGORITHMS)}")
    return ALGORITHMS[name]


def algorithm_config(lc):
    """The hyperparameters of the algorithm `lc.algorithm` names (PPOConfig or SACConfig), from the
    learner config. The Trainer holds it, so a bench can change a field before the first round."""
    return _lookup(lc.algorithm)[1].from_learner(lc)


def make_algorithm(name: str, cfg, heads: nn.Module, generator: torch.Generator) -> RLAlgorithm:
    """The algorithm `name`, training `heads` (vla.model.ActionHeads) in place."""
    return _lookup(name)[0](cfg, heads, generator)
