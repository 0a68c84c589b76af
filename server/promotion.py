"""Gated promotion: a new version serves a canary share of episodes until the labels say it is not
worse than the promoted version (promote) or that it is (roll back, refused for good).

The rule (``PromotionConfig``, docs/promotion.md): each new episode is assigned, for its whole
length, to the canary with probability ``canary_fraction``, else to the promoted version (the
concurrent control). Each arm's success probability has a Beta prior, updated with the operator's
(or auto) labels of the episodes it served since the canary started. With
``q = P(p_canary >= p_promoted - margin)`` under the two Beta posteriors, once both arms have
``min_episodes`` labels: promote at ``q >= promote_confidence``, roll back at
``q <= 1 - rollback_confidence``; at ``max_canary_episodes`` canary labels (the cap) promote if
``q >= promote_confidence``, else roll back.

``decide`` is the pure rule; ``CanaryGate`` keeps the episode assignments and tallies (thread-safe:
the event loop assigns and counts labels, the policy watcher thread decides and writes the registry).
"""

from __future__ import annotations

import math
import random
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field, replace
from typing import Literal

import numpy as np

from deployment.promotion import PromotionConfig

GRID = 4000  # integration points on [0, 1] for q; exact to ~1e-4 at the tallies the cap allows
MAX_ASSIGNMENTS = 8192  # episode -> version assignments kept (an episode's label comes soon after it ends)


@dataclass
class Tally:
    """Labelled episodes of one arm."""
    successes: int = 0
    failures: int = 0

    @property
    def n(self) -> int:
        return self.successes + self.failures

    @property
    def rate(self) -> float | None:
        return self.successes / self.n if self.n else None

    def add(self, outcome: str) -> None:
        if outcome == "success":
            self.successes += 1
        elif outcome == "failure":
            self.failures += 1


@dataclass
class Decision:
    action: Literal["promote", "rollback", "continue"]
    prob_not_worse: float
    reason: str


def _beta_pdf(a: float, b: float, x: np.ndarray) -> np.ndarray:
    log_norm = math.lgamma(a) + math.lgamma(b) - math.lgamma(a + b)
    return np.exp((a - 1) * np.log(x) + (b - 1) * np.log1p(-x) - log_norm)


def prob_not_worse(canary: Tally, control: Tally, margin: float, prior: tuple[float, float] = (1.0, 1.0)) -> float:
    """P(p_canary >= p_control - margin) with independent Beta(prior + tally) posteriors:
    the integral of f_canary(x) * F_control(x + margin) over [0, 1] on a midpoint grid."""
    x = (np.arange(GRID) + 0.5) / GRID
    f_canary = _beta_pdf(prior[0] + canary.successes, prior[1] + canary.failures, x)
    f_canary /= f_canary.sum()
    f_control = _beta_pdf(prior[0] + control.successes, prior[1] + control.failures, x)
    cdf_control = np.cumsum(f_control / f_control.sum())
    # F_control(y) for y = x + margin: interpolated on the grid, 1 beyond it
    cdf_at = np.interp(x + margin, x, cdf_control, left=0.0, right=1.0)
    return float(np.clip((f_canary * cdf_at).sum(), 0.0, 1.0))


def decide(canary: Tally, control: Tally, config: PromotionConfig) -> Decision:
    """The promotion rule on the labels so far (see the module docstring)."""
    q = prob_not_worse(canary, control, config.margin, (config.prior_successes, config.prior_failures))
    stats = (f"canary {canary.successes}/{canary.n}, promoted {control.successes}/{control.n}, "
             f"P(canary >= promoted - {config.margin:g}) = {q:.3f}")
    if canary.n < config.min_episodes or (control.n < config.min_episodes
                                          and canary.n < config.max_canary_episodes):
        return Decision("continue", q, f"waiting for {config.min_episodes} labelled episodes per arm ({stats})")
    if q >= config.promote_confidence:
        return Decision("promote", q, f"not worse by more than {config.margin:g}: {stats} "
                                      f">= {config.promote_confidence:g}")
    if q <= 1.0 - config.rollback_confidence:
        return Decision("rollback", q, f"worse by more than {config.margin:g}: {stats} "
                                       f"<= {1.0 - config.rollback_confidence:.3g}")
    if canary.n >= config.max_canary_episodes:
        return Decision("rollback", q, f"not shown to be not worse within the cap of {config.max_canary_episodes} "
                                       f"episodes: {stats} < {config.promote_confidence:g}")
    return Decision("continue", q, f"undecided ({stats})")


