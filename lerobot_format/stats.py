"""Per-feature statistics as LeRobot's meta/stats.json and its episode table carry them: min, max,
mean, std, count and the quantiles q01, q10, q50, q90, q99 (what its normalizers read).

Vectors: per dimension over frames. Images: per colour channel over a sample of frames, scaled to
[0, 1], shaped (3, 1, 1). Vector statistics are exact over all frames (LeRobot approximates the
quantiles with histograms); image statistics of the whole dataset are aggregated from the
episodes' as LeRobot does (images are too many to pool).
"""

from __future__ import annotations

import numpy as np

QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
IMAGE_SAMPLES = 100  # frames per episode that image statistics look at (LeRobot samples about as many)


def quantile_name(q: float) -> str:
    return f"q{round(q * 100):02d}"


def vector_stats(values: np.ndarray) -> dict[str, np.ndarray]:
    """[N] or [N, D] -> each statistic of shape [D] ([1] for a scalar feature)."""
    x = np.asarray(values, dtype=np.float64)
    x = x.reshape(len(x), -1)
    stats = {"min": x.min(0), "max": x.max(0), "mean": x.mean(0), "std": x.std(0),
             "count": np.array([len(x)])}
    for q in QUANTILES:
        stats[quantile_name(q)] = np.quantile(x, q, axis=0)
    return stats


def sample_indices(n: int, samples: int = IMAGE_SAMPLES) -> np.ndarray:
    """Evenly spaced frame indices of an episode, at most `samples` of them."""
    return np.unique(np.round(np.linspace(0, n - 1, min(n, samples))).astype(int))


def image_stats(frames: np.ndarray) -> dict[str, np.ndarray]:
    """[N, H, W, 3] uint8 -> per-channel statistics in [0, 1], each of shape (3, 1, 1); count is N."""
    pixels = frames.reshape(-1, 3).astype(np.float64) / 255.0
    stats = vector_stats(pixels)
    out = {k: v.reshape(3, 1, 1) for k, v in stats.items() if k != "count"}
    out["count"] = np.array([len(frames)])
    return out


def aggregate(per_episode: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Whole-dataset statistics from per-episode ones, as LeRobot aggregates them: min of mins, max
    of maxes, count-weighted mean, the pooled std, count-weighted quantiles (an approximation)."""
    counts = np.array([float(s["count"][0]) for s in per_episode])
    w = (counts / counts.sum()).reshape(-1, *([1] * np.ndim(per_episode[0]["mean"])))
    means = np.stack([s["mean"] for s in per_episode])
    mean = (w * means).sum(0)
    var = (w * (np.stack([s["std"] for s in per_episode]) ** 2 + (means - mean) ** 2)).sum(0)
    out = {"min": np.min([s["min"] for s in per_episode], axis=0), "max": np.max([s["max"] for s in per_episode], axis=0),
           "mean": mean, "std": np.sqrt(var), "count": np.array([int(counts.sum())])}
    for q in QUANTILES:
        out[quantile_name(q)] = (w * np.stack([s[quantile_name(q)] for s in per_episode])).sum(0)
    return out


def as_json(stats: dict[str, dict[str, np.ndarray]]) -> dict:
    return {key: {k: v.tolist() for k, v in s.items()} for key, s in stats.items()}
