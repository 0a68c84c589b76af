"""RECAP's advantage labels: which steps the policy should imitate when asked for "positive".

Per decision i of an episode (every H-th step, H the chunk), with G the normalized return
(learner/recap/value.py) and V the value function's prediction, the n-step advantage is

    A_i = (G_i - G_{i+n}) + V_{i+n} - V_i     (the steps spent over the next n decisions, bootstrapped)
    A_i = G_i - V_i                           (fewer than n decisions left: the Monte-Carlo return)

and a decision is labelled positive when A_i reaches its task's threshold: the `percentile` of the
advantages of the policy's own decisions of that task (default 70: the best 30 % of the robot's
steps are positive). Per task, because tasks differ in how much a step can gain. Every step of a
decision carries its label; the SFT target of a step is its next H executed actions.

Why 70 (30 % positive): the positive set must be clearly better than what the policy does on
average -- at the median, half of a weak policy's aimless steps would be "positive" -- yet large
enough for SFT to learn the conditioned policy from; pi*0.6 chooses its threshold the same way (a
fixed share of the data positive per task). The share of positive steps is reported
(`labels_positive_fraction`), and `learner.recap.positive_percentile` changes it.

* Steps an operator drove are positive whatever the value function says (they are the corrections).
* Expert demonstrations are judged against the policy's threshold like any other step.
* A task with no success in the store yet (no successful episode of any source): its value targets
  are all failures, so its advantages only rank failures against each other; its policy steps are
  all labelled negative (stated fallback, reported in ``tasks_without_success``). A store where no
  step at all is positive leaves nothing to ask for: `NoPositiveSteps`, and nothing is trained.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class LabelConfig:
    n_step: int = 2
    """n: decisions looked ahead before bootstrapping with V (2 x H=4 = 8 steps on the mock)."""
    percentile: float = 70.0
    """Per-task threshold: this percentile of the policy's own advantages."""


class NoPositiveSteps(ValueError):
    """No step in the store is labelled positive: RECAP has nothing to condition "positive" on."""


@dataclass
class EpisodeValues:
    """One episode's decisions: returns, predictions, and who drove them."""

    key: str  # robot_id/episode_id
    task: str  # the threshold group (learner/recap/phase.py: task name + instruction)
    source: str  # expert | online | eval
    success: bool
    steps: np.ndarray  # [N] step numbers of the decisions
    targets: np.ndarray  # [N] G_i
    values: np.ndarray  # [N] V_i
    operator: np.ndarray  # [N] bool: an operator drove this decision's steps
    advantages: np.ndarray = field(default_factory=lambda: np.zeros(0, np.float32))
    positive: np.ndarray = field(default_factory=lambda: np.zeros(0, bool))
    weights: np.ndarray | None = None  # [N] AWR's sample weights (learner/recap/awr.py); None = RECAP


def n_step_advantages(targets: np.ndarray, values: np.ndarray, n: int) -> np.ndarray:
    """[N] A_i as in the module docstring."""
    targets, values = np.asarray(targets, np.float64), np.asarray(values, np.float64)
    out = targets - values  # Monte-Carlo where fewer than n decisions are left
    if n >= 1 and len(targets) > n:
        out[:-n] = targets[:-n] - targets[n:] + values[n:] - values[:-n]
    return out.astype(np.float32)


def is_policy_step(ep: EpisodeValues) -> np.ndarray:
    """[N] decisions the policy made (not a demonstration, not the operator)."""
    return np.full(len(ep.steps), ep.source != "expert") & ~ep.operator


def label_episodes(episodes: list[EpisodeValues], cfg: LabelConfig) -> dict:
    """Fill every episode's `advantages` and `positive`; returns the thresholds and the report."""
    for ep in episodes:
        ep.advantages = n_step_advantages(ep.targets, ep.values, cfg.n_step)
    tasks = sorted({ep.task for ep in episodes})
    succeeded = {ep.task for ep in episodes if ep.success}
    thresholds: dict[str, float | None] = {}
    for task in tasks:
        own = [ep.advantages[is_policy_step(ep)] for ep in episodes if ep.task == task]
        own = np.concatenate(own) if own else np.zeros(0, np.float32)
        thresholds[task] = float(np.percentile(own, cfg.percentile)) if len(own) else None
    for ep in episodes:
        threshold = thresholds[ep.task]
        if ep.task not in succeeded:
            ep.positive = ep.operator.copy()  # no success to tell good from bad: only the operator's steps
        elif threshold is None:
            ep.positive = np.ones(len(ep.steps), bool)  # demos (or operator) only: nothing to compare with
        else:
            ep.positive = (ep.advantages >= threshold) | ep.operator
    n = sum(len(ep.steps) for ep in episodes)
    n_pos = sum(int(ep.positive.sum()) for ep in episodes)
    if n_pos == 0:
        raise NoPositiveSteps(f"no step of the {len(episodes)} labelled episodes is positive (no success, demo "
                              "or operator correction in the store): RECAP has nothing to imitate")
    policy = [(ep.positive & is_policy_step(ep)) for ep in episodes]
    n_policy = sum(int(is_policy_step(ep).sum()) for ep in episodes)
    return {"thresholds": thresholds, "tasks_without_success": [t for t in tasks if t not in succeeded],
            "labels_decisions": n, "labels_positive_fraction": n_pos / n if n else 0.0,
            "labels_policy_positive_fraction": sum(int(p.sum()) for p in policy) / n_policy if n_policy else 0.0,
            "labels_expert_positive_fraction": _fraction([ep.positive for ep in episodes if ep.source == "expert"]),
            "labels_operator_decisions": sum(int(ep.operator.sum()) for ep in episodes)}


def _fraction(arrays: list[np.ndarray]) -> float:
    n = sum(len(a) for a in arrays)
    return sum(int(a.sum()) for a in arrays) / n if n else float("nan")

