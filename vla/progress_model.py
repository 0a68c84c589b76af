"""The progress model: per decision, how far along its task the episode is, in [0, 1].

VLA-RL's robotic process reward model, fitted cheaply on what the learner already has: the cached
backbone features of the decision frame (``learner.features.FeatureCache``), the robot state, and the
instruction (one-hot over the instructions it was fitted on; an unseen instruction gets zeros and
leans on the features, which pool the prompt tokens too). The targets come from the robot's own
episodes (``learner.progress.targets``).

Numpy only, like ``vla.success_classifier``, so whichever process applies it (the learner for
shaping, later the server for stops and the operator page's progress bar) needs no training code.
The fit is ridge regression on standardised inputs (closed form: CPU milliseconds to seconds),
its output clipped to [0, 1]. A fitted model carries the trunk key of the features it was fitted
on and is refused for any other.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

PROGRESS_MODEL_FILE = "progress_model.json"
"""In the run dir: {"model": ProgressModel JSON or null, "report": the learner's report}."""


@dataclass(frozen=True)
class ProgressModelConfig:
    l2: float = 30.0
    """Ridge penalty on the weights of the standardised inputs."""
    use_state: bool = True
    """Append the robot state (gripper pose and opening) to the features."""
    use_instruction: bool = True
    """Append a one-hot of the instruction (over those seen in the fit)."""
    max_instructions: int = 64
    """Most frequent instructions given a one-hot column; the rest share none."""

    def __post_init__(self) -> None:
        if self.l2 <= 0 or self.max_instructions < 0:
            raise ValueError("l2 > 0 and max_instructions >= 0 are required")


def instruction_vocabulary(instructions: list[str], cfg: ProgressModelConfig) -> list[str]:
    if not cfg.use_instruction:
        return []
    words, counts = np.unique(np.asarray(instructions, dtype=object).astype(str), return_counts=True)
    order = np.lexsort((words, -counts))  # most frequent first, ties by text
    return [str(words[i]) for i in order[:cfg.max_instructions]]


def model_input(features: np.ndarray, states: np.ndarray, instructions: list[str], vocabulary: list[str],
                cfg: ProgressModelConfig) -> np.ndarray:
    """[N, F] features, [N, S] states, N instructions -> [N, D] model inputs."""
    features = np.asarray(features, np.float64)
    if features.ndim != 2:
        raise ValueError(f"features must be [N, F], got shape {features.shape}")
    n = len(features)
    if len(instructions) != n:
        raise ValueError(f"{n} feature rows but {len(instructions)} instructions")
    parts = [features]
    if cfg.use_state:
        parts.append(np.asarray(states, np.float64).reshape(n, -1))
    if vocabulary:
        index = {w: i for i, w in enumerate(vocabulary)}
        onehot = np.zeros((n, len(vocabulary)))
        for row, text in enumerate(instructions):
            if text in index:
                onehot[row, index[text]] = 1.0
        parts.append(onehot)
    return np.hstack(parts)


@dataclass
class ProgressModel:
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray
    bias: float
    vocabulary: list[str]
    trunk_key: str
    config: ProgressModelConfig = field(default_factory=ProgressModelConfig)
    n_rows: int = 0

    def predict(self, features: np.ndarray, states: np.ndarray, instructions: list[str]) -> np.ndarray:
        """[N] progress in [0, 1]."""
        x = model_input(features, states, instructions, self.vocabulary, self.config)
        if x.shape[1] != len(self.mean):
            raise ValueError(f"model input has {x.shape[1]} columns, the model was fitted on {len(self.mean)}")
        return np.clip(((x - self.mean) / self.scale) @ self.weights + self.bias, 0.0, 1.0)

    def check_trunk(self, key: str) -> None:
        if key != self.trunk_key:
            raise ValueError(f"progress model fitted on trunk {self.trunk_key!r}, features are of {key!r}")

    def to_json(self) -> dict:
        return {"mean": self.mean.tolist(), "scale": self.scale.tolist(), "weights": self.weights.tolist(),
                "bias": self.bias, "vocabulary": list(self.vocabulary), "trunk_key": self.trunk_key,
                "config": asdict(self.config), "n_rows": self.n_rows}

    @classmethod
    def from_json(cls, data: dict) -> ProgressModel:
        try:
            mean, scale, w = (np.asarray(data[k], np.float64) for k in ("mean", "scale", "weights"))
            if not (mean.shape == scale.shape == w.shape and mean.ndim == 1):
                raise ValueError(f"mean/scale/weights shapes differ: {mean.shape} {scale.shape} {w.shape}")
            return cls(mean, scale, w, float(data["bias"]), [str(v) for v in data["vocabulary"]],
                       str(data["trunk_key"]), ProgressModelConfig(**data["config"]), int(data.get("n_rows", 0)))
        except (KeyError, TypeError) as e:
            raise ValueError(f"not a progress model: {e}") from e


def fit(features: np.ndarray, states: np.ndarray, instructions: list[str], targets: np.ndarray,
        cfg: ProgressModelConfig | None = None, trunk_key: str = "") -> ProgressModel:
    """Ridge regression of the targets on the standardised model inputs (the bias is not shrunk)."""
    cfg = cfg or ProgressModelConfig()
    y = np.asarray(targets, np.float64)
    if len(y) == 0 or len(y) != len(features):
        raise ValueError(f"need N > 0 input rows and N targets, got {len(features)} and {len(y)}")
    if not np.all((y >= 0) & (y <= 1)):
        raise ValueError("progress targets must lie in [0, 1]")
    vocabulary = instruction_vocabulary(list(instructions), cfg)
    x = model_input(features, states, list(instructions), vocabulary, cfg)
    mean, scale = x.mean(axis=0), x.std(axis=0) + 1e-6
    z = (x - mean) / scale
    bias = float(y.mean())
    # the dual form when rows are fewer than columns: the same solution, a smaller system
    if len(z) < z.shape[1]:
        w = z.T @ np.linalg.solve(z @ z.T + cfg.l2 * np.eye(len(z)), y - bias)
    else:
        w = np.linalg.solve(z.T @ z + cfg.l2 * np.eye(z.shape[1]), z.T @ (y - bias))
    return ProgressModel(mean, scale, w, bias, vocabulary, trunk_key, cfg, n_rows=len(y))


def read_published(run_dir: str | Path) -> tuple[ProgressModel | None, dict | None]:
    """(the published model or None, its report or None) from ``<run_dir>/progress_model.json``."""
    try:
        data = json.loads((Path(run_dir) / PROGRESS_MODEL_FILE).read_text())
    except FileNotFoundError:
        return None, None
    model = ProgressModel.from_json(data["model"]) if data.get("model") else None
    return model, data.get("report")
