"""SAC from demonstrations on the action head, on cached backbone features (iRe-VLA's real-robot RL).

CleanRL style: hyperparameters in one dataclass at the top, the update written out in order.

* Twin Q(f, s, a) on the pooled feature, the normalized state and the normalized action chunk
  (flattened, A = H * action_dim), with polyak-averaged target copies; the min of the twins is used.
* Actor: the policy's Gaussian chunk head (mean + state-independent log-std) in NORMALIZED action
  space, without a tanh squashing. Normalized actions are O(1) and the robot's safety filter clamps
  whatever leaves the workspace, so the unbounded Gaussian is what the server samples from too --
  the actor trained here is exactly the policy that acts (no tanh correction to keep in sync).
* Entropy temperature alpha is tuned towards a target entropy (-A * target_entropy_scale).
* Every batch is half demonstrations, half online transitions (the demo buffer never shrinks, so the
  expert data anchors the head), and many updates run per collected episode: robot time is the
  expensive resource, head updates on cached features are not.

Interfaces (duck-typed, shared with ppo.py):
  actor(features, states) -> (mean [B,A], log_std [A] or [B,A])
  critic(features, states, actions) -> (q1 [B], q2 [B])
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, fields

import numpy as np
import torch
from torch import nn

from learner.rl.ppo import gaussian_entropy, gaussian_logprob


@dataclass
class SACConfig:
    gamma: float = 0.99
    tau: float = 0.005  # polyak factor of the target critics
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    init_alpha: float = 0.05
    target_entropy_scale: float = 1.0  # target entropy = -scale * A
    batch_size: int = 128
    demo_fraction: float = 0.5  # share of every batch drawn from the demonstrations
    updates_per_episode: int = 50  # gradient steps per newly collected episode
    policy_frequency: int = 2  # actor/alpha update every N critic updates (TD3-style delay)
    max_grad_norm: float = 10.0
    bc_coef: float = 0.0  # optional behaviour cloning on the demo half: + coef * MSE(mean, demo action)
    # The Gaussian is not tanh-squashed (the server samples from it unchanged), so nothing bounds the
    # actions the actor proposes to Q: on the mock, Q extrapolated linearly and the actor's mean ran to
    # 1e4 (normalized units) within one round while Q diverged. Q therefore sees actions clamped to
    # this box (normalized units; the demos lie within about +-3), so its gradient cannot pull the mean
    # out of the data's range.
    q_action_bound: float | None = 3.0
    # The returns an episode can reach (the trainer passes [-step_penalty / (1 - gamma), 1] for the
    # sparse success reward). The soft Bellman target is clipped to it: without this, Q on the mock
    # crept from 0.5 to 50-330 over 8 rounds (bootstrapping on its own overestimates) and greedy
    # success fell with it. None = no clipping.
    q_target_bounds: tuple[float, float] | None = None


@dataclass
class Transitions:
    features: torch.Tensor  # [N, F]
    states: torch.Tensor  # [N, S] normalized
    actions: torch.Tensor  # [N, A] normalized chunk
    rewards: torch.Tensor  # [N]
    next_features: torch.Tensor  # [N, F]
    next_states: torch.Tensor  # [N, S]
    dones: torch.Tensor  # [N]

    def __len__(self) -> int:
        return int(self.features.shape[0])

    def take(self, idx: torch.Tensor) -> Transitions:
        return Transitions(**{f.name: getattr(self, f.name)[idx] for f in fields(self)})

    @staticmethod
    def cat(parts: list[Transitions]) -> Transitions:
        return Transitions(**{f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in fields(Transitions)})


class SACLearner:
    """Holds the optimizers, target critics and temperature across rounds (SAC is off-policy: its
    state persists; the replay buffers are rebuilt from the episode store on resume)."""

    def __init__(self, actor: nn.Module, critic: nn.Module, action_dim: int, cfg: SACConfig,
                 actor_params: list[nn.Parameter] | None = None):
        self.actor, self.critic, self.cfg = actor, critic, cfg
        self.target = copy.deepcopy(critic).requires_grad_(False)
        self.actor_params = list(actor_params if actor_params is not None else actor.parameters())
        self.actor_opt = torch.optim.Adam(self.actor_params, lr=cfg.actor_lr)
        self.critic_opt = torch.optim.Adam(critic.parameters(), lr=cfg.critic_lr)
        self.log_alpha = torch.tensor(float(np.log(cfg.init_alpha)), requires_grad=True)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=cfg.alpha_lr)
        self.target_entropy = -cfg.target_entropy_scale * action_dim
        self.n_updates = 0

    def sample_batch(self, demo: Transitions | None, online: Transitions | None,
                     generator: torch.Generator | None) -> tuple[Transitions, int]:
        """A batch whose first `n_demo` rows come from the demos, the rest from online data."""
        n = self.cfg.batch_size
        have_demo, have_online = demo is not None and len(demo) > 0, online is not None and len(online) > 0
        n_demo = round(n * self.cfg.demo_fraction) if have_demo and have_online else (n if have_demo else 0)
        parts = []
        if n_demo:
            parts.append(demo.take(torch.randint(len(demo), (n_demo,), generator=generator)))
        if n - n_demo:
            parts.append(online.take(torch.randint(len(online), (n - n_demo,), generator=generator)))
        return Transitions.cat(parts), n_demo

    def _policy_sample(self, f: torch.Tensor, s: torch.Tensor, generator) -> tuple[torch.Tensor, ...]:
        mean, log_std = self.actor(f, s)
        log_std = log_std.expand_as(mean)
        noise = torch.randn(mean.shape, generator=generator)
        action = mean + log_std.exp() * noise  # reparameterized: gradients reach mean and log_std
        return action, gaussian_logprob(mean, log_std, action), mean, log_std

    def _bounded(self, actions: torch.Tensor) -> torch.Tensor:
        b = self.cfg.q_action_bound
        return actions if b is None else actions.clamp(-b, b)

    def update(self, batch: Transitions, generator: torch.Generator | None = None, n_demo: int = 0,
               update_actor: bool = True) -> dict:
        cfg = self.cfg
        alpha = self.log_alpha.exp().detach()
        # --- critic: soft Bellman target from the target twins at the next decision
        with torch.no_grad():
            next_a, next_logp, _, _ = self._policy_sample(batch.next_features, batch.next_states, generator)
            tq1, tq2 = self.target(batch.next_features, batch.next_states, self._bounded(next_a))
            soft_next = torch.min(tq1, tq2) - alpha * next_logp
            y = batch.rewards + cfg.gamma * (1.0 - batch.dones) * soft_next
            if cfg.q_target_bounds is not None:
                y = y.clamp(*cfg.q_target_bounds)
        q1, q2 = self.critic(batch.features, batch.states, self._bounded(batch.actions))
        q_loss = 0.5 * ((q1 - y).pow(2).mean() + (q2 - y).pow(2).mean())
        self.critic_opt.zero_grad(set_to_none=True)
        q_loss.backward()
        nn.utils.clip_grad_norm_(self.critic.parameters(), cfg.max_grad_norm)
        self.critic_opt.step()
        out = {"loss_q": float(q_loss.detach()), "q_mean": float(q1.detach().mean()), "q_target_mean": float(y.mean())}

        # --- actor and temperature (delayed)
        if update_actor and self.n_updates % cfg.policy_frequency == 0:
            action, logp, mean, log_std = self._policy_sample(batch.features, batch.states, generator)
            pq1, pq2 = self.critic(batch.features, batch.states, self._bounded(action))
            actor_loss = (alpha * logp - torch.min(pq1, pq2)).mean()
            if cfg.bc_coef and n_demo:
                actor_loss = actor_loss + cfg.bc_coef * (mean[:n_demo] - batch.actions[:n_demo]).pow(2).mean()
            self.actor_opt.zero_grad(set_to_none=True)
            actor_loss.backward()
            nn.utils.clip_grad_norm_(self.actor_params, cfg.max_grad_norm)
            self.actor_opt.step()
            self.critic_opt.zero_grad(set_to_none=True)  # the actor loss left grads on the critic
            alpha_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
            self.alpha_opt.zero_grad(set_to_none=True)
            alpha_loss.backward()
            self.alpha_opt.step()
            out.update(loss_actor=float(actor_loss.detach()), loss_alpha=float(alpha_loss.detach()),
                       entropy=float(gaussian_entropy(mean, log_std).detach().mean()))

        # --- polyak-average the target critics
        with torch.no_grad():
            for p, tp in zip(self.critic.parameters(), self.target.parameters(), strict=True):
                tp.mul_(1.0 - cfg.tau).add_(p, alpha=cfg.tau)
        self.n_updates += 1
        out["alpha"] = float(self.log_alpha.detach().exp())
        return out

    def train(self, demo: Transitions | None, online: Transitions | None, n_updates: int,
              generator: torch.Generator | None = None, update_actor: bool = True) -> dict:
        """`n_updates` gradient steps on 50/50 demo/online batches; returns averaged metrics.
        `update_actor=False` is the critic warm-up: a freshly initialized Q is noise, and an actor
        climbing its gradient walks away from the demonstrated behaviour in one round."""
        history: dict[str, list[float]] = {}
        for _ in range(n_updates):
            batch, n_demo = self.sample_batch(demo, online, generator)
            for k, v in self.update(batch, generator, n_demo, update_actor).items():
                history.setdefault(k, []).append(v)
        metrics = {k: float(np.mean(v)) for k, v in history.items()}
        metrics["n_updates"] = n_updates
        metrics["n_demo"] = len(demo) if demo is not None else 0
        metrics["n_online"] = len(online) if online is not None else 0
        return metrics
