"""A scripted operator for the simulators: the scene's expert takes over when the policy goes wrong.

It stands in for a person watching the arm with a gamepad in hand, so the value of interventions can
be measured where the true outcome is known. Per scene, every control step:

* **stall**: over the last ``stall_window`` steps the end effector moved less than
  ``stall_distance`` (and the episode is not over) -- the policy is stuck;
* **off the tube**: the policy's proposed translation points more than ``max_angle_deg`` away from
  the expert's for ``deviation_steps`` steps in a row (counted only while the expert wants to move)
  -- the policy is leaving the path the expert would take;

either one starts a TAKEOVER if the budget allows it: the expert drives for ``segment_steps`` steps,
then hands back at the next decision boundary (the policy then plans a fresh chunk from where the
expert left the arm). The budget: at most ``max_takeovers`` per episode, no takeover before the
policy has had ``grace_steps``, and intervention steps stay within ``budget_fraction`` of every step
this intervener has seen (across all its episodes; a takeover starts only if its whole segment
fits). When it cannot cover every scene that triggered at once, the worst go first: stalls, then
the widest angle off the expert.

Backend-agnostic: it reads positions (the first 3 state values) and compares 7-D actions; the
mock's ``VecScene`` and MetaWorld's ``MetaWorldVec`` both give those and ``expert_actions``.
``learner.evaluate.rollout(..., intervener=...)`` executes the expert's action on driven steps and
records them as interventions.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class InterventionConfig:
    segment_steps: int = 8
    """Steps the expert drives once it took over (then it hands back at the next decision)."""
    budget_fraction: float = 0.10
    """Intervention steps may be at most this share of all steps this intervener has seen."""
    max_takeovers: int = 2
    """Takeovers per episode at most."""
    grace_steps: int = 2
    """Steps the policy drives before the first takeover of an episode can happen."""
    stall_window: int = 4
    """Steps over which end-effector progress is measured for the stall trigger."""
    stall_distance: float = 0.01
    """Metres: less end-effector travel than this over ``stall_window`` steps is a stall."""
    max_angle_deg: float = 60.0
    """The tube: a proposed translation more than this many degrees off the expert's is a deviation."""
    deviation_steps: int = 3
    """Consecutive deviating steps that trigger a takeover."""
    min_expert_move: float = 1e-3
    """Metres per step: below this the expert is not moving and direction is not compared."""
    expert_noise: float = 0.0
    """Noise of the expert's actions while it drives (sim expert noise scale, 0 = exact)."""

    def __post_init__(self) -> None:
        if self.segment_steps < 1 or self.max_takeovers < 0 or self.grace_steps < 0:
            raise ValueError("segment_steps >= 1, max_takeovers >= 0 and grace_steps >= 0 are required")
        if not 0.0 <= self.budget_fraction <= 1.0:
            raise ValueError(f"budget_fraction must lie in [0, 1], got {self.budget_fraction}")
        if self.stall_window < 1 or self.deviation_steps < 1:
            raise ValueError("stall_window and deviation_steps must be >= 1")


def _angle_deg(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise angle between two [N, 3] vectors in degrees (180 where a is zero)."""
    na, nb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
    cos = np.einsum("ij,ij->i", a, b) / np.maximum(na * nb, 1e-12)
    return np.where(na > 1e-12, np.degrees(np.arccos(np.clip(cos, -1.0, 1.0))), 180.0)


class ScriptedIntervener:
    """Decides, per scene and step, whether the expert drives. State lives per batch of episodes
    (``start``) and, for the budget, across all of them (``steps_seen``, ``intervention_steps``)."""

    def __init__(self, cfg: InterventionConfig | None = None):
        self.cfg = cfg or InterventionConfig()
        self.steps_seen = 0
        self.intervention_steps = 0
        self.takeovers = 0
        self.start(0)

    def start(self, n: int) -> None:
        """A new batch of ``n`` episodes (the budget carries over)."""
        self.n = n
        self.driving = np.zeros(n, bool)
        self.remaining = np.zeros(n, int)
        self.episode_takeovers = np.zeros(n, int)
        self.episode_steps = np.zeros(n, int)
        self.deviating = np.zeros(n, int)
        self.history: list[np.ndarray] = []  # positions, one [N, 3] per step

    def _fits_budget(self) -> bool:
        c = self.cfg
        pending = int(np.clip(self.remaining[self.driving], 0, None).sum())  # running segments will use these
        return (self.intervention_steps + pending + c.segment_steps
                <= c.budget_fraction * (self.steps_seen + c.segment_steps))

    def decide(self, proposed: np.ndarray, expert: np.ndarray, states: np.ndarray, live: np.ndarray,
               decision_boundary: bool) -> np.ndarray:
        """[N] bool: the scenes the expert drives this step. ``proposed`` / ``expert`` are [N, 7]
        actions for this step, ``states`` [N, >=3] (position first), ``live`` the scenes still
        running, ``decision_boundary`` whether the policy plans a new chunk at this step (a segment
        ends only there). Call once per executed step."""
        c = self.cfg
        live = np.asarray(live, bool)
        pos = np.asarray(states, np.float64)[:, :3]
        self.history.append(pos.copy())
        # a finished segment hands back where the policy plans afresh
        done_segment = self.driving & (self.remaining <= 0) & decision_boundary
        self.driving &= ~done_segment
        expert_moves = np.linalg.norm(expert[:, :3], axis=1) > c.min_expert_move
        angle = _angle_deg(np.asarray(proposed, np.float64)[:, :3], np.asarray(expert, np.float64)[:, :3])
        off = (angle > c.max_angle_deg) & expert_moves
        self.deviating = np.where(off & ~self.driving, self.deviating + 1, 0)
        stalled = np.zeros(self.n, bool)
        if len(self.history) > c.stall_window:
            travel = np.linalg.norm(pos - self.history[-1 - c.stall_window], axis=1)
            stalled = (travel < c.stall_distance) & (self.episode_steps >= c.stall_window)
        trigger = (live & ~self.driving & (stalled | (self.deviating >= c.deviation_steps))
                   & (self.episode_steps >= c.grace_steps) & (self.episode_takeovers < c.max_takeovers))
        # when the budget cannot cover them all, the worst first: stalls, then the widest angle off
        for i in sorted(np.flatnonzero(trigger), key=lambda i: (not stalled[i], -angle[i])):
            if not self._fits_budget():
                break
            self.driving[i] = True
            self.remaining[i] = c.segment_steps
            self.episode_takeovers[i] += 1
            self.takeovers += 1
            self.deviating[i] = 0
        self.driving &= live  # an episode that ended mid-segment is not driven any more
        driven = self.driving.copy()
        self.remaining -= driven.astype(int)
        self.intervention_steps += int(driven.sum())
        self.steps_seen += int(live.sum())
        self.episode_steps += live.astype(int)
        return driven

    def stats(self) -> dict:
        return {"steps_seen": self.steps_seen, "intervention_steps": self.intervention_steps,
                "takeovers": self.takeovers,
                "intervention_fraction": self.intervention_steps / self.steps_seen if self.steps_seen else 0.0,
                "config": asdict(self.cfg)}
