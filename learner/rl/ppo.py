"""PPO on the action head, on cached backbone features (iRe-VLA Stage 1 + VLA-RL's recipe).

CleanRL style: the hyperparameters are one section of the deployment's learner config
(`deployment.learner.PPOConfig`, `learner.ppo`: one default and one docstring per field), the
update is written out in order below. What is specific to a deployed VLA:

* The backbone is frozen; the batch holds cached pooled features, so an update costs milliseconds.
* Episodes come from a live server that sampled with some earlier head version. The behaviour
  log-prob in the ratio is RECOMPUTED here under the head version that produced the action (the
  caller passes it in `behaviour_logprob`) and CHECKED against the log-prob the server returned:
  if they differ beyond what float32 rounding can explain (`logprob_resolution`, scaled to the
  head's outputs, plus `logprob_tolerance`), server and learner preprocess differently, which
  silently corrupts every ratio -- it is logged as an ERROR and reported as `logprob_mismatch`.
* Operator interventions are no samples of the policy: a decision any of whose executed steps an
  operator drove is not in the batch, and the decision before a takeover ends its segment with
  reward ``takeover_reward`` (learner/dataset.py builds the decisions that way; GAE does not
  bootstrap across a takeover). The operator's actions teach through SFT and SAC's demo half.
* VLA-RL: GAE(gamma=0.99, lambda=0.95), clip 0.2, no KL penalty, log-prob = sum over all dims of
  the action chunk, critic warm-up rounds (value-only) before the policy moves.

Interfaces of `ppo_update` (duck-typed, so the real vla heads and a tiny test head run the same code):
  actor(features [B,F], states [B,S]) -> (mean [B,A], log_std [A] or [B,A])   (normalized actions)
  critic(features [B,F], states [B,S]) -> value [B]
The Trainer runs it as `PPO` (the end of this file), learner/rl/base.py's RLAlgorithm.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from deployment.learner import PPOConfig
from learner.rl.gaussian import (
    LOGPROB_TOLERANCE,
    compare_logprobs,
    gaussian_entropy,
    gaussian_logprob,
    logprob_resolution,
)
from vla.model import HeadActor, HeadCritic

if TYPE_CHECKING:
    from learner.dataset import EpisodeDecisions
    from learner.rl.base import RoundData

__all__ = ["LOGPROB_TOLERANCE", "PPOConfig", "gaussian_entropy", "gaussian_logprob", "logprob_resolution"]  # re-exported

log = logging.getLogger(__name__)


@dataclass
class RolloutBatch:
    """Decision-point transitions of whole episodes, in time order per episode."""
    features: torch.Tensor  # [N, F] cached pooled backbone features
    states: torch.Tensor  # [N, S] normalized proprioceptive state
    actions: torch.Tensor  # [N, A] normalized action chunk, flattened (A = H * action_dim)
    rewards: torch.Tensor  # [N]
    dones: torch.Tensor  # [N] 1.0 on the last decision of an episode
    behaviour_logprob: torch.Tensor  # [N] recomputed under the head version that acted
    server_logprob: torch.Tensor  # [N] what the server returned (NaN = unknown)
    same_version: torch.Tensor  # [N] bool: the acting version is the current head
    logprob_resolution: torch.Tensor | None = None  # [N] float rounding bound (logprob_resolution())

    def __len__(self) -> int:
        return int(self.features.shape[0])


def compute_gae(rewards: torch.Tensor, values: torch.Tensor, dones: torch.Tensor,
                gamma: float, lam: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation over concatenated episodes. `dones[t] = 1` ends an episode at
    t (the value after it is 0: the episode is over, success or not). Returns (advantages, returns)."""
    n = rewards.shape[0]
    adv = torch.zeros_like(rewards)
    last = 0.0
    for t in reversed(range(n)):
        nonterminal = 1.0 - float(dones[t])
        next_value = values[t + 1] if t + 1 < n else torch.zeros(())
        delta = rewards[t] + gamma * next_value * nonterminal - values[t]
        last = delta + gamma * lam * nonterminal * last
        adv[t] = last
    return adv, adv + values


def explained_variance(pred: torch.Tensor, target: torch.Tensor) -> float:
    var = float(target.var()) if target.numel() > 1 else 0.0
    return float("nan") if var == 0 else 1.0 - float((target - pred).var()) / var


