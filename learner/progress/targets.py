"""Progress targets from the robot's own data: what the progress model is taught to predict.

Per stored step of an episode a target in [0, 1] (torch-free; the trainer samples it at the
episode's decision steps):

* a success (an expert demo, or an online episode that ended in success): progress runs from 0 at the
  first step to 1 at the last. With ``milestones`` (VLA-RL's automatically extracted task segments)
  the episode is cut at its keyframes -- gripper open/close events and pauses of the end effector
  (near-zero velocity after a move) -- and each segment earns an equal share: a sub-goal reached is
  worth the same however long it took, so a slow approach does not swamp a quick grasp.
* a failure: the same shape, but it ends at ``failure_cap`` (default 0.5) instead of 1: the episode
  went somewhere, it did not get there. Its late states teach the model that "late" is not "done".
* takeover points: an operator took the arm because the policy was going wrong, so the last
  ``takeover_flat_steps`` policy steps before each takeover earn no progress (flat); the operator's
  own steps progress as the outcome says.
* labels: the outcome decides, whoever gave it (the operator's label overrides the simulator's;
  reward-model labels only where the deployment trusts them: ``learner.episode_rules.is_trainable``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class TargetConfig:
    milestones: bool = True
    """Cut episodes at keyframes, equal progress per segment (else progress is linear in time)."""
    failure_cap: float = 0.5
    """Progress a failed episode ends at."""
    gripper_delta: float = 0.5
    """A change of the commanded gripper (0 closed .. 1 open) this large between steps is an open/close event."""
    still_speed: float = 0.002
    """End-effector translation per step (m) below which the arm counts as still."""
    still_steps: int = 3
    """Consecutive still steps after a move that make a pause keyframe (at the first of them)."""
    min_gap: int = 3
    """Keyframes fewer steps apart than this (or from the episode's ends) are merged into the first."""
    takeover_flat_steps: int = 10
    """Policy steps before a takeover that earn no progress."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.failure_cap < 1.0:
            raise ValueError(f"failure_cap must be in [0, 1), got {self.failure_cap}")
        if self.still_steps < 1 or self.min_gap < 1 or self.takeover_flat_steps < 0:
            raise ValueError("still_steps >= 1, min_gap >= 1 and takeover_flat_steps >= 0 are required")


def keyframes(positions: np.ndarray, gripper: np.ndarray, cfg: TargetConfig) -> list[int]:
    """Step indices (inside (0, T-1)) where a sub-goal was reached: the gripper opened or closed, or
    the end effector came to rest after moving. positions [T, 3] m, gripper [T] commanded opening."""
    positions, gripper = np.asarray(positions, np.float64), np.asarray(gripper, np.float64)
    n = len(positions)
    if n < 3:
        return []
    found = set(np.flatnonzero(np.abs(np.diff(gripper)) >= cfg.gripper_delta) + 1)
    speed = np.linalg.norm(np.diff(positions, axis=0), axis=1)  # speed[i]: move from step i to i+1
    still = speed < cfg.still_speed
    moved = False
    run = 0
    for i, s in enumerate(still):
        if not s:
            moved, run = True, 0
            continue
        run += 1
        if moved and run == cfg.still_steps:  # a pause after a move: the pause starts at step i - run + 1
            found.add(i - run + 1)
            moved = False
    kept: list[int] = []
    for k in sorted(found):
        if k < cfg.min_gap or k > n - 1 - cfg.min_gap:
            continue
        if kept and k - kept[-1] < cfg.min_gap:
            continue
        kept.append(int(k))
    return kept


def takeover_starts(interventions: np.ndarray) -> list[int]:
    """Indices where a run of operator-driven steps begins."""
    flags = np.asarray(interventions, bool)
    return [i for i in range(len(flags)) if flags[i] and (i == 0 or not flags[i - 1])]


def progressing_steps(interventions: np.ndarray, cfg: TargetConfig) -> np.ndarray:
    """[T] bool: the steps that earn progress (all but the policy's last steps before each takeover)."""
    flags = np.asarray(interventions, bool)
    earn = np.ones(len(flags), bool)
    for start in takeover_starts(flags):
        lo = start - cfg.takeover_flat_steps
        for i in range(max(0, lo), start):
            if not flags[i]:
                earn[i] = False
    return earn


def step_targets(positions: np.ndarray, gripper: np.ndarray, success: bool, cfg: TargetConfig,
                 interventions: np.ndarray | None = None) -> np.ndarray:
    """[T] progress target of every step of one episode (see the module doc)."""
    n = len(positions)
    if n == 0:
        return np.zeros(0)
    end = 1.0 if success else cfg.failure_cap
    if n == 1:
        return np.array([end])
    earn = progressing_steps(np.zeros(n, bool) if interventions is None else interventions, cfg)
    # the episode's own clock: advances one per earning step (step 0 starts it at 0)
    clock = np.concatenate([[0.0], np.cumsum(earn[1:].astype(np.float64))])
    if clock[-1] == 0:
        return np.zeros(n)
    marks = [0, *(keyframes(positions, gripper, cfg) if cfg.milestones else []), n - 1]
    at = np.unique(clock[marks])  # keyframes in clock time; flat stretches can merge two of them
    share = np.linspace(0.0, 1.0, len(at))  # equal progress per segment
    return end * np.interp(clock, at, share)


def episode_step_targets(steps: list[dict], success: bool, cfg: TargetConfig) -> np.ndarray:
    """Targets from stored step records (``state`` [x, y, z, r, p, y, gripper], ``action`` with the
    commanded gripper last, ``intervention``)."""
    states = np.asarray([s["state"] for s in steps], np.float64).reshape(len(steps), -1)
    gripper = np.asarray([(s.get("action") or s["state"])[-1] for s in steps], np.float64)
    driven = np.asarray([bool(s.get("intervention")) for s in steps], bool)
    return step_targets(states[:, :3] if len(steps) else np.zeros((0, 3)), gripper, success, cfg, driven)
