"""The reward model: a success classifier refitted on the operator's labels as they arrive.

What it trains on: online episodes whose label came from the operator (``label_source ==
"operator"``, outcome success or failure). Labels from the simulator's predicate ("auto") or from
the reward model itself ("reward_model") are never training labels: the first is not the
operator's judgement, the second would let the model confirm itself.

Each input is the classifier input of ``vla.success_classifier`` (last-k decision features from the
FeatureCache, i.e. the same cached features RL uses, plus the last decision's state). On every
change of the labelled set or of the trunk the learner refits, computes the calibration of the
cross-validated (held-out) probabilities, and publishes ``runs/<run>/reward_model.json`` atomically
for the server, which applies it to episodes as they end (server.reward_scorer).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from deployment.reward_model import REWARD_MODEL_FILE
from episodes.store import EpisodeStore, write_json_atomic
from learner.dataset import load_decisions
from learner.episode_rules import has_interventions, is_operator_labelled
from learner.features import FeatureCache, trunk_key
from vla.policy import Policy
from vla.success_classifier import (
    SuccessClassifierConfig,
    calibration,
    cross_validated_proba,
    episode_input,
    fit,
)

log = logging.getLogger(__name__)

MODEL_FILE = REWARD_MODEL_FILE  # the deployment section names it: the server reads the same file


def episode_inputs(store: EpisodeStore, cache: FeatureCache, policy: Policy, metas: list[dict],
                   cfg: SuccessClassifierConfig) -> tuple[np.ndarray, list[dict]]:
    """Classifier inputs of the episodes that have at least one decision (others are skipped)."""
    rows, kept = [], []
    for meta in metas:
        d = load_decisions(store, meta, policy.spec.chunk)
        if len(d) == 0:
            continue
        feats = cache.features(policy, d).numpy()
        rows.append(episode_input(feats, d.states, cfg))
        kept.append(meta)
    width = policy.spec.feature_dim + (policy.spec.state_dim if cfg.use_state else 0)
    return (np.stack(rows) if rows else np.zeros((0, width))), kept


def fit_report(x: np.ndarray, y: np.ndarray, cfg: SuccessClassifierConfig, key: str) -> tuple[dict, dict]:
    """(classifier JSON, its status report): fit on everything, calibration from cross-validation."""
    model = fit(x, y, cfg, trunk_key=key)
    held_out = cross_validated_proba(x, y, cfg)
    calib = calibration(held_out, y, cfg.n_bins)
    confident = np.maximum(held_out, 1 - held_out) >= cfg.auto_threshold
    wrong = (held_out >= 0.5) != (y == 1)
    report = {
        "n_labels": int(len(y)), "n_success": int(y.sum()), "trunk_key": key,
        "calibration": calib, "ece": calib["ece"],
        "cv_accuracy": float(1 - wrong.mean()),
        "cv_auto_fraction": float(confident.mean()),
        "cv_auto_error": float(wrong[confident].mean()) if confident.any() else None,
        "auto_threshold": cfg.auto_threshold, "last_k": cfg.last_k, "fitted": time.time(),
    }
    return model.to_json(), report


class RewardModelTrainer:
    """Refits and publishes the classifier when the operator-labelled set or the trunk changed."""

    def __init__(self, run_dir: str | Path, cfg: SuccessClassifierConfig | None = None):
        self.run_dir = Path(run_dir)
        self.cfg = cfg or SuccessClassifierConfig()
        self.path = self.run_dir / MODEL_FILE
        self._fitted_on: tuple[str, frozenset[str]] | None = None
        self.report: dict = {"state": "waiting for labels", "n_labels": 0}

    def refit_if_needed(self, metas: list[dict], store: EpisodeStore, cache: FeatureCache,
                        policy: Policy) -> dict | None:
        """The new report after a refit (or after a change that still leaves too few labels);
        None when neither the operator-labelled episodes of `metas` nor the trunk changed."""
        # an episode an operator took over is left out: its label is about the operator's work, and
        # the policy's decisions in it end at the takeover, not at the outcome the label describes
        metas = sorted((m for m in metas if is_operator_labelled(m) and not has_interventions(m)),
                       key=lambda m: (m.get("finished", 0), m["robot_id"], m["episode_id"]))
        key = trunk_key(policy)
        labelled = frozenset(f"{m['robot_id']}/{m['episode_id']}:{m['outcome']}" for m in metas)
        if self._fitted_on == (key, labelled):
            return None
        self._fitted_on = (key, labelled)
        outcomes = {m["outcome"] for m in metas}
        if len(metas) < self.cfg.min_labels or len(outcomes) < 2:
            self.report = {"state": f"waiting for labels: {len(metas)} operator labels "
                                    f"({', '.join(sorted(outcomes)) or 'none'}); need {self.cfg.min_labels} "
                                    "with both outcomes", "n_labels": len(metas)}
            return self.report
        x, kept = episode_inputs(store, cache, policy, metas, self.cfg)
        y = np.array([m["outcome"] == "success" for m in kept], np.float64)
        model, report = fit_report(x, y, self.cfg, key)
        write_json_atomic(self.path, {"classifier": model, "report": report})
        self.report = {"state": "fitted", **report}
        log.info("reward model refitted on %d operator labels: cv accuracy %.2f, ECE %.3f", len(y),
                 report["cv_accuracy"], report["ece"])
        return self.report
