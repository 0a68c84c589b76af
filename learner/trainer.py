"""The Trainer: the learning half of the learner. It holds the model and offers the steps a recipe
(learner/recipes/) is made of; the phase loop (learner/loop.py) and the benches run the recipe.

    trainer = Trainer(config, run_dir, log=SummaryWriter(...))
    trainer.bootstrap() | trainer.resume()          -> version
    metrics = trainer.rl_round(metas, "sac"); trainer.publish("head", "rl", metrics)     x rounds
    metrics = trainer.sft_phase();            trainer.publish("full", "sft", metrics)

* RL rounds run the algorithm the recipe names behind one small interface (learner/rl/base.py):
  head-only PPO (learner/rl/ppo.py) or SAC from demonstrations (learner/rl/sac.py) on cached
  features (learner/features.py), or PPO on the whole model (learner/rl/ppo_whole.py). The Trainer
  does not know which one runs: it hands each round's episodes over as a `RoundData` (below) and
  counts the critic warm-up rounds.
* The behaviour log-prob of a decision is recomputed under the head VERSION that acted (loaded from
  the registry, sharing the trunk); the algorithms check it against what the server returned (a
  mismatch is logged as an error and reported as `logprob_mismatch`, see rl/gaussian.py for why).
* SFT (learner/sft.py) trains LoRA + head on expert demos ∪ successful episodes and invalidates the
  feature cache; Stage 0 (learner/bootstrap.py) trains the tiny model from the demos.
* A recipe part that trains the trunk itself (RECAP's conditioned SFT, learner/recap/) calls
  `sft_config()` and `step_reporter()` for the SFT settings and progress, and `trunk_trained()`
  after it, which may set what the next versions carry in their metadata (`run_time`: RECAP's
  advantage conditioning; `policy` serves the model the way the server will, vla/advantage.py).
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from torch import nn

from episodes.durable import write_atomic, write_json_atomic
from episodes.store import EpisodeStore, episode_key
from learner.bootstrap import expert_demos, run_bootstrap
from learner.dataset import EpisodeDecisions, intervention_decisions, load_decisions, sft_episodes
from learner.episode_rules import has_interventions, is_rl_episode, reward_model_labels_trusted
from learner.features import FeatureCache, trunk_key
from learner.metrics import scalar_metrics
from learner.rl.algorithms import algorithm_config, make_algorithm
from learner.rl.base import EpisodeTensors, RLAlgorithm
from learner.rl.gaussian import gaussian_logprob, logprob_resolution
from learner.sft import SFTConfig, build_sft_data, train_sft
from vla.advantage import META_KEY as ADVANTAGE_META_KEY
from vla.model import HeadActor, VLAModel
from vla.normalization import Normalizer
from vla.policy import Policy
from vla.registry import CheckpointError, CheckpointRegistry, TrustedSource, load_model, publish, trunk_meta

log = logging.getLogger(__name__)

RL_STATE_FILE = "rl_state.pt"


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
        self.reward_model_labels = reward_model_labels_trusted(config)
        self.generator = torch.Generator().manual_seed(self.lc.seed)
        # each RL algorithm's hyperparameters, made on first use (a bench may change one before a round)
        self._rl_configs: dict[str, object] = {}
        # what the published versions need at run time (advantage conditioning once RECAP trained)
        self.run_time: dict = {}
        self._labels_to_stamp: Path | None = None
        self.algorithm: RLAlgorithm | None = None  # built on the first RL round, on the current model
        self.algorithm_name: str | None = None
        # the algorithm's own state (optimizer moments, SAC's target critics and temperature) saved at
        # every publish, so a restarted learner continues the algorithm, not only the weights
        self.rl_state_path = self.run_dir / RL_STATE_FILE
        self._rl_state_to_restore: dict | None = None
        self._version_heads: dict[int, nn.Module] = {}
        # a recipe part's reward transform (progress shaping) while an RL round runs: every decision
        # set the round loads (its episodes, SAC's replay and demos) goes through it
        self._reward_transform: Callable[[EpisodeDecisions], EpisodeDecisions] | None = None

    # ------------------------------------------------------------------ model lifecycle
    def has_policy(self) -> bool:
        return self.registry.latest() is not None

    @property
    def policy(self) -> Policy:
        """The learner's current model as a Policy (same objects: reflects unpublished updates)."""
        if self.model is None:
            raise RuntimeError("no model: call bootstrap() or resume() first")
        return Policy(self.model, self.norm, self.version if self.version is not None else -1, meta=self.run_time)

    def _adopt(self, model: VLAModel, norm: Normalizer, version: int) -> None:
        self.model, self.norm, self.version = model, norm, version
        self.algorithm = self.algorithm_name = None
        self._rl_state_to_restore = None
        self._version_heads.clear()

    def bootstrap(self, progress: bool = True, on_progress: Callable[[float], None] | None = None) -> int:
        result = run_bootstrap(self.config, self.registry, self.store, progress=progress,
                               on_step=self.step_reporter("bootstrap", on_progress))
        self._adopt(result.model, result.norm, result.version)
        self.cache.invalidate(keep=trunk_key(self.policy))
        self.scalars("bootstrap", result.metrics, result.version)
        return result.version

    def resume(self, version: int | None = None) -> int | None:
        """Load ``version`` (default: the registry's resume version -- LATEST, or the promoted
        version when the server's promotion gate refused LATEST or one of its ancestors)."""
        if version is None:
            version = self.registry.resume_version()
        if version is None:
            return None
        model, norm, meta = load_model(self.registry, version, self.device,
                                       trusted=TrustedSource.of(self.config.model))
        self._adopt(model, norm, version)
        self.run_time = {ADVANTAGE_META_KEY: meta[ADVANTAGE_META_KEY]} if ADVANTAGE_META_KEY in meta else {}
        self._rl_state_to_restore = self._read_rl_state(version)
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
        summary = scalar_metrics(metrics)
        summary.update(rl_rounds_total=self.rl_rounds_total, sft_phases=self.sft_phases)
        version = publish(self.registry, self.model, self.norm, kind=kind, parent=self.version, phase=phase,
                          metrics=summary, run_time=self.run_time)
        self.version = version
        if self._labels_to_stamp is not None:  # the labels name the version trained on them
            record = json.loads(self._labels_to_stamp.read_text())
            record["published_version"] = version
            write_json_atomic(self._labels_to_stamp, record)
            self._labels_to_stamp = None
        if self.algorithm is not None:
            self._write_rl_state(version)
        if kind == "full":
            self.cache.invalidate(keep=trunk_key(self.policy))
            self._version_heads.clear()
        return version

    def _write_rl_state(self, version: int) -> None:
        buf = io.BytesIO()
        torch.save({"version": version, "algorithm": self.algorithm_name, "state": self.algorithm.state_dict()}, buf)
        write_atomic(self.rl_state_path, buf.getvalue())

    def _read_rl_state(self, version: int) -> dict | None:
        """The saved algorithm state (with the name of its algorithm) if it was saved with `version`
        (a rollback to an older version starts the algorithm afresh; so does another algorithm, when
        the first round builds one)."""
        if not self.rl_state_path.exists():
            return None
        try:
            saved = torch.load(self.rl_state_path, map_location=self.device, weights_only=True)
        except Exception as e:  # noqa: BLE001 - a damaged file costs the optimizer state, not the run
            log.warning("ignoring %s: %s", self.rl_state_path, e)
            return None
        if saved.get("version") != version:
            return None
        return saved

    # ------------------------------------------------------------------ behaviour log-probs
    def _heads_of(self, version: int) -> nn.Module | None:
        """The action head of a published version on the current trunk (None: another trunk)."""
        if version in self._version_heads:
            return self._version_heads[version]
        heads = None
        try:
            meta = self.registry.read_meta(version)
            if trunk_meta(self.registry, meta)["version"] == self.model.trunk_version:
                model, _, _ = load_model(self.registry, version, self.device, base=self.model,
                                         trusted=TrustedSource.of(self.config.model))
                heads = model.heads
        except CheckpointError as e:
            log.warning("behaviour version v%s unavailable: %s", version, e)
        if len(self._version_heads) > 32:
            self._version_heads.clear()
        self._version_heads[version] = heads
        return heads

    def acted_on_trunk(self, d: EpisodeDecisions) -> bool:
        """Every head version that acted in `d` sits on the current trunk."""
        return len(d) > 0 and all(v >= 0 and self._heads_of(int(v)) is not None for v in set(d.versions.tolist()))

    @torch.no_grad()
    def behaviour_logprob(self, d: EpisodeDecisions, t: EpisodeTensors) -> tuple[torch.Tensor, torch.Tensor]:
        """The log-prob of each decision under the version that acted, and its float resolution."""
        out, resolution = torch.empty(len(d)), torch.empty(len(d))
        for v in sorted(set(d.versions.tolist())):
            rows = torch.from_numpy(np.flatnonzero(d.versions == v))
            mean, log_std = HeadActor(self._heads_of(int(v)))(t.features[rows], t.states[rows])
            out[rows] = gaussian_logprob(mean, log_std, t.actions[rows])
            resolution[rows] = logprob_resolution(mean, log_std, t.actions[rows])
        return out, resolution

    # ------------------------------------------------------------------ RL
    def _tensors(self, d: EpisodeDecisions) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(features, normalized states, normalized flattened chunks) of `d` under the current trunk."""
        features = self.cache.features(self.policy, d).to(self.device)
        states = self.norm.normalize_states(torch.from_numpy(d.states)).to(self.device)
        actions = self.norm.normalize_actions(torch.from_numpy(d.chunks)).flatten(1).to(self.device)
        return features, states, actions

    def episode_tensors(self, d: EpisodeDecisions) -> EpisodeTensors:
        """`d` under the current trunk, with its rewards and the server's log-probs."""
        features, states, actions = self._tensors(d)
        return EpisodeTensors(
            key=episode_key(d.meta), features=features, states=states, actions=actions,
            rewards=torch.from_numpy(d.rewards).float(), dones=torch.from_numpy(d.dones).float(),
            server_logprob=torch.from_numpy(d.server_logprob).float(),
            same_version=torch.from_numpy(d.versions == self.version))

    def decisions(self, metas: list[dict], expert_stride: int | None = None) -> list[EpisodeDecisions]:
        """The stored episodes `metas` as decisions, with the deployment's rewards."""
        out = [load_decisions(self.store, m, self.model.config.chunk, self.lc.step_penalty,
                              expert_stride=expert_stride, takeover_reward=self.lc.takeover_reward) for m in metas]
        return out if self._reward_transform is None else [self._reward_transform(d) for d in out]

    def rl_config(self, algorithm: str):
        """The hyperparameters RL algorithm `algorithm` runs with (the same object every round)."""
        if algorithm not in self._rl_configs:
            self._rl_configs[algorithm] = algorithm_config(algorithm, self.lc)
        return self._rl_configs[algorithm]

    def _algorithm_for(self, name: str) -> RLAlgorithm:
        """The RL algorithm `name` on the current model, built on its first round (with the state
        saved with the version it resumed from, if that was the same algorithm's)."""
        if self.algorithm is None or self.algorithm_name != name:
            self.algorithm = make_algorithm(name, self.rl_config(name), self.model, self.generator)
            self.algorithm_name = name
            saved, self._rl_state_to_restore = self._rl_state_to_restore, None
            if saved is not None and saved.get("algorithm") == name:
                log.info("restoring the %s state saved with v%d", name, saved["version"])
                self.algorithm.load_state_dict(saved["state"])
        return self.algorithm

    def rl_round(self, episodes: list[dict], algorithm: str | None = None,
                 reward_transform: Callable[[EpisodeDecisions], EpisodeDecisions] | None = None) -> dict:
        """One round of RL algorithm `algorithm` (learner/rl/algorithms.py; default: the one
        `learner.algorithm` names) on `episodes` (metas; non-RL ones are skipped); `reward_transform`
        rewrites the rewards of every decision set the round loads (None: the deployment's sparse ones)."""
        if self.model is None:
            raise RuntimeError("no model: call bootstrap() or resume() first")
        self._reward_transform = reward_transform
        try:
            return self._rl_round(episodes, algorithm)
        finally:
            self._reward_transform = None

    def _rl_round(self, episodes: list[dict], algorithm: str | None) -> dict:
        rl = self._algorithm_for(algorithm or self.lc.algorithm)
        metas = [m for m in episodes if is_rl_episode(m, self.reward_model_labels)]
        data = TrainerRound(self, self.decisions(metas))
        warmup = self.rl_rounds_total < self.lc.critic_warmup_rounds
        stats = rl.warm_up(data) if warmup else rl.update(data)
        metrics = {"n_episodes": len(metas), "n_skipped_not_rl": len(episodes) - len(metas),
                   "success_rate": float(np.mean([m["outcome"] == "success" for m in metas])) if metas
                   else float("nan"), **stats}
        self.rl_rounds_total += 1
        metrics["rl_round"] = self.rl_rounds_total
        self.scalars("rl", metrics, self.rl_rounds_total)
        return metrics

    # ------------------------------------------------------------------ SFT
    def has_sft_data(self) -> bool:
        """SFT has something to train on: an expert demo or a successful episode with steps."""
        return any(m.get("n_steps", m.get("n_stored_steps", 1))
                   for m in sft_episodes(self.store, reward_model_labels=self.reward_model_labels))

    def has_demos(self) -> bool:
        """Stage 0 can run: demos in the store, or the mock, whose scripted expert records them; with
        learner.bootstrap.min_demos, that many (recorded by teleop) and nothing scripted."""
        needed = self.config.learner.bootstrap.min_demos
        if needed:
            return len(expert_demos(self.store)) >= needed
        return bool(expert_demos(self.store)) or self.config.robot.backend == "mock"

    def sft_phase(self, progress: bool = True, on_progress: Callable[[float], None] | None = None) -> dict:
        if self.model is None:
            raise RuntimeError("no model: call bootstrap() or resume() first")
        metas = sft_episodes(self.store, reward_model_labels=self.reward_model_labels)
        lc = self.lc
        cfg = self.sft_config()
        data = build_sft_data(self.store, metas, self.model.config.chunk, cfg.eval_fraction, lc.seed,
                              lc.sft.intervention_repeat)
        if not data.train:  # nothing to consolidate (no demos, no successes): keep the model as it is
            log.warning("SFT skipped: no expert demos or successful episodes in the store")
            return {"skipped": 1.0, "n_online_successes": 0.0, "n_expert": 0.0}
        metrics = train_sft(self.model, self.norm, data, cfg, mode="lora", progress=progress,
                            on_step=self.step_reporter("sft", on_progress), desc="sft")
        self.trunk_trained()
        metrics = {k: v for k, v in metrics.items() if k != "loss_curve"}
        metrics["n_online_successes"] = sum(1 for m in metas if m.get("source") != "expert"
                                            and m.get("outcome") == "success")
        metrics["n_intervention_episodes"] = sum(1 for m in metas if has_interventions(m))
        metrics["n_intervention_steps"] = sum(int(m.get("intervention_steps") or 0) for m in metas)
        metrics["n_expert"] = sum(1 for m in metas if m.get("source") == "expert")
        self.scalars("sft", metrics, self.sft_phases)
        return metrics

    def sft_config(self) -> SFTConfig:
        """The SFT phase's optimizer and steps (the learner's sft settings); a new seed per phase."""
        lc = self.lc
        return SFTConfig(steps=lc.sft.steps, batch_size=lc.sft.batch_size, lr=lc.sft.lr, loss=lc.sft.loss,
                         eval_fraction=lc.sft.eval_fraction, eval_every=max(1, lc.sft.steps // 4),
                         seed=lc.seed + self.sft_phases + 1, warmup_steps=min(20, max(1, lc.sft.steps // 10)))

    def trunk_trained(self, run_time: dict | None = None, labels: Path | None = None) -> None:
        """An SFT-like phase trained the trunk (unpublished): every cached feature and loaded head
        version is stale. `run_time`: what the next versions need to be served (RECAP's advantage
        conditioning; {} for an ordinary policy; None keeps it); `labels`: a file the next publish
        stamps with its version."""
        self.sft_phases += 1
        self.cache.invalidate()
        self._version_heads.clear()
        if run_time is not None:
            self.run_time = run_time
        if labels is not None:
            self._labels_to_stamp = labels

    # ------------------------------------------------------------------ TensorBoard
    def scalars(self, prefix: str, metrics: dict, step: int) -> None:
        """`metrics` to TensorBoard under trainer/<prefix>/ (nothing without a writer)."""
        if self.writer is None:
            return
        for k, v in scalar_metrics(metrics).items():
            self.writer.add_scalar(f"trainer/{prefix}/{k}", v, step)
        self.writer.flush()

    def step_reporter(self, prefix: str, on_progress: Callable[[float], None] | None):
        """train_sft's per-step callback: the loss to TensorBoard, the fraction done to the caller."""
        base = self.sft_phases * 100_000

        def on_step(step: int, values: dict) -> None:
            if self.writer is not None and step % 10 == 0:
                self.writer.add_scalar(f"trainer/{prefix}/loss_step", values["loss"], base + step)
            if on_progress is not None:
                on_progress(float(values["progress"]))

        return on_step


class TrainerRound:
    """learner/rl/base.py's RoundData: one round's episodes, and the Trainer's model, store and feature
    cache to turn any episode into tensors under the current trunk."""

    def __init__(self, trainer: Trainer, episodes: list[EpisodeDecisions]):
        self._trainer = trainer
        self.episodes = episodes

    @property
    def norm(self) -> Normalizer:
        return self._trainer.norm

    @cached_property
    def trunk(self) -> str:
        return trunk_key(self._trainer.policy)

    def acted_on_trunk(self, d: EpisodeDecisions) -> bool:
        return self._trainer.acted_on_trunk(d)

    def tensors(self, d: EpisodeDecisions) -> EpisodeTensors:
        return self._trainer.episode_tensors(d)

    def behaviour_logprob(self, d: EpisodeDecisions, t: EpisodeTensors) -> tuple[torch.Tensor, torch.Tensor]:
        return self._trainer.behaviour_logprob(d, t)

    def key(self, d: EpisodeDecisions) -> str:
        return episode_key(d.meta)

    def stored_online(self, exclude: frozenset[str] = frozenset()) -> list[EpisodeDecisions]:
        """Every stored RL episode but those named in `exclude` (e.g. this round's, already loaded)."""
        trainer = self._trainer
        return trainer.decisions([m for m in trainer.store.list_episodes(source="online")
                                   if is_rl_episode(m, trainer.reward_model_labels) and episode_key(m) not in exclude])

    def demos(self) -> list[EpisodeDecisions]:
        trainer = self._trainer
        return trainer.decisions(expert_demos(trainer.store), expert_stride=trainer.model.config.chunk)

    def interventions(self, d: EpisodeDecisions) -> list[EpisodeDecisions]:
        return intervention_decisions(d, stride=self._trainer.model.config.chunk)
