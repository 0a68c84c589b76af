"""One RECAP iteration on the learner's store: value function -> labels -> conditioned SFT.

    metrics = recap_iteration(trainer, iteration, RecapConfig.from_learner(config.learner), on_phase=...)
    trainer.publish("full", "recap", metrics)    # meta.json carries advantage_conditioning

(`recap_iteration` is the RECAP recipe's phase, learner/recipes/recap.py; it runs a `RecapPhase`
and tells the trainer that its trunk changed.)

The value function reads every labelled episode in the store (demos, online and eval episodes;
success or failure; aborted ones carry no label and are skipped) at one decision every H steps,
through the trainer's feature cache. The labels are written to ``runs/<run>/recap/labels-itNNN.json``
with the version whose trunk the value function read (``made_by_version``) before SFT starts; the
trainer adds the version it published from them (``published_version``).

Threshold groups ("tasks"): the episode's task name (its instruction where it has none). The value
function itself reads the instruction, so within one task name (the mock's ``reach_slots`` covers
every colour and phrasing) the advantages are already relative to what each instruction can reach;
a group per instruction would split the robot's few episodes into groups with no success at all.

How the advantages become SFT samples is the config's `weighting` part (learner/recap/weighting.py):
the indicator (RECAP) or AWR, whose labels file also records each decision's weight and the
weights' summary, whose SFT samples keep the plain instruction and are drawn in proportion to their
weights, and whose version is published with no ``advantage_conditioning``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from episodes.durable import write_json_atomic
from episodes.store import episode_key
from learner.dataset import expert_decisions
from learner.episode_rules import is_trainable
from learner.recap.labels import EpisodeValues, LabelConfig, label_episodes
from learner.recap.sft import ConditionedSFTConfig, LabelledEpisode, build_conditioned_data
from learner.recap.value import ValueConfig, fit_value, is_success, value_targets
from learner.recap.weighting import AWRWeighting, IndicatorWeighting, weighting_for
from learner.sft import SFTData, train_sft

log = logging.getLogger(__name__)

LABELS_DIR = "recap"


class NoLabelledEpisodes(ValueError):
    """The store holds no episode labelled success or failure: no value function can be fitted."""


@dataclass
class RecapConfig:
    value: ValueConfig = field(default_factory=ValueConfig)
    """The value function (learner/recap/value.py)."""
    labels: LabelConfig = field(default_factory=LabelConfig)
    """The advantage labels (learner/recap/labels.py)."""
    sft: ConditionedSFTConfig = field(default_factory=ConditionedSFTConfig)
    """The conditioned SFT's samples; its optimizer and steps are the learner's sft_* settings."""
    max_steps: int = 0
    """The step limit L for every task; 0 = the longest stored episode of the task."""
    weighting: IndicatorWeighting | AWRWeighting = field(default_factory=IndicatorWeighting)
    """How the advantages become SFT samples (learner/recap/weighting.py)."""

    @classmethod
    def from_learner(cls, lc) -> RecapConfig:
        return cls(value=ValueConfig(bins=lc.recap.value_bins, steps=lc.recap.value_steps,
                                     failure_penalty_steps=lc.recap.failure_penalty_steps, seed=lc.seed),
                   labels=LabelConfig(n_step=lc.recap.n_step, percentile=lc.recap.positive_percentile),
                   sft=ConditionedSFTConfig(indicator_dropout=lc.recap.indicator_dropout,
                                            eval_fraction=lc.sft.eval_fraction, seed=lc.seed),
                   max_steps=lc.recap.max_steps, weighting=weighting_for(lc))


def labelled_episodes(store) -> list[dict]:
    """Every episode the value function and SFT train on: labelled success/failure, any source."""
    return [m for m in store.list_episodes() if is_trainable(m) and m.get("source") in ("expert", "online", "eval")]


def task_of(meta: dict, instruction: str) -> str:
    return str(meta.get("task") or instruction)


class RecapPhase:
    def __init__(self, trainer, cfg: RecapConfig):
        self.trainer = trainer
        self.cfg = cfg

    @property
    def run_time(self) -> dict:
        """The meta.json keys the published version needs to be served: RECAP's advantage
        conditioning, or nothing (AWR: an ordinary policy)."""
        return self.cfg.weighting.run_time()

    def run(self, iteration: int, progress: bool = False, on_phase: Callable[[str], None] | None = None,
            on_progress: Callable[[float], None] | None = None) -> dict:
        """Value function, labels, conditioned SFT on the trainer's model (unpublished). Raises
        NoLabelledEpisodes / NoPositiveSteps (nothing to train) or ValueError (the backbone's
        prompt cannot take the indicator) before the model changes."""
        tr = self.trainer
        self.cfg.weighting.check_backbone(tr.model.preprocessor)
        metas = labelled_episodes(tr.store)
        if not metas:
            raise NoLabelledEpisodes(f"no episode labelled success or failure in {tr.store.root}: "
                                     "nothing to fit the value function on")
        t0 = time.time()
        (on_phase or _nothing)("value")
        episodes, value_metrics = self.fit_values(metas)
        t_value = time.time() - t0
        (on_phase or _nothing)("labels")
        report = label_episodes(episodes, self.cfg.labels)
        report.update(self.cfg.weighting.weigh(episodes))
        self.write_labels(iteration, episodes, report, value_metrics)
        (on_phase or _nothing)("sft")
        t1 = time.time()
        metrics = self.conditioned_sft(episodes, progress, on_progress)
        metrics.update(value_metrics)
        metrics.update({k: v for k, v in report.items() if isinstance(v, (int, float))})
        metrics.update(n_tasks_without_success=len(report["tasks_without_success"]), value_s=t_value,
                       recap_sft_s=time.time() - t1)
        return metrics

    # ------------------------------------------------------------------ value function
    def fit_values(self, metas: list[dict]) -> tuple[list[EpisodeValues], dict]:
        tr = self.trainer
        chunk = tr.model.config.chunk
        loaded = []
        for m in metas:
            episode = tr.store.load(m["robot_id"], m["episode_id"])
            if not episode.steps:
                continue
            d = expert_decisions(m, episode, chunk, stride=chunk)  # one decision every H steps
            loaded.append((m, episode, d))
        limits: dict[str, int] = {}
        for m, episode, d in loaded:
            task = task_of(m, d.instruction)
            limits[task] = self.cfg.max_steps or max(limits.get(task, 0), len(episode.steps))
        xs, ys, ids, rows = [], [], [], []
        for n, (m, episode, d) in enumerate(loaded):
            task = task_of(m, d.instruction)
            index = {int(s["step"]): i for i, s in enumerate(episode.steps)}
            g = value_targets(len(episode.steps), is_success(m), limits[task], self.cfg.value.failure_penalty_steps)
            targets = g[[index[s] for s in d.steps]]
            features = tr.cache.features(tr.policy, d).float()
            states = tr.norm.normalize_states(torch.from_numpy(d.states)).float()
            xs.append(torch.cat([features, states], -1))
            ys.append(torch.from_numpy(targets))
            ids.append(np.full(len(d.steps), n))
            operator = np.array([bool(episode.steps[index[s]].get("intervention")) for s in d.steps], bool)
            rows.append(EpisodeValues(key=episode_key(m), task=task, source=m.get("source", "online"),
                                      success=is_success(m), steps=np.asarray(d.steps), targets=targets,
                                      values=np.zeros(len(d.steps), np.float32), operator=operator))
        fit = fit_value(torch.cat(xs), torch.cat(ys), np.concatenate(ids), self.cfg.value)
        for x, ep in zip(xs, rows, strict=True):
            ep.values = fit.net.value(x).numpy().astype(np.float32)
        self.loaded = {episode_key(m): (m, episode) for m, episode, _ in loaded}
        self.value_net = fit.net
        fit.metrics["value_tasks"] = len(limits)
        return rows, fit.metrics

    # ------------------------------------------------------------------ labels
    def labels_path(self, iteration: int) -> Path:
        return self.trainer.run_dir / LABELS_DIR / f"labels-it{iteration:03d}.json"

    def write_labels(self, iteration: int, episodes: list[EpisodeValues], report: dict, value_metrics: dict) -> None:
        """The labels, with the version whose trunk made them, written atomically before SFT."""
        record = {"iteration": iteration, "made_by_version": self.trainer.version, "published_version": None,
                  "config": asdict(self.cfg), "created": time.time(), **report, "value": value_metrics,
                  "episodes": {ep.key: {"task": ep.task, "source": ep.source, "success": ep.success,
                                        "steps": ep.steps.tolist(), "target": _rounded(ep.targets),
                                        "value": _rounded(ep.values), "advantage": _rounded(ep.advantages),
                                        "positive": ep.positive.tolist(), "operator": ep.operator.tolist(),
                                        **({} if ep.weights is None else {"weight": _rounded(ep.weights)})}
                               for ep in episodes}}
        path = self.labels_path(iteration)
        path.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, record)
        self.last_labels = path

    # ------------------------------------------------------------------ conditioned SFT
    def sft_data(self, episodes: list[EpisodeValues]) -> SFTData:
        """Every stored step with its decision's label (RECAP) or weight (AWR); an operator-driven
        step is positive, and under AWR weighs the clip."""
        labelled = []
        for ep in episodes:
            meta, episode = self.loaded[ep.key]
            labels, weights = {}, {}
            for s in episode.steps:
                step = int(s["step"])
                i = int(np.searchsorted(ep.steps, step, side="right")) - 1
                labels[step] = bool(s.get("intervention")) or (i >= 0 and bool(ep.positive[i]))
                if ep.weights is not None:
                    weights[step] = (self.cfg.weighting.operator_weight if s.get("intervention")
                                     else float(ep.weights[i]) if i >= 0 else 1.0)
            labelled.append(LabelledEpisode(meta, episode, labels, weights if ep.weights is not None else None))
        return build_conditioned_data(labelled, self.trainer.model.config.chunk,
                                      replace(self.cfg.sft, indicator=self.cfg.weighting.indicator))

    def conditioned_sft(self, episodes: list[EpisodeValues], progress: bool,
                        on_progress: Callable[[float], None] | None) -> dict:
        tr = self.trainer
        data = self.sft_data(episodes)
        metrics = train_sft(tr.model, tr.norm, data, tr.sft_config(), mode="lora", progress=progress,
                            on_step=tr.step_reporter("recap", on_progress), desc="recap sft")
        positive = sum(s.instruction.endswith("positive") for s in data.train)
        metrics = {k: v for k, v in metrics.items() if k != "loss_curve"}
        metrics.update(sft_positive_samples=positive, sft_samples=len(data.train),
                       n_episodes_labelled=len(episodes))
        metrics.update(self.cfg.weighting.metrics(data.train_weights))
        return metrics


def recap_iteration(trainer, iteration: int, cfg: RecapConfig, progress: bool = False,
                    on_phase: Callable[[str], None] | None = None,
                    on_progress: Callable[[float], None] | None = None) -> dict:
    """One RECAP iteration on the trainer's store and model; the next `publish` carries the
    weighting's run-time metadata and stamps the labels file with its version. Raises before changing
    the model if there is nothing to train on or the backbone's prompt cannot take the indicator."""
    if trainer.model is None:
        raise RuntimeError("no model: call bootstrap() or resume() first")
    recap = RecapPhase(trainer, cfg)
    metrics = recap.run(iteration, progress=progress, on_phase=on_phase, on_progress=on_progress)
    trainer.trunk_trained(run_time=recap.run_time, labels=recap.last_labels)
    trainer.scalars("recap", metrics, trainer.sft_phases)
    return metrics


def _rounded(a: np.ndarray) -> list[float]:
    return [round(float(x), 5) for x in a]


def _nothing(_: str) -> None:
    return None
