"""Early stop on stalled progress: end an episode whose predicted progress has not risen for a while.

A failure runs to its step limit (about twice the expert's slowest episode), so most of a failed
episode's robot time is spent after it stopped getting anywhere. The rule: the per-decision
predictions are smoothed by a causal running median over ``smooth`` decisions (one misread frame must
neither cut an episode nor set a best that real progress then has to beat); at a decision, if the
best smoothed progress seen in the episode has not grown by ``min_gain`` over the last ``window``
decisions, the episode is stalled and ends with reason ``stalled``, stored as a failure with that reason -- never
silently. It never fires in a greedy evaluation episode unless ``in_greedy`` is asked for (an
evaluation must measure the policy, not the stop).

Numpy only: the learner measures it, and whichever process ends episodes (the server's
``end_episode`` command) can apply it without training code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

STALLED = "stalled"


@dataclass(frozen=True)
class StallRule:
    window: int = 8
    """Decisions without enough gain before the episode counts as stalled."""
    min_gain: float = 0.02
    """Growth of the best progress seen that counts as getting somewhere."""
    smooth: int = 3
    """Decisions in the causal running median the rule looks at (1: the raw predictions)."""
    in_greedy: bool = False
    """Also stop greedy evaluation episodes (off: an evaluation measures the policy alone)."""

    def __post_init__(self) -> None:
        if self.window < 1 or self.smooth < 1:
            raise ValueError(f"window and smooth must be >= 1 decision, got {self.window} and {self.smooth}")
        if not 0.0 < self.min_gain < 1.0:
            raise ValueError(f"min_gain must be in (0, 1), got {self.min_gain}")

    def applies(self, mode: str) -> bool:
        """Whether the rule may stop an episode run in `mode` ("sample" | "greedy")."""
        return mode != "greedy" or self.in_greedy

    def stop_index(self, progress: Sequence[float]) -> int | None:
        """The first decision at which an episode with these per-decision predictions would be cut
        (None: never): the best smoothed progress of decisions 0..t has gained < min_gain over the best
        of 0..t-window."""
        first = self.smooth - 1  # the first decision with a full median behind it
        smooth = smoothed(progress, self.smooth)[first:]
        best = np.maximum.accumulate(smooth) if len(smooth) else smooth
        for t in range(self.window, len(best)):
            if best[t] - best[t - self.window] < self.min_gain:
                return t + first
        return None


def smoothed(progress: Sequence[float], k: int) -> np.ndarray:
    """Causal running median: at t the median of decisions max(0, t-k+1)..t."""
    p = np.asarray(progress, np.float64)
    return np.array([np.median(p[max(0, t - k + 1):t + 1]) for t in range(len(p))])


@dataclass
class StallMonitor:
    """The rule applied live, one decision at a time, for one episode."""
    rule: StallRule
    mode: str = "sample"
    best: list[float] = field(default_factory=list)
    recent: list[float] = field(default_factory=list)

    def update(self, progress: float) -> str | None:
        """Feed one decision's predicted progress; ``STALLED`` when the episode should end now."""
        self.recent = [*self.recent, float(progress)][-self.rule.smooth:]
        if len(self.recent) < self.rule.smooth:
            return None
        p = float(np.median(self.recent))
        self.best.append(max(p, self.best[-1]) if self.best else p)
        t = len(self.best) - 1
        if not self.rule.applies(self.mode) or t < self.rule.window:
            return None
        return STALLED if self.best[t] - self.best[t - self.rule.window] < self.rule.min_gain else None


def cut_measurement(episodes: Sequence[tuple[Sequence[float], bool, int]], rule: StallRule) -> dict:
    """How the rule would have done on episodes that ran to their end: (per-decision progress, whether
    the episode succeeded, its executed steps). Returns the cut count, the fraction of cut episodes that
    would have succeeded (the cost of the rule), the share of all successes it would have lost, and the
    fraction of steps it would have saved."""
    n_cut = cut_success = successes = 0
    steps_total = steps_saved = 0.0
    for progress, success, steps in episodes:
        steps_total += steps
        successes += bool(success)
        t = rule.stop_index(progress)
        if t is None:
            continue
        n_cut += 1
        cut_success += bool(success)
        if len(progress):  # the stop lands at decision t of len(progress): the rest is saved
            steps_saved += steps * (1.0 - (t + 1) / len(progress))
    n = len(episodes)
    return {"episodes": n, "cut": n_cut, "cut_fraction": n_cut / n if n else None,
            "cut_would_succeed": cut_success,
            "false_cut_fraction": cut_success / n_cut if n_cut else None,
            "successes": successes, "successes_lost_fraction": cut_success / successes if successes else None,
            "steps_saved_fraction": steps_saved / steps_total if steps_total else None,
            "window": rule.window, "min_gain": rule.min_gain, "smooth": rule.smooth}
