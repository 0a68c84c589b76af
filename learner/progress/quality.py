"""How good a progress model is, measured on held-out episodes, and whether it may be used.

* VOC, value-order correlation (GVL's metric): within one successful episode, the Spearman rank
  correlation between the predicted progress of its decisions and their time order. A success goes
  forward, so a good model's predictions rise along it: VOC near 1; a model that says nothing gives
  about 0. Reported as the mean over held-out successful episodes, overall and per task.
* calibration: held-out decisions binned by predicted progress; per bin the mean prediction and the
  mean target (``learner.progress.targets``), and the count-weighted mean gap (like ECE).
* R^2 of the held-out successes' predictions against their targets (1 - squared error / the targets'
  variance; successes only, because a failure's target -- a ramp to the failure cap -- depends on how
  long it ran, which no single frame shows):
  VOC alone can be fooled -- a trajectory that moves steadily through state space makes ANY linear
  function of the state monotone in time, so even a model fitted on shuffled targets can show a high
  VOC on one task -- while a model that learnt nothing has R^2 at or below 0.
* the verdict: a model whose held-out VOC is below ``min_voc``, whose R^2 is below ``min_r2``, or that
  has fewer than ``min_episodes`` held-out successes to be judged on, is unusable -- not used for
  shaping or stops -- and the report says why.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class QualityConfig:
    min_voc: float = 0.5
    """Held-out VOC below which the model is not used."""
    min_r2: float = 0.2
    """Held-out R^2 on the successes (against their targets) below which the model is not used."""
    min_episodes: int = 3
    """Fewest held-out successful episodes (with >= 3 decisions) a verdict needs."""
    n_bins: int = 10
    """Equal-width bins of predicted progress in the calibration table."""


def ranks(x: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1 with ties given their average rank."""
    x = np.asarray(x, np.float64)
    order = np.argsort(x, kind="mergesort")
    r = np.empty(len(x))
    r[order] = np.arange(len(x), dtype=np.float64)
    values, inverse = np.unique(x, return_inverse=True)
    if len(values) < len(x):
        sums = np.bincount(inverse, weights=r)
        counts = np.bincount(inverse)
        r = (sums / counts)[inverse]
    return r


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho; 0 when either side is constant (no order to agree with)."""
    ra, rb = ranks(a), ranks(b)
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = np.sqrt((ra ** 2).sum() * (rb ** 2).sum())
    return float((ra * rb).sum() / denom) if denom > 0 else 0.0


def voc(predicted: Sequence[float]) -> float | None:
    """VOC of one episode's per-decision predictions in time order (None below 3 decisions)."""
    p = np.asarray(predicted, np.float64)
    return spearman(p, np.arange(len(p))) if len(p) >= 3 else None


def calibration(predicted: np.ndarray, targets: np.ndarray, n_bins: int = 10) -> dict:
    p, y = np.asarray(predicted, np.float64), np.asarray(targets, np.float64)
    if p.shape != y.shape or p.ndim != 1:
        raise ValueError(f"predictions and targets must be equal-length vectors, got {p.shape} and {y.shape}")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.digitize(p, edges[1:-1]), 0, n_bins - 1)
    bins, gap = [], 0.0
    for b in range(n_bins):
        sel = index == b
        if not sel.any():
            continue
        mean_p, mean_y = float(p[sel].mean()), float(y[sel].mean())
        gap += sel.sum() / len(p) * abs(mean_p - mean_y)
        bins.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": int(sel.sum()),
                     "mean_predicted": mean_p, "mean_target": mean_y})
    return {"bins": bins, "gap": float(gap) if len(p) else None,
            "mae": float(np.abs(p - y).mean()) if len(p) else None, "n": int(len(p))}


def r_squared(predicted: np.ndarray, targets: np.ndarray) -> float | None:
    """1 - SSE / SST over the held-out rows (None when the targets do not vary)."""
    sst = float(((targets - targets.mean()) ** 2).sum()) if len(targets) else 0.0
    return 1.0 - float(((predicted - targets) ** 2).sum()) / sst if sst > 0 else None


@dataclass
class HeldOutEpisode:
    task: str
    success: bool
    predicted: np.ndarray
    targets: np.ndarray
    steps: int = 0


def quality_report(episodes: Sequence[HeldOutEpisode], cfg: QualityConfig | None = None) -> dict:
    """VOC (overall, per task), calibration and the usable verdict of held-out predictions."""
    cfg = cfg or QualityConfig()
    per_task: dict[str, list[float]] = {}
    for e in episodes:
        v = voc(e.predicted) if e.success else None
        if v is not None:
            per_task.setdefault(e.task, []).append(v)
    vocs = [v for vs in per_task.values() for v in vs]
    p = np.concatenate([e.predicted for e in episodes]) if episodes else np.zeros(0)
    y = np.concatenate([e.targets for e in episodes]) if episodes else np.zeros(0)
    mean_voc = float(np.mean(vocs)) if vocs else None
    won = [e for e in episodes if e.success]
    r2 = r_squared(np.concatenate([e.predicted for e in won]), np.concatenate([e.targets for e in won])) if won else None
    if len(vocs) < cfg.min_episodes:
        usable, reason = False, (f"only {len(vocs)} held-out successful episodes with 3+ decisions; "
                                 f"{cfg.min_episodes} needed to judge it")
    elif mean_voc < cfg.min_voc:
        usable, reason = False, f"held-out VOC {mean_voc:.2f} is below {cfg.min_voc:.2f}"
    elif r2 is None or r2 < cfg.min_r2:
        usable, reason = False, f"held-out R^2 {r2 if r2 is not None else float('nan'):.2f} is below {cfg.min_r2:.2f}"
    else:
        usable, reason = True, f"held-out VOC {mean_voc:.2f} >= {cfg.min_voc:.2f}, R^2 {r2:.2f}"
    return {"voc": mean_voc, "voc_episodes": len(vocs), "r2": r2, "min_r2": cfg.min_r2,
            "voc_per_task": {t: {"voc": float(np.mean(v)), "episodes": len(v)} for t, v in sorted(per_task.items())},
            "calibration": calibration(p, y, cfg.n_bins), "usable": usable, "reason": reason,
            "min_voc": cfg.min_voc, "held_out_episodes": len(episodes)}
