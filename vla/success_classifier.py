"""A success classifier over pooled per-episode backbone features, and its calibration.

The reward model of the human-in-the-loop mode: the learner fits it on the episodes the operator
labelled (features from its FeatureCache), the server applies it to an episode that just ended
(features of the same frames from the serving policy). Both see the same numbers only when the
trunk that computed the features is the same, so a fitted classifier carries the trunk key it was
fitted on and is refused for any other.

Numpy only (no torch): the head is an L2-regularised logistic regression on standardised features,
fitted by Newton's method (IRLS). An episode's input is the mean of the backbone features of its
last ``last_k`` decision frames, concatenated with the robot state at the last decision: a few
hundred numbers per episode, cheap enough to refit from scratch whenever a label arrives.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from deployment.reward_model import RewardModelConfig


@dataclass
class SuccessClassifierConfig:
    last_k: int = 2
    """Decision frames at the end of an episode whose features are averaged (the outcome shows at the end)."""
    use_state: bool = True
    """Append the robot state of the last decision (gripper pose and opening) to the pooled features."""
    l2: float = 10.0
    """Ridge penalty on the weights (standardised features); large because labels are few and features many."""
    newton_steps: int = 25
    """Newton (IRLS) iterations of the fit; it converges in fewer on these sizes."""
    cv_folds: int = 5
    """Folds of the cross-validation that gives the held-out probabilities behind the calibration."""
    n_bins: int = 10
    """Equal-width probability bins of the reliability diagram and the ECE."""
    min_labels: int = 20
    """Fewest operator labels (with both outcomes present) before a classifier is fitted at all."""
    auto_threshold: float = 0.9
    """Auto-label an episode only when max(p, 1 - p) >= this; anything less waits for the operator."""

    def __post_init__(self) -> None:
        if self.last_k < 1:
            raise ValueError(f"last_k must be >= 1, got {self.last_k}")
        if not 0.5 < self.auto_threshold <= 1.0:
            raise ValueError(f"auto_threshold must be in (0.5, 1], got {self.auto_threshold}")
        if self.cv_folds < 2 or self.n_bins < 1 or self.l2 <= 0:
            raise ValueError("cv_folds >= 2, n_bins >= 1 and l2 > 0 are required")


def classifier_config(section: RewardModelConfig) -> SuccessClassifierConfig:
    """The classifier's hyperparameters from the deployment's `reward_model` section."""
    return SuccessClassifierConfig(last_k=section.last_k, auto_threshold=section.auto_threshold,
                                   min_labels=section.min_labels, l2=section.l2)


def episode_input(features: np.ndarray, states: np.ndarray, cfg: SuccessClassifierConfig) -> np.ndarray:
    """[N, F] decision features and [N, S] decision states of one episode -> its classifier input."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2 or len(features) == 0:
        raise ValueError(f"an episode needs at least one decision feature row, got shape {features.shape}")
    pooled = features[-cfg.last_k:].mean(axis=0)
    if not cfg.use_state:
        return pooled
    return np.concatenate([pooled, np.asarray(states, np.float64).reshape(len(features), -1)[-1]])


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # overflow-free


