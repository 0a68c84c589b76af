"""The interface between the Trainer (learner/trainer.py) and a head-only RL algorithm.

One readable file per algorithm (ppo.py, sac.py, ppo_whole.py), each a class with this interface;
the Trainer does not know which one it runs (learner/rl/algorithms.py builds the one the recipe,
learner/recipes/, names).

Who owns what:
* the Trainer: the model, the episode store, the feature cache, the published versions and the
  round count (it decides when the critic warm-up is over);
* the algorithm: its optimizers and whatever it keeps between rounds (PPO: one Adam; SAC: replay
  buffers, target critics and the temperature). It trains the model's heads in place.

Each round the Trainer hands the algorithm a `RoundData`: the round's episodes, and the means to turn
any of them (or any stored episode) into tensors under the CURRENT trunk (backbone + LoRA + pooler).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn

from learner.dataset import EpisodeDecisions
from vla.normalization import Normalizer


@dataclass
class EpisodeTensors:
    """One episode's decisions as tensors under the current trunk (normalized states and chunks)."""
    key: str  # robot_id/episode_id
    features: torch.Tensor  # [N, F] pooled backbone features
    states: torch.Tensor  # [N, S] normalized proprioceptive state
    actions: torch.Tensor  # [N, A] normalized action chunk, flattened (A = H * action_dim)
    rewards: torch.Tensor  # [N]
    dones: torch.Tensor  # [N] 1.0 on the last decision
    server_logprob: torch.Tensor  # [N] what the server returned (NaN = unknown)
    same_version: torch.Tensor  # [N] bool: the acting version is the current head

    def __len__(self) -> int:
        return int(self.features.shape[0])


class RoundData(Protocol):
    """What an algorithm may ask the Trainer for during one round."""

    episodes: list[EpisodeDecisions]  # this round's RL episodes, in the order the loop gave them
    trunk: str  # identifies the trunk the features come from; changes after every SFT phase
    norm: Normalizer  # the model's state and action normalization (whole-model PPO normalizes itself)

    def acted_on_trunk(self, d: EpisodeDecisions) -> bool:
        """Every head version that acted in `d` sits on the current trunk, so the features are what the
        acting policy saw and its behaviour log-probs can be recomputed. False for an empty episode."""

    def tensors(self, d: EpisodeDecisions) -> EpisodeTensors:
        """`d` under the current trunk (features from the cache)."""

    def behaviour_logprob(self, d: EpisodeDecisions, t: EpisodeTensors) -> tuple[torch.Tensor, torch.Tensor]:
        """([N] log-prob of each recorded chunk under the head version that acted, [N] how far float32
        rounding alone can move it: ppo.logprob_resolution). Only for `acted_on_trunk(d)`."""

    def key(self, d: EpisodeDecisions) -> str:
        """The episode's ``robot_id/episode_id`` (what `stored_online(exclude=...)` takes)."""

    def stored_online(self, exclude: frozenset[str] = frozenset()) -> list[EpisodeDecisions]:
        """Every RL episode in the store but the keys in `exclude` (an off-policy buffer rebuilt
        after a trunk change)."""

    def demos(self) -> list[EpisodeDecisions]:
        """The expert demos, one decision every H steps (the rhythm of an executed chunk)."""

    def interventions(self, d: EpisodeDecisions) -> list[EpisodeDecisions]:
        """The operator's intervention segments of `d` as demo decisions, one every H steps (empty
        when nobody took over)."""


class RLAlgorithm(Protocol):
    """A head-only RL algorithm as the Trainer drives it. Both calls train the heads in place and
    return the round's metrics (numbers; `learner.metrics.scalar_metrics` keeps them)."""

    def warm_up(self, data: RoundData) -> dict:
        """A critic-only round: a fresh critic is noise, and a policy following it would walk away
        from the demonstrated behaviour. The Trainer runs `learner.critic_warmup_rounds` of these."""

    def update(self, data: RoundData) -> dict:
        """A full round: critic and policy."""

    def state_dict(self) -> dict:
        """What the algorithm keeps between rounds besides the heads (optimizer states, targets ...)."""

    def load_state_dict(self, state: dict) -> None:
        """Restore `state_dict()` onto an algorithm built on the same heads."""

    def actor_head(self) -> nn.Module:
        """The policy it trains: (features, normalized states) -> (mean, log_std)."""