def check_logprobs(batch: RolloutBatch, tolerance: float) -> dict:
    """learner/rl/gaussian.py's behaviour log-prob check on a rollout batch."""
    return compare_logprobs(batch.behaviour_logprob, batch.server_logprob, batch.same_version,
                            batch.logprob_resolution, tolerance)


def value_loss(new_v: torch.Tensor, old_v: torch.Tensor, returns: torch.Tensor, cfg: PPOConfig) -> torch.Tensor:
    """0.5 * squared error, clipped around the values the rollout was scored with."""
    unclipped = (new_v - returns).pow(2)
    if not cfg.clip_vloss:
        return 0.5 * unclipped.mean()
    clipped = old_v + (new_v - old_v).clamp(-cfg.vf_clip, cfg.vf_clip)
    return 0.5 * torch.max(unclipped, (clipped - returns).pow(2)).mean()


def policy_loss(new_logp: torch.Tensor, behaviour_logp: torch.Tensor, advantages: torch.Tensor,
                cfg: PPOConfig) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clipped surrogate with the importance ratio against the behaviour policy.
    Returns (loss, log_ratio, ratio)."""
    log_ratio = new_logp - behaviour_logp
    ratio = log_ratio.exp()
    if cfg.norm_adv and advantages.numel() > 1:
        advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
    loss = torch.max(-advantages * ratio, -advantages * ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef)).mean()
    return loss, log_ratio, ratio


@dataclass
class RoundStats:
    """What one PPO round records per minibatch step (shared by ppo.py and ppo_whole.py)."""
    pg_losses: list = field(default_factory=list)
    v_losses: list = field(default_factory=list)
    kls: list = field(default_factory=list)
    clipfracs: list = field(default_factory=list)

    def policy_step(self, pg_loss: torch.Tensor, log_ratio: torch.Tensor, ratio: torch.Tensor, clip_coef: float) -> None:
        with torch.no_grad():
            self.kls.append(float(((ratio - 1) - log_ratio).mean()))  # k3 estimator of KL(old || new)
            self.clipfracs.append(float(((ratio - 1).abs() > clip_coef).float().mean()))
        self.pg_losses.append(float(pg_loss.detach()))

    def kl_exceeded(self, target_kl: float | None) -> bool:
        return target_kl is not None and bool(self.kls) and self.kls[-1] > target_kl

    def summary(self) -> dict:
        return {"loss_value": float(np.mean(self.v_losses)) if self.v_losses else float("nan"),
                "loss_policy": float(np.mean(self.pg_losses)) if self.pg_losses else 0.0,
                "approx_kl": float(np.mean(self.kls)) if self.kls else 0.0,
                "clipfrac": float(np.mean(self.clipfracs)) if self.clipfracs else 0.0,
                "n_updates": len(self.v_losses)}


def minibatches(n: int, epochs: int, cfg: PPOConfig, stats: RoundStats, warmup: bool,
                generator: torch.Generator | None):
    """Shuffled minibatch indices for `epochs` epochs; stops early once the last policy step's
    approx KL passes `cfg.target_kl` (checked after the caller's step: the generator resumes then)."""
    for _ in range(epochs):
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, cfg.minibatch_size):
            yield order[start:start + cfg.minibatch_size]
            if not warmup and stats.kl_exceeded(cfg.target_kl):
                return


def optimizer_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor, params: list, max_grad_norm: float) -> None:
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(params, max_grad_norm)
    optimizer.step()


