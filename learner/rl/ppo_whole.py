"""PPO on the WHOLE VLA (backbone unfrozen, every parameter trained from raw frames).

The baseline the seed papers argue against ("RL on the whole VLA is unstable"; PPO-Replay style):
the same clipped PPO loss as `learner/rl/ppo.py`, but the features are recomputed through the
trainable backbone for every minibatch, so no feature cache is possible and an update costs a
full forward + backward pass of the model (bench/learner.py measures the ratio). Used by the
results bench (bench/learning.py); the deployed learner runs the head-only `ppo.py`.

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
from learner.rl.ppo import (
    PPOConfig,
    RolloutBatch,
    RoundStats,
    check_logprobs,
    compute_gae,
    explained_variance,
    gaussian_entropy,
    gaussian_logprob,
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
    metrics = check_logprobs(RolloutBatch(
        features=torch.zeros(n, 0), states=states, actions=actions, rewards=rewards, dones=dones,
        behaviour_logprob=old_logp, server_logprob=server_logp, same_version=torch.ones(n, dtype=torch.bool)),
        cfg.logprob_tolerance)
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
