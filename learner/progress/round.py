"""The progress model as a recipe part: refitted before every RL round, its shaping on the round's rewards.

    part = ProgressShaping(lc.progress)           # learner/recipes/registry.py, when progress.enabled
    metrics = part.rl_round(trainer, metas, "sac")

Before the round it refits the model on the store (``ProgressModelTrainer``: only when the trainable
episodes or the trunk changed; a few CPU seconds of ridge on the cached features), publishes
``runs/<run>/progress_model.json`` with its held-out check, then runs the round with every decision
set the round loads (its episodes, SAC's replay and demos) shaped per task as ``shaping_decision``
allows: r' = r + scale * (gamma * Phi(s') - Phi(s)), Phi the predicted progress. A model that fails
its check, or a task with no demo and no success, keeps the sparse reward; the round's metrics and
the log say how many episodes were shaped and why the others were not.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from learner.progress.quality import QualityConfig
from learner.progress.shaping import shape_decisions, shaping_decision
from learner.progress.trainer import ProgressModelTrainer, ProgressTrainerConfig

log = logging.getLogger(__name__)


def trainer_config(section, reward_model_labels: bool) -> ProgressTrainerConfig:
    """The fit's settings from the deployment's `learner.progress` section."""
    quality = QualityConfig(min_voc=section.min_voc, min_r2=section.min_r2, min_episodes=section.min_held_out)
    return ProgressTrainerConfig(quality=quality, held_out_every=section.held_out_every,
                                 reward_model_labels=reward_model_labels)


class RewardShaper:
    """One round's transform of decision sets: shaped where the report allows, counted either way."""

    def __init__(self, trainer, fitter: ProgressModelTrainer, gamma: float, scale: float):
        self.trainer, self.model, self.report = trainer, fitter.model, fitter.report
        self.gamma, self.scale = gamma, scale
        self.shaped = self.sparse = 0
        self.why_not: dict[str, str] = {}  # task -> why its rewards stayed sparse
        self.sparse_sum = self.shaped_sum = 0.0  # the rewards before and after, over the shaped sets

    def __call__(self, d):
        task = str(d.meta.get("task") or "-")
        use, why = shaping_decision(task, self.report)
        if not use or not len(d):
            self.sparse += 1
            if not use:
                self.why_not[task] = why
            return d
        policy = self.trainer.policy
        features = self.trainer.cache.features(policy, d).numpy()
        phi = self.model.predict(features, np.asarray(d.states, np.float64), [d.instruction] * len(d))
        rewards = shape_decisions(d.rewards, d.dones, phi, self.gamma, True, self.scale).astype(np.float32)
        self.shaped += 1
        self.sparse_sum += float(np.sum(d.rewards))
        self.shaped_sum += float(np.sum(rewards))
        return dataclasses.replace(d, rewards=rewards)

    def metrics(self) -> dict:
        return {"progress_shaped_sets": self.shaped, "progress_sparse_sets": self.sparse,
                "progress_reward_sum_sparse": self.sparse_sum, "progress_reward_sum_shaped": self.shaped_sum}


class ProgressShaping:
    """The part an iRe-VLA recipe's RL round holds when `learner.progress.enabled`."""

    def __init__(self, section):
        self.section = section
        self._fitters: dict[str, ProgressModelTrainer] = {}  # per run dir (a bench runs several trainers)

    def fitter(self, trainer) -> ProgressModelTrainer:
        key = str(trainer.run_dir)
        if key not in self._fitters:
            cfg = trainer_config(self.section, trainer.reward_model_labels)
            self._fitters[key] = ProgressModelTrainer(trainer.run_dir, cfg)
        return self._fitters[key]

    def refit(self, trainer) -> ProgressModelTrainer:
        fitter = self.fitter(trainer)
        fitter.refit_if_needed(trainer.store.list_episodes(), trainer.store, trainer.cache, trainer.policy)
        return fitter

    def rl_round(self, trainer, metas: list[dict], algorithm: str) -> dict:
        fitter = self.refit(trainer)
        quality = fitter.report.get("quality") or {}
        usable = fitter.model is not None and bool(quality.get("usable"))
        shaper = None
        if self.section.shaping:
            gamma = self.section.gamma or trainer.rl_config(algorithm).gamma
            shaper = RewardShaper(trainer, fitter, gamma, self.section.scale)
        metrics = trainer.rl_round(metas, algorithm, reward_transform=shaper)
        metrics["progress_model_usable"] = float(usable)
        if quality.get("voc") is not None:
            metrics["progress_voc"] = float(quality["voc"])
        if shaper is not None:
            metrics.update(shaper.metrics())
            if shaper.why_not:
                log.info("progress shaping: %d decision sets shaped, %d sparse (%s)", shaper.shaped, shaper.sparse,
                         "; ".join(sorted(set(shaper.why_not.values()))))
            metrics["progress_sparse_reasons"] = sorted(set(shaper.why_not.values()))
        return metrics


def progress_status(run_dir, metrics: dict) -> dict:
    """status.json's `progress_model`: the published model's check (usable, why, VOC, the tasks with
    no demo and no success) and the last RL round's shaping (sets shaped, kept sparse, and why)."""
    from vla.progress_model import read_published

    _, report = read_published(run_dir)
    report = report or {}
    quality = report.get("quality") or {}
    return {"state": report.get("state", "no progress model"), "usable": bool(quality.get("usable")),
            "reason": quality.get("reason", report.get("state", "")), "voc": quality.get("voc"),
            "voc_per_task": quality.get("voc_per_task", {}), "sparse_tasks": report.get("sparse_tasks", []),
            "shaped_sets": metrics.get("progress_shaped_sets"), "sparse_sets": metrics.get("progress_sparse_sets"),
            "sparse_reasons": metrics.get("progress_sparse_reasons", [])}
