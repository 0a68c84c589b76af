"""The Trainer: the learning half of the learner, driven by the phase loop (learner/loop.py).

    trainer = Trainer(config, run_dir, log=SummaryWriter(...))
    trainer.bootstrap() | trainer.resume()          -> version
    metrics = trainer.rl_round(metas); trainer.publish("head", "rl", metrics)     x rounds
    metrics = trainer.sft_phase();     trainer.publish("full", "sft", metrics)

* RL rounds are head-only on cached features (learner/features.py): PPO (learner/rl/ppo.py) or
  SAC from demonstrations (learner/rl/sac.py), chosen by `learner.algorithm`.
* The behaviour log-prob of every decision is recomputed under the head VERSION that acted (loaded
  from the registry, sharing the trunk) and checked against what the server returned; a mismatch is
  logged as an error and reported as `logprob_mismatch` (see ppo.py for why it matters).
* Episodes whose acting version ran on another trunk (before the last SFT) are skipped by PPO: their
  features under the current backbone are not what the acting policy saw. SAC (off-policy) keeps
  every episode, re-featurized under the current trunk.
* SFT (learner/sft.py) trains LoRA + head on expert demos ∪ successful episodes and invalidates the
  feature cache; Stage 0 (learner/bootstrap.py) trains the tiny model from the demos.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn

from episodes.store import EpisodeStore
from learner.bootstrap import expert_demos, run_bootstrap
from learner.dataset import EpisodeDecisions, is_rl_episode, load_decisions, sft_episodes
from learner.features import FeatureCache, trunk_key
from learner.rl.ppo import PPOConfig, RolloutBatch, gaussian_logprob, logprob_resolution, ppo_update
from learner.rl.sac import SACConfig, SACLearner, Transitions
from learner.sft import SFTConfig, build_sft_data, train_sft
from vla.model import VLAModel
from vla.normalization import Normalizer
from vla.policy import Policy
from vla.registry import CheckpointError, CheckpointRegistry, load_model, publish, trunk_meta

log = logging.getLogger(__name__)


# ---- the heads as the algorithms see them (ppo.py / sac.py interfaces) --------------------------

class HeadActor(nn.Module):
    """(features, normalized states) -> (mean, log_std) of the chunk Gaussian, exactly as
    VLAModel.head_dist computes it (same clamp), so learner and server log-probs agree."""

    def __init__(self, heads: nn.Module):
        super().__init__()
        self.mean, self.log_std = heads.mean, heads.log_std

    def forward(self, f: torch.Tensor, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mean(torch.cat([f, s.to(f.dtype)], -1)), self.log_std.clamp(-5.0, 2.0)


class HeadCritic(nn.Module):
    def __init__(self, heads: nn.Module):
        super().__init__()
        self.value = heads.value

    def forward(self, f: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
        return self.value(torch.cat([f, s.to(f.dtype)], -1)).squeeze(-1)


class HeadTwinQ(nn.Module):
    """Holds only the two Q MLPs, so deepcopy (SAC's target critics) copies nothing else."""

    def __init__(self, heads: nn.Module):
        super().__init__()
        self.q1, self.q2 = heads.q1, heads.q2

    def forward(self, f: torch.Tensor, s: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([f, s.to(f.dtype), a.flatten(1).to(f.dtype)], -1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)


def _numbers(metrics: dict) -> dict[str, float]:
    """The JSON/TensorBoard-able scalars of a metrics dict (finite or not, floats only)."""
    out = {}
    for k, v in metrics.items():
        if isinstance(v, bool):
            out[k] = float(v)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = float(v) if math.isfinite(float(v)) else float("nan")
    return out


class Trainer:
    def __init__(self, config, run_dir: str | Path, log=None):
        self.config = config
        self.lc = config.learner
        self.run_dir = Path(run_dir)
        self.registry = CheckpointRegistry(self.run_dir / "checkpoints")
        self.store = EpisodeStore(self.run_dir / "episodes")
        self.cache = FeatureCache(self.run_dir / "features")
        self.writer = log
        self.device = config.model.device
        self.model: VLAModel | None = None
        self.norm: Normalizer | None = None
        self.version: int | None = None
        self.rl_rounds_total = 0  # drives the critic warm-up; restored from the latest version's metrics
        self.sft_phases = 0
        # RL and SFT train on reward-model labels only in reward_model mode "auto"
        self.reward_model_labels = config.reward_model.mode == "auto"
        self.generator = torch.Generator().manual_seed(self.lc.seed)
        self.ppo_cfg = PPOConfig(learning_rate=self.lc.ppo_lr, update_epochs=self.lc.ppo_epochs,
                                 minibatch_size=self.lc.ppo_minibatch_size, target_kl=self.lc.ppo_target_kl,
                                 critic_warmup_rounds=self.lc.critic_warmup_rounds)
        self.sac_cfg = SACConfig(updates_per_episode=self.lc.sac_updates_per_episode,
                                 batch_size=self.lc.sac_batch_size, bc_coef=self.lc.sac_bc_coef,
                                 actor_lr=self.lc.sac_actor_lr, init_alpha=self.lc.sac_init_alpha)
        # sparse reward: +1 once at a success, -step_penalty per decision -> returns in these bounds
        self.sac_cfg.q_target_bounds = (-self.lc.step_penalty / (1.0 - self.sac_cfg.gamma), 1.0)
        self._ppo_opt: torch.optim.Optimizer | None = None
        self._sac: SACLearner | None = None
        self._version_heads: dict[int, nn.Module] = {}
        self._sac_buffers: dict[str, Transitions] = {}  # episode key -> transitions (current trunk)
        self._sac_trunk: str | None = None

    # ------------------------------------------------------------------ model lifecycle
    def has_policy(self) -> bool:
        return self.registry.latest() is not None

    @property
    def policy(self) -> Policy:
        """The learner's current model as a Policy (same objects: reflects unpublished updates)."""
        if self.model is None:
            raise RuntimeError("no model: call bootstrap() or resume() first")
        return Policy(self.model, self.norm, self.version if self.version is not None else -1)

    def _adopt(self, model: VLAModel, norm: Normalizer, version: int) -> None:
        self.model, self.norm, self.version = model, norm, version
        self._ppo_opt, self._sac = None, None
        self._version_heads.clear()

    def bootstrap(self, progress: bool = True, on_progress: Callable[[float], None] | None = None) -> int:
        result = run_bootstrap(self.config, self.registry, self.store, progress=progress,
                               on_step=self._on_step("bootstrap", on_progress))
        self._adopt(result.model, result.norm, result.version)
        self.cache.invalidate(keep=trunk_key(self.policy))
        self._scalars("bootstrap", result.metrics, result.version)
        return result.version

    def resume(self, version: int | None = None) -> int | None:
        """Load ``version`` (default: the registry's resume version -- LATEST, or the promoted
        version when the server's promotion gate refused LATEST or one of its ancestors)."""
        if version is None:
            version = self.registry.resume_version()
        if version is None:
            return None
        model, norm, meta = load_model(self.registry, version, self.device)
        self._adopt(model, norm, version)
        self.rl_rounds_total = max(self.rl_rounds_total, int(meta.get("metrics", {}).get("rl_rounds_total", 0)))
        self.sft_phases = max(self.sft_phases, int(meta.get("metrics", {}).get("sft_phases", 0)))
        log.info("trainer resumed v%d (%d RL rounds so far)", version, self.rl_rounds_total)
        return version

    def follow_promotion(self) -> int | None:
        """If the server's promotion gate refused the version being trained (or an ancestor of it),
        go back to the version to continue from (the promoted one); returns it, or None if nothing
        changed. Training on from a refused version would only publish its descendants, which the
        gate refuses too."""
        if self.version is None:
            return None
        refused = self.registry.refused_ancestor(self.version)
        if refused is None:
            return None
        target = self.registry.resume_version()
        if target is None or target == self.version:
            return None
        log.warning("v%d was refused by the promotion gate (refused ancestor v%d): continuing from v%d",
                    self.version, refused, target)
        return self.resume(target)

    def publish(self, kind: str, phase: str, metrics: dict) -> int:
        summary = _numbers(metrics)
        summary.update(rl_rounds_total=self.rl_rounds_total, sft_phases=self.sft_phases)
        version = publish(self.registry, self.model, self.norm, kind=kind, parent=self.version, phase=phase,
                          metrics=summary)
        self.version = version
        if kind == "full":
            self.cache.invalidate(keep=trunk_key(self.policy))
            self._version_heads.clear()
        return version

    # ------------------------------------------------------------------ behaviour log-probs
    def _heads_of(self, version: int) -> nn.Module | None:
        """The action head of a published version on the current trunk (None: another trunk)."""
        if version in self._version_heads:
            return self._version_heads[version]
        heads = None
        try:
            meta = self.registry.read_meta(version)
            if trunk_meta(self.registry, meta)["version"] == self.model.trunk_version:
                model, _, _ = load_model(self.registry, version, self.device, base=self.model)
                heads = model.heads
        except CheckpointError as e:
            log.warning("behaviour version v%s unavailable: %s", version, e)
        if len(self._version_heads) > 32:
            self._version_heads.clear()
        self._version_heads[version] = heads
        return heads

    def _on_trunk(self, d: EpisodeDecisions) -> bool:
        return len(d) > 0 and all(v >= 0 and self._heads_of(int(v)) is not None for v in set(d.versions.tolist()))

    @torch.no_grad()
    def _behaviour_logprob(self, d: EpisodeDecisions, features: torch.Tensor, states: torch.Tensor,
                           actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The log-prob of each decision under the version that acted, and its float resolution."""
        out, resolution = torch.empty(len(d)), torch.empty(len(d))
        for v in sorted(set(d.versions.tolist())):
            rows = torch.from_numpy(np.flatnonzero(d.versions == v))
            mean, log_std = HeadActor(self._heads_of(int(v)))(features[rows], states[rows])
            out[rows] = gaussian_logprob(mean, log_std, actions[rows])
            resolution[rows] = logprob_resolution(mean, log_std, actions[rows])
        return out, resolution

    # ------------------------------------------------------------------ RL
    def _tensors(self, d: EpisodeDecisions) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        features = self.cache.features(self.policy, d).to(self.device)
        states = self.norm.normalize_states(torch.from_numpy(d.states)).to(self.device)
        actions = self.norm.normalize_actions(torch.from_numpy(d.chunks)).flatten(1).to(self.device)
        return features, states, actions

    def rl_round(self, episodes: list[dict]) -> dict:
        if self.model is None:
            raise RuntimeError("no model: call bootstrap() or resume() first")
        metas = [m for m in episodes if is_rl_episode(m, self.reward_model_labels)]
        decisions = [load_decisions(self.store, m, self.model.config.chunk, self.lc.step_penalty) for m in metas]
        base = {"n_episodes": len(metas), "n_skipped_not_rl": len(episodes) - len(metas),
                "success_rate": float(np.mean([m["outcome"] == "success" for m in metas])) if metas else float("nan")}
        if self.lc.algorithm == "sac":
            metrics = {**base, **self._sac_round(decisions)}
        else:
            metrics = {**base, **self._ppo_round(decisions)}
        self.rl_rounds_total += 1
        metrics["rl_round"] = self.rl_rounds_total
        self._scalars("rl", metrics, self.rl_rounds_total)
        return metrics

    def _ppo_round(self, decisions: list[EpisodeDecisions]) -> dict:
        usable = [d for d in decisions if self._on_trunk(d)]
        skipped = len(decisions) - len(usable)
        if skipped:
            log.warning("PPO: %d episode(s) acted with a version of another trunk (before the last SFT) "
                        "or an unknown version; skipped", skipped)
        if not usable:
            return {"n_transitions": 0, "n_skipped_stale": skipped, "logprob_mismatch": 0}
        parts = []
        for d in usable:
            f, s, a = self._tensors(d)
            parts.append((f, s, a, *self._behaviour_logprob(d, f, s, a), d))
        batch = RolloutBatch(
            features=torch.cat([p[0] for p in parts]), states=torch.cat([p[1] for p in parts]),
            actions=torch.cat([p[2] for p in parts]),
            rewards=torch.cat([torch.from_numpy(p[5].rewards) for p in parts]).float(),
            dones=torch.cat([torch.from_numpy(p[5].dones) for p in parts]).float(),
            behaviour_logprob=torch.cat([p[3] for p in parts]),
            server_logprob=torch.cat([torch.from_numpy(p[5].server_logprob) for p in parts]).float(),
            same_version=torch.cat([torch.from_numpy(p[5].versions == self.version) for p in parts]),
            logprob_resolution=torch.cat([p[4] for p in parts]))
        actor, critic = HeadActor(self.model.heads), HeadCritic(self.model.heads)
        if self._ppo_opt is None:
            self._ppo_opt = torch.optim.Adam([*actor.parameters(), *critic.parameters()], lr=self.ppo_cfg.learning_rate,
                                             eps=1e-5)
        warmup = self.rl_rounds_total < self.ppo_cfg.critic_warmup_rounds
        metrics = ppo_update(actor, critic, self._ppo_opt, batch, self.ppo_cfg, warmup, self.generator)
        metrics["n_skipped_stale"] = skipped
        return metrics

    def _transitions(self, d: EpisodeDecisions) -> Transitions:
        f, s, a = self._tensors(d)
        nxt = torch.clamp(torch.arange(len(d)) + 1, max=len(d) - 1)
        return Transitions(features=f, states=s, actions=a, rewards=torch.from_numpy(d.rewards).float(),
                           next_features=f[nxt], next_states=s[nxt], dones=torch.from_numpy(d.dones).float())

    def _sac_round(self, decisions: list[EpisodeDecisions]) -> dict:
        key = trunk_key(self.policy)
        if key != self._sac_trunk:  # new backbone: every buffered feature is stale, rebuild from the store
            self._sac_buffers.clear()
            self._sac_trunk = key
            old = [m for m in self.store.list_episodes(source="online") if is_rl_episode(m, self.reward_model_labels)]
            for meta in old:
                d = load_decisions(self.store, meta, self.model.config.chunk, self.lc.step_penalty)
                if len(d):
                    self._sac_buffers[f"{meta['robot_id']}/{meta['episode_id']}"] = self._transitions(d)
            self._sac_demo = None
        checks = []
        for d in decisions:
            if len(d):
                self._sac_buffers[f"{d.meta['robot_id']}/{d.meta['episode_id']}"] = self._transitions(d)
                if self._on_trunk(d):
                    f, s, a = self._tensors(d)
                    checks.append((*self._behaviour_logprob(d, f, s, a), torch.from_numpy(d.server_logprob).float(),
                                   torch.from_numpy(d.versions == self.version)))
        if getattr(self, "_sac_demo", None) is None:
            demos = [load_decisions(self.store, m, self.model.config.chunk, self.lc.step_penalty,
                                    expert_stride=self.model.config.chunk) for m in expert_demos(self.store)]
            self._sac_demo = Transitions.cat([self._transitions(d) for d in demos if len(d)]) if demos else None
        if self._sac is None:
            self._sac = SACLearner(HeadActor(self.model.heads), HeadTwinQ(self.model.heads), self.model.chunk_dim,
                                   self.sac_cfg)
        online = Transitions.cat(list(self._sac_buffers.values())) if self._sac_buffers else None
        n_updates = self.sac_cfg.updates_per_episode * max(1, len(decisions))
        warmup = self.rl_rounds_total < self.lc.critic_warmup_rounds  # critic only: the actor waits
        metrics = self._sac.train(self._sac_demo, online, n_updates, self.generator, update_actor=not warmup)
        metrics["critic_warmup"] = warmup
        if checks:
            from learner.rl.ppo import check_logprobs

            n = sum(len(c[0]) for c in checks)
            metrics.update(check_logprobs(RolloutBatch(
                features=torch.zeros(n, 0), states=torch.zeros(n, 0), actions=torch.zeros(n, 0),
                rewards=torch.zeros(n), dones=torch.zeros(n), behaviour_logprob=torch.cat([c[0] for c in checks]),
                server_logprob=torch.cat([c[2] for c in checks]), same_version=torch.cat([c[3] for c in checks]),
                logprob_resolution=torch.cat([c[1] for c in checks])),
                self.ppo_cfg.logprob_tolerance))
        metrics["n_transitions"] = sum(len(d) for d in decisions)
        return metrics

    # ------------------------------------------------------------------ SFT
    def has_sft_data(self) -> bool:
        """SFT has something to train on: an expert demo or a successful episode with steps."""
        return any(m.get("n_steps", m.get("n_stored_steps", 1)) for m in sft_episodes(self.store))

    def has_demos(self) -> bool:
        """Stage 0 can run: demos in the store, or the mock, whose scripted expert records them."""
        return bool(expert_demos(self.store)) or self.config.robot.backend == "mock"

    def sft_phase(self, progress: bool = True, on_progress: Callable[[float], None] | None = None) -> dict:
        if self.model is None:
            raise RuntimeError("no model: call bootstrap() or resume() first")
        metas = sft_episodes(self.store, reward_model_labels=self.reward_model_labels)
        lc = self.lc
        cfg = SFTConfig(steps=lc.sft_steps, batch_size=lc.sft_batch_size, lr=lc.sft_lr, loss=lc.sft_loss,
                        eval_fraction=lc.sft_eval_fraction, eval_every=max(1, lc.sft_steps // 4),
                        seed=lc.seed + self.sft_phases + 1, warmup_steps=min(20, max(1, lc.sft_steps // 10)))
        data = build_sft_data(self.store, metas, self.model.config.chunk, cfg.eval_fraction, lc.seed)
        if not data.train:  # nothing to consolidate (no demos, no successes): keep the model as it is
            log.warning("SFT skipped: no expert demos or successful episodes in the store")
            return {"skipped": 1.0, "n_online_successes": 0.0, "n_expert": 0.0}
        metrics = train_sft(self.model, self.norm, data, cfg, mode="lora", progress=progress,
                            on_step=self._on_step("sft", on_progress), desc="sft")
        self.sft_phases += 1
        self.cache.invalidate()  # the trunk changed: every cached feature is stale
        self._version_heads.clear()
        self._sac_trunk = None
        metrics = {k: v for k, v in metrics.items() if k != "loss_curve"}
        metrics["n_online_successes"] = sum(1 for m in metas if m.get("source") != "expert")
        metrics["n_expert"] = sum(1 for m in metas if m.get("source") == "expert")
        self._scalars("sft", metrics, self.sft_phases)
        return metrics

    # ------------------------------------------------------------------ TensorBoard
    def _scalars(self, prefix: str, metrics: dict, step: int) -> None:
        if self.writer is None:
            return
        for k, v in _numbers(metrics).items():
            self.writer.add_scalar(f"trainer/{prefix}/{k}", v, step)
        self.writer.flush()

    def _on_step(self, prefix: str, on_progress: Callable[[float], None] | None):
        """train_sft's per-step callback: the loss to TensorBoard, the fraction done to the caller."""
        base = self.sft_phases * 100_000

        def on_step(step: int, values: dict) -> None:
            if self.writer is not None and step % 10 == 0:
                self.writer.add_scalar(f"trainer/{prefix}/loss_step", values["loss"], base + step)
            if on_progress is not None:
                on_progress(float(values["progress"]))

        return on_step