@dataclass
class SuccessClassifier:
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float
    trunk_key: str
    config: SuccessClassifierConfig
    n_labels: int = 0

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """P(success) for [B, D] (or one [D]) classifier inputs."""
        x = np.asarray(x, np.float64)
        z = ((x - self.mean) / self.scale) @ self.weights + self.bias
        return _sigmoid(z)

    def decide(self, p: float, threshold: float | None = None) -> str | None:
        """The auto label of an episode with P(success) = p, or None when it must wait for the operator
        (threshold: the fitted config's unless given)."""
        t = self.config.auto_threshold if threshold is None else threshold
        if p >= t:
            return "success"
        if 1.0 - p >= t:
            return "failure"
        return None

    def to_json(self) -> dict:
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist(), "weights": self.weights.tolist(),
                "bias": self.bias, "trunk_key": self.trunk_key, "config": asdict(self.config),
                "n_labels": self.n_labels}

    @classmethod
    def from_json(cls, data: dict) -> SuccessClassifier:
        try:
            mean, scale, w = (np.asarray(data[k], np.float64) for k in ("mean", "scale", "weights"))
            if not (mean.shape == scale.shape == w.shape and mean.ndim == 1):
                raise ValueError(f"mean/scale/weights shapes differ: {mean.shape} {scale.shape} {w.shape}")
            return cls(mean, scale, w, float(data["bias"]), str(data["trunk_key"]),
                       SuccessClassifierConfig(**data["config"]), int(data.get("n_labels", 0)))
        except (KeyError, TypeError) as e:
            raise ValueError(f"not a success classifier: {e}") from e


def fit(x: np.ndarray, y: np.ndarray, cfg: SuccessClassifierConfig, trunk_key: str = "") -> SuccessClassifier:
    """L2 logistic regression on standardised inputs, by Newton's method. y: 1 = success."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    if x.ndim != 2 or len(x) != len(y) or len(y) == 0:
        raise ValueError(f"need [N, D] inputs and N labels, got {x.shape} and {y.shape}")
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    z = np.hstack([(x - mean) / scale, np.ones((len(x), 1))])
    w = np.zeros(z.shape[1])
    ridge = np.full(z.shape[1], cfg.l2)
    ridge[-1] = 1e-6  # the bias is not shrunk
    for _ in range(cfg.newton_steps):
        p = _sigmoid(z @ w)
        grad = z.T @ (p - y) + ridge * w
        hess = (z.T * (p * (1 - p))) @ z + np.diag(ridge)
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.abs(step).max() < 1e-8:
            break
    return SuccessClassifier(mean, scale, w[:-1], float(w[-1]), trunk_key, cfg, n_labels=len(y))


def cross_validated_proba(x: np.ndarray, y: np.ndarray, cfg: SuccessClassifierConfig,
                          seed: int = 0) -> np.ndarray:
    """Held-out P(success) of every labelled episode: each fold predicted by a fit on the others."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    folds = min(cfg.cv_folds, len(y))
    order = np.random.default_rng(seed).permutation(len(y))
    out = np.full(len(y), np.nan)
    for k in range(folds):
        test = order[k::folds]
        train = np.setdiff1d(order, test)
        if len(np.unique(y[train])) < 2:  # one class only: predict its rate
            out[test] = y[train].mean() if len(train) else 0.5
            continue
        out[test] = fit(x[train], y[train], cfg).predict_proba(x[test])
    return out


def calibration(p: np.ndarray, y: np.ndarray, n_bins: int = 10) -> dict:
    """Reliability diagram bins and the expected calibration error.

    Bins are equal-width over [0, 1] (p = 1 falls in the last one). Per non-empty bin: its count,
    mean predicted probability and observed success rate. ECE = sum over bins of
    (count / total) * |mean predicted - observed|.
    """
    p, y = np.asarray(p, np.float64), np.asarray(y, np.float64)
    if p.shape != y.shape or p.ndim != 1:
        raise ValueError(f"p and y must be equal-length vectors, got {p.shape} and {y.shape}")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    index = np.clip(np.digitize(p, edges[1:-1], right=False), 0, n_bins - 1)
    bins, ece = [], 0.0
    for b in range(n_bins):
        sel = index == b
        n = int(sel.sum())
        if n == 0:
            continue
        mean_p, observed = float(p[sel].mean()), float(y[sel].mean())
        ece += n / len(p) * abs(mean_p - observed)
        bins.append({"lo": float(edges[b]), "hi": float(edges[b + 1]), "n": n,
                     "mean_p": mean_p, "observed": observed})
    return {"bins": bins, "ece": float(ece) if len(p) else None, "n": int(len(p))}
