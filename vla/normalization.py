"""Per-dimension mean/std normalization of actions and states, computed from demonstrations.

The policy works in normalized space; the server un-normalizes, so clients only see robot units.
A `Normalizer` travels with every checkpoint as `norm.json`."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import torch

Array = TypeVar("Array", np.ndarray, torch.Tensor)


def _stats(x: np.ndarray, dim: int, floor: float, what: str) -> tuple[np.ndarray, np.ndarray]:
    arr = np.asarray(x, dtype=np.float64).reshape(-1, dim)
    if arr.shape[0] == 0:
        raise ValueError(f"no {what} to compute normalization from")
    if not np.isfinite(arr).all():
        raise ValueError(f"{what} contain NaN/inf")
    # The floor keeps a dimension the demos never move (e.g. roll) from dividing by ~0.
    return arr.mean(0), np.maximum(arr.std(0), floor)


@dataclass
class Normalizer:
    action_mean: np.ndarray  # [action_dim]
    action_std: np.ndarray
    state_mean: np.ndarray  # [state_dim]
    state_std: np.ndarray

    def __post_init__(self):
        for name in ("action_mean", "action_std", "state_mean", "state_std"):
            value = np.asarray(getattr(self, name), dtype=np.float32).reshape(-1)
            if not np.isfinite(value).all():
                raise ValueError(f"normalizer {name} is not finite")
            setattr(self, name, value)
        if (self.action_std <= 0).any() or (self.state_std <= 0).any():
            raise ValueError("normalizer std must be positive")
        if self.action_mean.shape != self.action_std.shape or self.state_mean.shape != self.state_std.shape:
            raise ValueError("normalizer mean/std shapes differ")

    @classmethod
    def identity(cls, action_dim: int = 7, state_dim: int = 7) -> Normalizer:
        return cls(np.zeros(action_dim), np.ones(action_dim), np.zeros(state_dim), np.ones(state_dim))

    @classmethod
    def from_demos(cls, actions: np.ndarray, states: np.ndarray, action_floor: float = 1e-3,
                   state_floor: float = 1e-2, action_dim: int = 7, state_dim: int = 7) -> Normalizer:
        """actions [..., action_dim] (per step or per chunk), states [..., state_dim], robot units."""
        am, astd = _stats(actions, action_dim, action_floor, "actions")
        sm, sstd = _stats(states, state_dim, state_floor, "states")
        return cls(am, astd, sm, sstd)

    @property
    def action_dim(self) -> int:
        return int(self.action_mean.shape[0])

    @property
    def state_dim(self) -> int:
        return int(self.state_mean.shape[0])

    # x has shape [..., dim]; numpy in -> numpy out, torch in -> torch out (same device/dtype).
    @staticmethod
    def _apply(x: Array, mean: np.ndarray, std: np.ndarray, inverse: bool) -> Array:
        if isinstance(x, torch.Tensor):
            m = torch.as_tensor(mean, dtype=x.dtype, device=x.device)
            s = torch.as_tensor(std, dtype=x.dtype, device=x.device)
        else:
            x = np.asarray(x, dtype=np.float32)
            m, s = mean, std
        if x.shape[-1] != mean.shape[0]:
            raise ValueError(f"last dim {x.shape[-1]} != normalizer dim {mean.shape[0]}")
        return x * s + m if inverse else (x - m) / s

    def normalize_actions(self, x: Array) -> Array:
        return self._apply(x, self.action_mean, self.action_std, inverse=False)

    def unnormalize_actions(self, x: Array) -> Array:
        return self._apply(x, self.action_mean, self.action_std, inverse=True)

    def normalize_states(self, x: Array) -> Array:
        return self._apply(x, self.state_mean, self.state_std, inverse=False)

    def unnormalize_states(self, x: Array) -> Array:
        return self._apply(x, self.state_mean, self.state_std, inverse=True)

    def log_det_jacobian(self, chunk: int) -> float:
        """log |d normalized / d robot| of a whole chunk: add it to a normalized-space log-prob
        to get the log-density in robot units."""
        return -chunk * float(np.log(self.action_std.astype(np.float64)).sum())

    def to_dict(self) -> dict:
        return {k: [float(v) for v in getattr(self, k)]
                for k in ("action_mean", "action_std", "state_mean", "state_std")}

    @classmethod
    def from_dict(cls, d: dict) -> Normalizer:
        try:
            return cls(**{k: np.asarray(d[k], dtype=np.float32)
                          for k in ("action_mean", "action_std", "state_mean", "state_std")})
        except KeyError as e:
            raise ValueError(f"normalizer dict lacks {e}") from None

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, text: str) -> Normalizer:
        return cls.from_dict(json.loads(text))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Normalizer):
            return NotImplemented
        return all(np.array_equal(getattr(self, k), getattr(other, k))
                   for k in ("action_mean", "action_std", "state_mean", "state_std"))