@dataclass
class Canary:
    """One canary run: the candidate against the promoted version, with its tallies."""
    version: int
    control: int
    started: float = field(default_factory=time.time)
    canary: Tally = field(default_factory=Tally)
    promoted: Tally = field(default_factory=Tally)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> Canary:
        return cls(version=int(data["version"]), control=int(data["control"]), started=float(data["started"]),
                   canary=Tally(**data["canary"]), promoted=Tally(**data["promoted"]))


class CanaryGate:
    """Episode assignment and label tallies for the running canary.

    An episode is assigned when its first /v1/act arrives and keeps that version to its end. Its
    label counts only if it was assigned while this canary ran and gating was not paused (a pin
    pauses it): the episodes of both arms are then exactly the concurrent, randomized ones."""

    def __init__(self, config: PromotionConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._rng = random.Random(config.seed)
        self._assigned: OrderedDict[tuple[str, str], tuple[int, int]] = OrderedDict()  # -> (version, window)
        self._window = 0          # bumped whenever a canary starts or gating pauses/resumes
        self._paused = False
        self.canary: Canary | None = None
        self.dirty = False        # tallies changed since the last save

    # ---- lifecycle (policy watcher thread)

    def start(self, canary: Canary) -> None:
        with self._lock:
            self.canary = canary
            self._window += 1
            self.dirty = True

    def end(self) -> Canary | None:
        with self._lock:
            ended, self.canary = self.canary, None
            self._window += 1
            return ended

    def pause(self, paused: bool) -> None:
        with self._lock:
            if paused != self._paused:
                self._paused = paused
                self._window += 1

    def decision(self) -> Decision | None:
        with self._lock:  # copy the tallies; the integral runs without the lock assign() needs
            if self.canary is None or self._paused:
                return None
            canary, promoted = replace(self.canary.canary), replace(self.canary.promoted)
        return decide(canary, promoted, self.config)

    def snapshot(self) -> Canary | None:
        with self._lock:
            return None if self.canary is None else Canary.from_json(self.canary.to_json())

    # ---- serving side (event loop)

    def assign(self, robot_id: str, episode_id: str, promoted: int) -> int:
        """The version serving this episode (drawn at its first request)."""
        key = (robot_id, episode_id)
        with self._lock:
            found = self._assigned.get(key)
            if found is not None:
                return found[0]
            canary = self.canary
            if canary is None or self._paused or canary.control != promoted:
                version = promoted
            else:
                version = canary.version if self._rng.random() < self.config.canary_fraction else promoted
            self._assigned[key] = (version, self._window)
            while len(self._assigned) > MAX_ASSIGNMENTS:
                self._assigned.popitem(last=False)
            return version

    def record_label(self, robot_id: str, episode_id: str, outcome: str) -> str | None:
        """Count a label for the arm that served the episode; returns "canary"/"promoted" or None
        (not an episode of the running canary's window, or a discard)."""
        with self._lock:
            key = (robot_id, episode_id)
            found = self._assigned.get(key)
            canary = self.canary
            if found is None or canary is None or self._paused or outcome not in ("success", "failure"):
                return None
            version, window = found
            if window != self._window:
                return None
            self._assigned[key] = (version, -1)  # counted: a second label never counts twice
            if version == canary.version:
                canary.canary.add(outcome)
                arm = "canary"
            elif version == canary.control:
                canary.promoted.add(outcome)
                arm = "promoted"
            else:
                return None
            self.dirty = True
            return arm