def ppo_update(actor: nn.Module, critic: nn.Module, optimizer: torch.optim.Optimizer, batch: RolloutBatch,
               cfg: PPOConfig, warmup: bool, generator: torch.Generator | None = None) -> dict:
    """One PPO round on `batch`. `warmup=True`: value-only updates (the policy does not move)."""
    metrics = check_logprobs(batch, cfg.logprob_tolerance)
    n = len(batch)
    with torch.no_grad():
        values = critic(batch.features, batch.states).reshape(-1)
    advantages, returns = compute_gae(batch.rewards, values, batch.dones, cfg.gamma, cfg.gae_lambda)

    params = [p for g in optimizer.param_groups for p in g["params"]]
    epochs = cfg.critic_warmup_epochs if warmup else cfg.update_epochs
    stats = RoundStats()
    for mb in minibatches(n, epochs, cfg, stats, warmup, generator):
        f, s, a = batch.features[mb], batch.states[mb], batch.actions[mb]

        new_v = critic(f, s).reshape(-1)
        v_loss = value_loss(new_v, values[mb], returns[mb], cfg)
        loss = cfg.vf_coef * v_loss

        if not warmup:
            mean, log_std = actor(f, s)
            new_logp = gaussian_logprob(mean, log_std, a)
            pg_loss, log_ratio, ratio = policy_loss(new_logp, batch.behaviour_logprob[mb], advantages[mb], cfg)
            entropy = gaussian_entropy(mean, log_std).mean()
            loss = loss + pg_loss - cfg.ent_coef * entropy
            stats.policy_step(pg_loss, log_ratio, ratio, cfg.clip_coef)

        optimizer_step(optimizer, loss, params, cfg.max_grad_norm)
        stats.v_losses.append(float(v_loss.detach()))

    with torch.no_grad():
        final_v = critic(batch.features, batch.states).reshape(-1)
        mean, log_std = actor(batch.features[:1], batch.states[:1])
    metrics.update({
        **stats.summary(),
        "entropy": float(gaussian_entropy(mean, log_std).mean()),
        "explained_variance": explained_variance(final_v, returns),
        "value_mean": float(final_v.mean()),
        "return_mean": float(returns.mean()),
        "n_transitions": n,
        "critic_warmup": bool(warmup),
    })
    return metrics


class PPO:
    """Head-only PPO as the Trainer runs it (learner/rl/base.py's RLAlgorithm). Episodes that acted
    on another trunk (before the last SFT) are skipped: their features under the current backbone
    are not what the acting policy saw, so their ratios would be wrong."""

    def __init__(self, cfg: PPOConfig, heads: nn.Module, generator: torch.Generator):
        self.cfg, self.generator = cfg, generator
        self.actor, self.critic = HeadActor(heads), HeadCritic(heads)
        self.optimizer = torch.optim.Adam([*self.actor.parameters(), *self.critic.parameters()],
                                          lr=cfg.learning_rate, eps=1e-5)

    def warm_up(self, data: RoundData) -> dict:
        return self._round(data, warmup=True)

    def update(self, data: RoundData) -> dict:
        return self._round(data, warmup=False)

    def _round(self, data: RoundData, warmup: bool) -> dict:
        # an episode can have no decision left: every chunk of it was cut by an operator takeover
        episodes = [d for d in data.episodes if len(d)]
        usable = [d for d in episodes if data.acted_on_trunk(d)]
        skipped = len(episodes) - len(usable)
        if skipped:
            log.warning("PPO: %d episode(s) acted with a version of another trunk (before the last SFT) "
                        "or an unknown version; skipped", skipped)
        if not usable:
            return {"n_transitions": 0, "n_skipped_stale": skipped, "logprob_mismatch": 0}
        batch = rollout_batch(data, usable)
        metrics = ppo_update(self.actor, self.critic, self.optimizer, batch, self.cfg, warmup, self.generator)
        metrics["n_skipped_stale"] = skipped
        return metrics

    def actor_head(self) -> nn.Module:
        return self.actor

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])


def rollout_batch(data: RoundData, episodes: list[EpisodeDecisions]) -> RolloutBatch:
    """The round's on-trunk episodes, concatenated in order, with their recomputed behaviour log-probs."""
    parts, behaviour, resolution = [], [], []
    for d in episodes:
        parts.append(data.tensors(d))
        logprob, res = data.behaviour_logprob(d, parts[-1])
        behaviour.append(logprob)
        resolution.append(res)
    return RolloutBatch(
        features=torch.cat([t.features for t in parts]), states=torch.cat([t.states for t in parts]),
        actions=torch.cat([t.actions for t in parts]), rewards=torch.cat([t.rewards for t in parts]),
        dones=torch.cat([t.dones for t in parts]), behaviour_logprob=torch.cat(behaviour),
        server_logprob=torch.cat([t.server_logprob for t in parts]),
        same_version=torch.cat([t.same_version for t in parts]), logprob_resolution=torch.cat(resolution))
