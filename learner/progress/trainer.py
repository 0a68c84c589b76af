"""Fitting the progress model on the store, checking it on held-out episodes, publishing it.

Like the reward model's trainer (``learner.reward_model``): refitted from scratch whenever the set of
trainable episodes or the trunk changed (a few CPU seconds: ridge on cached features), published
atomically as ``runs/<run>/progress_model.json`` = {"model": ..., "report": ...} for whoever applies
it. The report holds the held-out quality (VOC, calibration, the usable verdict and its reason) and
per task the demos, successes and failures it learnt from, so a task with no demos and no successes
is named as sparse.

Episodes it learns from: expert demos (every H-th step, the rhythm of a chunk), and online or eval
episodes labelled success or failure (a reward-model label only with ``reward_model_labels``):
their decision frames, plus the operator's segments of an episode an operator took over.
Held out for the check: every ``held_out_every``-th episode of each task and outcome (by end time);
the published model is then refitted on all of them.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from episodes.store import EpisodeStore, episode_key, write_json_atomic
from learner.dataset import EpisodeDecisions, expert_decisions, intervention_decisions, online_decisions
from learner.episode_rules import has_interventions, is_trainable
from learner.features import FeatureCache, trunk_key
from learner.progress.quality import HeldOutEpisode, QualityConfig, quality_report
from learner.progress.shaping import task_data
from learner.progress.targets import TargetConfig, episode_step_targets
from vla.policy import Policy
from vla.progress_model import PROGRESS_MODEL_FILE, ProgressModel, ProgressModelConfig, fit

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ProgressTrainerConfig:
    model: ProgressModelConfig = field(default_factory=ProgressModelConfig)
    targets: TargetConfig = field(default_factory=TargetConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    held_out_every: int = 4
    """Every k-th episode of each (task, outcome) is held out for the quality check."""
    reward_model_labels: bool = False
    """Learn from reward-model labels too (only where the deployment trusts them: mode "auto")."""

    def __post_init__(self) -> None:
        if self.held_out_every < 2:
            raise ValueError(f"held_out_every must be >= 2, got {self.held_out_every}")


@dataclass
class EpisodeRows:
    """One episode's decision rows: what the model sees and what it is taught."""
    meta: dict
    steps: list[int]
    features: np.ndarray
    states: np.ndarray
    instructions: list[str]
    targets: np.ndarray

    @property
    def success(self) -> bool:
        return self.meta.get("outcome") == "success"

    @property
    def task(self) -> str:
        return str(self.meta.get("task") or "-")


def is_progress_episode(meta: dict, reward_model_labels: bool = False) -> bool:
    return is_trainable(meta, reward_model_labels) and meta.get("source", "online") in ("expert", "online", "eval")


def episode_decisions(meta: dict, episode, chunk: int) -> list[EpisodeDecisions]:
    """The decision sets of an episode whose frames the model is fitted on."""
    if not any(s.get("action_chunk") is not None for s in episode.steps):  # a demo
        return [expert_decisions(meta, episode, chunk, stride=chunk)]
    d = online_decisions(meta, episode, chunk)
    return [d, *intervention_decisions(d, chunk)] if has_interventions(meta) else [d]


def episode_rows(store: EpisodeStore, cache: FeatureCache, policy: Policy, meta: dict,
                 cfg: TargetConfig) -> EpisodeRows | None:
    """The episode's rows in step order (None when it has no decision with a frame)."""
    episode = store.load(meta["robot_id"], meta["episode_id"])
    if not episode.steps:
        return None
    targets = episode_step_targets(episode.steps, meta.get("outcome") == "success", cfg)
    index = {int(s["step"]): i for i, s in enumerate(episode.steps)}
    rows: dict[int, tuple] = {}
    for d in episode_decisions(meta, episode, policy.spec.chunk):
        if not len(d):
            continue
        feats = cache.features(policy, d).numpy()
        for i, step in enumerate(d.steps):
            rows.setdefault(step, (feats[i], d.states[i], d.instruction))
    if not rows:
        return None
    steps = sorted(rows)
    return EpisodeRows(meta, steps, np.stack([rows[s][0] for s in steps]),
                       np.stack([rows[s][1] for s in steps]).astype(np.float64),
                       [rows[s][2] for s in steps], np.asarray([targets[index[s]] for s in steps]))


def held_out_split(episodes: list[EpisodeRows], every: int) -> tuple[list[EpisodeRows], list[EpisodeRows]]:
    """(fit, held out): every `every`-th episode of each (task, outcome) group, in end-time order."""
    groups: dict[tuple[str, bool], list[EpisodeRows]] = {}
    for e in sorted(episodes, key=lambda e: (e.meta.get("finished", 0), episode_key(e.meta))):
        groups.setdefault((e.task, e.success), []).append(e)
    fit_part, held = [], []
    for group in groups.values():
        for i, e in enumerate(group):
            (held if i % every == every - 1 else fit_part).append(e)
    return fit_part, held


