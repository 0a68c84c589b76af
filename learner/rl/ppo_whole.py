"""PPO on the WHOLE VLA (backbone unfrozen, every parameter trained from raw frames).

The baseline the seed papers argue against ("RL on the whole VLA is unstable"; PPO-Replay style):
the same clipped PPO loss as `learner/rl/ppo.py`, but the features are recomputed through the
trainable backbone for every minibatch, so no feature cache is possible and an update costs a
full forward + backward pass of the model (bench/learner.py measures the ratio). Run as the
`ppo_whole` recipe (learner/recipes/) behind the same RLAlgorithm interface as the head algorithms
(`WholeModelPPO`, the end of this file): it publishes full versions, since the trunk changes.

On-policy only: the episodes must come from the model being updated (the bench collects them
in-process right before the update), so the behaviour log-prob is the current model's, recomputed
here before the first step and checked against the recorded one like `ppo.py` does.

The update, in order:
  1. decision points -> observations (frames + state + instruction), normalized chunks, rewards
  2. no-grad pass: behaviour log-probs and values under the current model; GAE
  3. epochs x minibatches: features WITH grad through the backbone -> clipped policy + value loss
     -> one Adam step on every parameter; stop the round once approx KL passes target_kl
"""

from __future__ import annotations

import numpy as np
import torch

from learner.dataset import EpisodeDecisions
from learner.rl.base import RoundData
from learner.rl.gaussian import compare_logprobs, gaussian_entropy, gaussian_logprob
from learner.rl.ppo import (
    PPOConfig,
    RoundStats,
    compute_gae,
    explained_variance,
    minibatches,
    optimizer_step,
    policy_loss,
    value_loss,
)
from vla.model import HeadActor, HeadCritic, VLAModel
from vla.normalization import Normalizer


def _forward(model: VLAModel, obs: list, states: torch.Tensor, features: torch.Tensor | None = None
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(mean, log_std, value, features) for observations, through the backbone (grad if enabled)
    unless `features` are given."""
    if features is None:
        features = model.features(model.collate(obs))
    mean, log_std = HeadActor(model.heads)(features, states)
    return mean, log_std, HeadCritic(model.heads)(features, states).reshape(-1), features


def _decision_points(model: VLAModel, norm: Normalizer, decisions: list[EpisodeDecisions]) -> tuple:
    """Step 1: (observations, normalized states, normalized flattened chunks, rewards, dones)."""
    cameras = list(model.config.cameras)
    obs = [d.observation(i, cameras) for d in decisions for i in range(len(d))]
    states = norm.normalize_states(torch.from_numpy(np.concatenate([d.states for d in decisions])).float())
    actions = norm.normalize_actions(torch.from_numpy(np.concatenate([d.chunks for d in decisions])).float()).flatten(1)
    rewards = torch.from_numpy(np.concatenate([d.rewards for d in decisions])).float()
    dones = torch.from_numpy(np.concatenate([d.dones for d in decisions])).float()
    return obs, states, actions, rewards, dones


def whole_model_ppo_round(model: VLAModel, norm: Normalizer, decisions: list[EpisodeDecisions],
                          optimizer: torch.optim.Optimizer, cfg: PPOConfig, warmup: bool,
                          generator: torch.Generator | None = None, forward_batch: int = 64) -> dict:
    """One PPO round on every parameter. `warmup=True`: value loss only (the actor does not move)."""
    obs, states, actions, rewards, dones = _decision_points(model, norm, decisions)  # 1.
    n = len(obs)

    # 2. behaviour log-probs and values under the model that acted (this one: on-policy)
    model.set_mode("full")
    model.eval()  # dropout-free forward, so step-2 and step-3 log-probs agree at ratio 1
    with torch.no_grad():
        parts = [_forward(model, obs[i:i + forward_batch], states[i:i + forward_batch]) for i in range(0, n, forward_batch)]
    old_logp = torch.cat([gaussian_logprob(m, ls, actions[i * forward_batch:][:len(m)])
                          for i, (m, ls, _, _) in enumerate(parts)])
    values = torch.cat([p[2] for p in parts])
    frozen_features = torch.cat([p[3] for p in parts])  # warm-up trains the value head on these
    server_logp = torch.from_numpy(np.concatenate([d.server_logprob for d in decisions])).float()
    metrics = compare_logprobs(old_logp, server_logp, torch.ones(n, dtype=torch.bool), None, cfg.logprob_tolerance)
    advantages, returns = compute_gae(rewards, values, dones, cfg.gamma, cfg.gae_lambda)

    # 3. minibatch updates through the backbone
    params = [p for g in optimizer.param_groups for p in g["params"]]
    epochs = cfg.critic_warmup_epochs if warmup else cfg.update_epochs
    stats = RoundStats()
    for mb in minibatches(n, epochs, cfg, stats, warmup, generator):
        # warm-up: value head only, on the features of step 2 (no backbone pass needed)
        mean, log_std, new_v, _ = _forward(model, [obs[i] for i in mb.tolist()], states[mb],
                                           frozen_features[mb] if warmup else None)
        v_loss = value_loss(new_v, values[mb], returns[mb], cfg)
        loss = cfg.vf_coef * v_loss
        if not warmup:
            new_logp = gaussian_logprob(mean, log_std, actions[mb])
            pg_loss, log_ratio, ratio = policy_loss(new_logp, old_logp[mb], advantages[mb], cfg)
            loss = loss + pg_loss - cfg.ent_coef * gaussian_entropy(mean, log_std).mean()
            stats.policy_step(pg_loss, log_ratio, ratio, cfg.clip_coef)
        optimizer_step(optimizer, loss, params, cfg.max_grad_norm)
        stats.v_losses.append(float(v_loss.detach()))
    model.set_mode("head_only")
    metrics.update({
        **stats.summary(),
        "explained_variance": explained_variance(values, returns),
        "n_transitions": n,
        "critic_warmup": bool(warmup),
    })
    return metrics


class WholeModelPPO:
    """Whole-model PPO as the Trainer runs it (learner/rl/base.py's RLAlgorithm): one Adam over every
    parameter of the model, kept between rounds (and saved with each version like the head
    algorithms' state)."""

    def __init__(self, cfg: PPOConfig, model: VLAModel, generator: torch.Generator):
        self.cfg, self.model, self.generator = cfg, model, generator
        self.optimizer = torch.optim.Adam(list(model.parameters()), lr=cfg.learning_rate, eps=1e-5)

    def warm_up(self, data: RoundData) -> dict:
        return self._round(data, warmup=True)

    def update(self, data: RoundData) -> dict:
        return self._round(data, warmup=False)

    def _round(self, data: RoundData, warmup: bool) -> dict:
        return whole_model_ppo_round(self.model, data.norm, data.episodes, self.optimizer, self.cfg, warmup,
                                     self.generator)

    def actor_head(self):
        return HeadActor(self.model.heads)

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
