"""SAC from demonstrations on the action head, on cached backbone features (iRe-VLA's real-robot RL).

CleanRL style: the hyperparameters are one section of the deployment's learner config
(`deployment.learner.SACConfig`, `learner.sac`), the update is written out in order.

* Twin Q(f, s, a) on the pooled feature, the normalized state and the normalized action chunk
  (flattened, A = H * action_dim), with polyak-averaged target copies; the min of the twins is used.
* Actor: the policy's Gaussian chunk head (mean + state-independent log-std) in NORMALIZED action
  space, without a tanh squashing. Normalized actions are O(1) and the robot's safety filter clamps
  whatever leaves the workspace, so the unbounded Gaussian is what the server samples from too --
  the actor trained here is exactly the policy that acts (no tanh correction to keep in sync).
* Entropy temperature alpha is tuned towards a target entropy (-A * target_entropy_scale).
* Every batch is half demonstrations, half online transitions (the demo buffer never shrinks, so the
  expert data anchors the head). Operator interventions join the demo half (HIL-SERL): each
  intervention segment of a stored RL episode, one decision every H steps, like an expert demo;
  the policy's own decisions of that episode stay online transitions (learner/dataset.py).
* Many updates run per collected episode: robot time is the expensive resource, head updates on
  cached features are not.

Interfaces of `SACLearner` (duck-typed, shared with ppo.py):
  actor(features, states) -> (mean [B,A], log_std [A] or [B,A])
  critic(features, states, actions) -> (q1 [B], q2 [B])
The Trainer runs it as `SAC` (the end of this file: buffers, demos, log-prob check), learner/rl/base.py's
RLAlgorithm.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from deployment.learner import SACConfig
from learner.rl.gaussian import compare_logprobs, gaussian_entropy, gaussian_logprob
from vla.model import HeadActor, HeadTwinQ

if TYPE_CHECKING:
    from learner.dataset import EpisodeDecisions
    from learner.rl.base import EpisodeTensors, RoundData


def sac_config(lc) -> SACConfig:
    """The learner's `sac` section, with the returns' bounds derived from the reward where it leaves
    them to the learner: +1 once at a success, -step_penalty per decision, takeover_reward (<= 0)
    once where an operator took over, so every return lies in
    [takeover_reward - penalty / (1 - gamma), 1]."""
    cfg = lc.sac
    if cfg.q_target_bounds is not None:
        return cfg
    low = min(0.0, lc.takeover_reward) - lc.step_penalty / (1.0 - cfg.gamma)
    progress = getattr(lc, "progress", None)
    if progress is not None and progress.enabled and progress.shaping:
        # potential-based shaping moves a return by -scale * Phi(s), Phi in [0, 1] (learner/progress/round.py)
        low -= progress.scale
    return cfg.model_copy(update={"q_target_bounds": (low, 1.0)})


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
        """One gradient step: critic, then (every `policy_frequency` steps) actor and temperature, then
        the target critics. The first `n_demo` rows of `batch` are demonstrations."""
        alpha = self.log_alpha.exp().detach()
        out = self._critic_step(batch, alpha, generator)
        if update_actor and self.n_updates % self.cfg.policy_frequency == 0:
            out.update(self._actor_step(batch, alpha, n_demo, generator))
        self._polyak()
        self.n_updates += 1
        out["alpha"] = float(self.log_alpha.detach().exp())
        return out

    def _critic_step(self, batch: Transitions, alpha: torch.Tensor, generator) -> dict:
        """Soft Bellman target from the target twins at the next decision; both Qs regress on it."""
        cfg = self.cfg
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
        return {"loss_q": float(q_loss.detach()), "q_mean": float(q1.detach().mean()), "q_target_mean": float(y.mean())}

    def _actor_step(self, batch: Transitions, alpha: torch.Tensor, n_demo: int, generator) -> dict:
        """The actor climbs min(Q1, Q2) - alpha * log-prob (+ optional BC on the demo rows); alpha is
        tuned towards the target entropy."""
        cfg = self.cfg
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
        return {"loss_actor": float(actor_loss.detach()), "loss_alpha": float(alpha_loss.detach()),
                "entropy": float(gaussian_entropy(mean, log_std).detach().mean())}

    def _polyak(self) -> None:
        with torch.no_grad():
            for p, tp in zip(self.critic.parameters(), self.target.parameters(), strict=True):
                tp.mul_(1.0 - self.cfg.tau).add_(p, alpha=self.cfg.tau)

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


class SAC:
    """SAC from demonstrations as the Trainer runs it (learner/rl/base.py's RLAlgorithm).

    Off-policy, so every stored RL episode stays in the replay buffer, re-featurized under the current
    trunk: after an SFT phase (a new trunk) the buffers are rebuilt from the episode store. Episodes
    that acted on the current trunk also get their behaviour log-probs checked against the server's.
    """

    def __init__(self, cfg: SACConfig, heads: nn.Module, generator: torch.Generator):
        self.cfg, self.generator = cfg, generator
        self.learner = SACLearner(HeadActor(heads), HeadTwinQ(heads), heads.log_std.numel(), cfg)
        self.online: dict[str, Transitions] = {}  # episode key -> its transitions on `self.trunk`
        # episode key -> its intervention segments' transitions: demonstrations, in the demo half
        self.interventions: dict[str, Transitions] = {}
        self.demo: Transitions | None = None
        self.trunk: str | None = None

    def warm_up(self, data: RoundData) -> dict:
        return self._round(data, update_actor=False)

    def update(self, data: RoundData) -> dict:
        return self._round(data, update_actor=True)

    def _round(self, data: RoundData, update_actor: bool) -> dict:
        if data.trunk != self.trunk:  # every buffered feature is stale
            self._rebuild(data)
        checks = self._add_episodes(data)
        if self.demo is None:
            self.demo = self._transitions_of(data, data.demos())
        online = Transitions.cat(list(self.online.values())) if self.online else None
        demo_parts = [t for t in [self.demo, *self.interventions.values()] if t is not None]
        demo = Transitions.cat(demo_parts) if demo_parts else None
        n_updates = self.cfg.updates_per_episode * max(1, len(data.episodes))
        metrics = self.learner.train(demo, online, n_updates, self.generator, update_actor=update_actor)
        metrics["n_intervention_transitions"] = sum(len(t) for t in self.interventions.values())
        metrics["critic_warmup"] = not update_actor
        if checks:
            metrics.update(_check_logprobs(checks, self.cfg.logprob_tolerance))
        metrics["n_transitions"] = sum(len(d) for d in data.episodes)
        return metrics

    def _rebuild(self, data: RoundData) -> None:
        self.online.clear()
        self.interventions.clear()
        self.trunk = data.trunk
        this_round = frozenset(data.key(d) for d in data.episodes)  # _add_episodes adds those
        for d in data.stored_online(exclude=this_round):
            if len(d):
                t = data.tensors(d)
                self.online[t.key] = transitions(t)
            self._add_interventions(data, d)
        self.demo = None

    def _add_interventions(self, data: RoundData, d: EpisodeDecisions) -> None:
        """The episode's intervention segments (decisions every H steps) into the demo half."""
        segments = self._transitions_of(data, data.interventions(d))
        if segments is not None:
            self.interventions[data.key(d)] = segments

    def _add_episodes(self, data: RoundData) -> list[tuple[EpisodeTensors, tuple[torch.Tensor, torch.Tensor]]]:
        """The round's episodes into the buffer; returns those whose behaviour log-probs can be checked."""
        checks = []
        for d in data.episodes:
            self._add_interventions(data, d)
            if len(d):
                t = data.tensors(d)
                self.online[t.key] = transitions(t)
                if data.acted_on_trunk(d):
                    checks.append((t, data.behaviour_logprob(d, t)))
        return checks

    @staticmethod
    def _transitions_of(data: RoundData, episodes: list[EpisodeDecisions]) -> Transitions | None:
        parts = [transitions(data.tensors(d)) for d in episodes if len(d)]
        return Transitions.cat(parts) if parts else None

    def actor_head(self) -> nn.Module:
        return self.learner.actor

    def state_dict(self) -> dict:
        sac = self.learner
        return {"actor_opt": sac.actor_opt.state_dict(), "critic_opt": sac.critic_opt.state_dict(),
                "alpha_opt": sac.alpha_opt.state_dict(), "log_alpha": sac.log_alpha.detach().clone(),
                "target": sac.target.state_dict(), "n_updates": sac.n_updates}

    def load_state_dict(self, state: dict) -> None:
        sac = self.learner
        sac.actor_opt.load_state_dict(state["actor_opt"])
        sac.critic_opt.load_state_dict(state["critic_opt"])
        sac.alpha_opt.load_state_dict(state["alpha_opt"])
        with torch.no_grad():
            sac.log_alpha.copy_(state["log_alpha"])
        sac.target.load_state_dict(state["target"])
        sac.n_updates = int(state["n_updates"])


def transitions(t: EpisodeTensors) -> Transitions:
    """Decision to next decision; the last one's next state is itself (done, so never bootstrapped)."""
    nxt = torch.clamp(torch.arange(len(t)) + 1, max=len(t) - 1)
    return Transitions(features=t.features, states=t.states, actions=t.actions, rewards=t.rewards,
                       next_features=t.features[nxt], next_states=t.states[nxt], dones=t.dones)


def _check_logprobs(checks: list[tuple[EpisodeTensors, tuple[torch.Tensor, torch.Tensor]]], tolerance: float) -> dict:
    """The behaviour log-prob check (learner/rl/gaussian.py) on the round's on-trunk episodes."""
    return compare_logprobs(torch.cat([b for _, (b, _) in checks]), torch.cat([t.server_logprob for t, _ in checks]),
                            torch.cat([t.same_version for t, _ in checks]), torch.cat([r for _, (_, r) in checks]),
                            tolerance)