def fit_rows(episodes: list[EpisodeRows], cfg: ProgressModelConfig, key: str) -> ProgressModel:
    return fit(np.concatenate([e.features for e in episodes]), np.concatenate([e.states for e in episodes]),
               [t for e in episodes for t in e.instructions], np.concatenate([e.targets for e in episodes]),
               cfg, trunk_key=key)


def predict_rows(model: ProgressModel, e: EpisodeRows) -> np.ndarray:
    return model.predict(e.features, e.states, e.instructions)


def check_on_held_out(episodes: list[EpisodeRows], cfg: ProgressTrainerConfig, key: str) -> dict:
    """Fit on all but the held-out episodes, and the quality report of its held-out predictions."""
    fit_part, held = held_out_split(episodes, cfg.held_out_every)
    if not fit_part or not held:
        return {"usable": False, "reason": f"{len(episodes)} episodes are too few to hold some out",
                "voc": None, "voc_per_task": {}, "min_voc": cfg.quality.min_voc, "held_out_episodes": 0}
    model = fit_rows(fit_part, cfg.model, key)
    return quality_report([HeldOutEpisode(e.task, e.success, predict_rows(model, e), e.targets,
                                          int(e.meta.get("n_steps") or 0)) for e in held], cfg.quality)


class ProgressModelTrainer:
    """Refits, checks and publishes the progress model when the trainable episodes or the trunk changed."""

    def __init__(self, run_dir: str | Path, cfg: ProgressTrainerConfig | None = None):
        self.run_dir = Path(run_dir)
        self.cfg = cfg or ProgressTrainerConfig()
        self.path = self.run_dir / PROGRESS_MODEL_FILE
        self.model: ProgressModel | None = None
        self.report: dict = {"state": "waiting for data"}
        self._fitted_on: tuple[str, frozenset[str]] | None = None
        self._rows: dict[tuple[str, str], EpisodeRows | None] = {}  # (trunk, episode:outcome) -> rows

    def refit_if_needed(self, metas: list[dict], store: EpisodeStore, cache: FeatureCache,
                        policy: Policy) -> dict | None:
        """The new report after a refit (or a change that still leaves nothing to fit); None when
        neither the trainable episodes nor the trunk changed."""
        metas = [m for m in metas if is_progress_episode(m, self.cfg.reward_model_labels)]
        key = trunk_key(policy)
        names = frozenset(f"{episode_key(m)}:{m['outcome']}" for m in metas)
        if self._fitted_on == (key, names):
            return None
        self._fitted_on = (key, names)
        self._rows = {k: v for k, v in self._rows.items() if k[0] == key}  # another trunk's rows are stale
        tasks = task_data(metas)
        sparse = sorted(t for t, d in tasks.items() if not (d["demos"] or d["successes"]))
        if len(sparse) == len(tasks):
            self.report = {"state": "waiting for data: no task has a demo or a success yet", "tasks": tasks,
                           "sparse_tasks": sparse}
            write_json_atomic(self.path, {"model": None, "report": self.report})
            return self.report
        t0 = time.time()
        episodes = [r for r in (self._episode_rows(store, cache, policy, m, key) for m in metas) if r is not None]
        if not episodes:
            self.report = {"state": "waiting for data: no episode has a decision frame", "tasks": tasks,
                           "sparse_tasks": sparse}
            write_json_atomic(self.path, {"model": None, "report": self.report})
            return self.report
        quality = check_on_held_out(episodes, self.cfg, key)
        self.model = fit_rows(episodes, self.cfg.model, key)
        self.report = {"state": "fitted", "trunk_key": key, "n_episodes": len(episodes),
                       "n_rows": self.model.n_rows, "tasks": tasks, "sparse_tasks": sparse,
                       "quality": quality, "fit_s": time.time() - t0, "fitted": time.time()}
        write_json_atomic(self.path, {"model": self.model.to_json(), "report": self.report})
        log.info("progress model refitted on %d episodes (%d rows): held-out VOC %s, %s; sparse tasks: %s",
                 len(episodes), self.model.n_rows, quality.get("voc"), quality["reason"], sparse or "none")
        return self.report

    def _episode_rows(self, store, cache, policy, meta: dict, key: str) -> EpisodeRows | None:
        name = (key, f"{episode_key(meta)}:{meta['outcome']}")
        if name not in self._rows:
            self._rows[name] = episode_rows(store, cache, policy, meta, self.cfg.targets)
        return self._rows[name]
