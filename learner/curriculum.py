"""The curriculum: which task the robots practise next, from recent success per task.

Rules (``CurriculumConfig.rule``):

* ``uniform``: every task alike (the baseline, and today's behaviour with one task).
* ``vla_rl``: VLA-RL's P(task) proportional to exp((0.5 - s) / tau), s the task's recent success rate:
  the less a task succeeds, the more it is practised, exponentially (a task at 50 % has weight 1, one
  at 0 % e^(0.5 / tau), a solved one e^(-0.5 / tau)); the floor keeps the solved ones practised.
* ``learning_progress``: proportional to |s_recent - s_before|, the change of success between the
  last ``window`` episodes of a task and the ``window`` before (absolute learning progress): practise
  where success is moving; all flat gives uniform.

Every rule's weights are then mixed with a floor, w = floor + (1 - K * floor) * w_rule, so no task
ever gets less than ``floor`` (none is starved, and a task that got worse is noticed). A task with
few episodes has its success smoothed towards 1/2 (Laplace: (successes + 1) / (n + 2)).

``write_curriculum`` writes the weights, the inputs behind them and the robot time spent per task
to ``runs/<run>/curriculum.json`` atomically; the server reads it with ``deployment.curriculum``
without importing the learner. An operator's pinned task is recorded there and wins over the draw.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

from deployment.curriculum import CURRICULUM_FILE, RULES, CurriculumError, check_tasks
from episodes.durable import write_json_atomic
from episodes.robot_time import RobotTimeConfig, robot_time


@dataclass(frozen=True)
class CurriculumConfig:
    rule: str = "vla_rl"
    tau: float = 0.2
    """Temperature of the vla_rl rule (smaller: sharper preference for the least successful tasks)."""
    floor: float = 0.05
    """Least probability of any task."""
    window: int = 20
    """Recent episodes per task the success rate is taken over (learning progress: two such windows)."""
    pinned: str | None = None
    """A task an operator pinned: every robot practises it until unpinned."""

    def __post_init__(self) -> None:
        if self.rule not in RULES:
            raise CurriculumError(f"unknown curriculum rule {self.rule!r} (one of {', '.join(RULES)})")
        if self.tau <= 0 or self.window < 1 or not 0.0 <= self.floor < 1.0:
            raise CurriculumError("tau > 0, window >= 1 and floor in [0, 1) are required")


def outcomes_by_task(metas: list[dict], tasks: list[str]) -> dict[str, list[bool]]:
    """Per task, the success of its robot episodes (online and eval, labelled), oldest first."""
    out: dict[str, list[bool]] = {t: [] for t in tasks}
    for m in sorted(metas, key=lambda m: m.get("finished", 0)):
        task = m.get("task")
        if task in out and m.get("source") in ("online", "eval") and m.get("outcome") in ("success", "failure"):
            out[task].append(m["outcome"] == "success")
    return out


def smoothed_success(outcomes: list[bool]) -> float:
    return (sum(outcomes) + 1.0) / (len(outcomes) + 2.0)


def rule_weights(outcomes: dict[str, list[bool]], cfg: CurriculumConfig) -> dict[str, float]:
    """The rule's own weights (summing to 1), before the floor."""
    tasks = list(outcomes)
    if cfg.rule == "uniform":
        raw = {t: 1.0 for t in tasks}
    elif cfg.rule == "vla_rl":
        s = {t: smoothed_success(outcomes[t][-cfg.window:]) for t in tasks}
        top = max((0.5 - v) / cfg.tau for v in s.values())  # subtract the max: no overflow
        raw = {t: math.exp((0.5 - s[t]) / cfg.tau - top) for t in tasks}
    else:
        raw = {t: abs(smoothed_success(o[-cfg.window:]) - smoothed_success(o[-2 * cfg.window:-cfg.window]))
               for t, o in outcomes.items()}
        if sum(raw.values()) <= 1e-12:
            raw = {t: 1.0 for t in tasks}
    total = sum(raw.values())
    return {t: w / total for t, w in raw.items()}


def task_weights(outcomes: dict[str, list[bool]], cfg: CurriculumConfig) -> dict[str, float]:
    """The rule's weights mixed with the floor: each task gets at least ``floor``."""
    k = len(outcomes)
    if k * cfg.floor > 1.0:
        raise CurriculumError(f"floor {cfg.floor} is too high for {k} tasks (at most {1.0 / k:.3f})")
    return {t: cfg.floor + (1.0 - k * cfg.floor) * w for t, w in rule_weights(outcomes, cfg).items()}


def curriculum(tasks: list[str], known: list[str] | tuple[str, ...], metas: list[dict], cfg: CurriculumConfig,
               time_cfg: RobotTimeConfig | None = None) -> dict:
    """The curriculum document: weights, the success behind them, the pin and robot time per task."""
    tasks = check_tasks(list(tasks), known)
    if cfg.pinned is not None and cfg.pinned not in tasks:
        raise CurriculumError(f"pinned task {cfg.pinned!r} is not in the task list ({', '.join(tasks)})")
    outcomes = outcomes_by_task(metas, tasks)
    spent = robot_time([m for m in metas if m.get("task") in tasks], time_cfg).per_task
    return {"rule": cfg.rule, "tau": cfg.tau, "floor": cfg.floor, "window": cfg.window, "pinned": cfg.pinned,
            "weights": task_weights(outcomes, cfg),
            "success": {t: smoothed_success(o[-cfg.window:]) for t, o in outcomes.items()},
            "episodes": {t: len(o) for t, o in outcomes.items()},
            "robot_s": {t: spent.get(t, {}).get("robot_s", 0.0) for t in tasks},
            "updated": time.time()}


def write_curriculum(run_dir: str | Path, tasks: list[str], known: list[str] | tuple[str, ...],
                     metas: list[dict], cfg: CurriculumConfig, time_cfg: RobotTimeConfig | None = None) -> dict:
    """Compute the curriculum and publish it atomically as ``<run_dir>/curriculum.json``."""
    doc = curriculum(tasks, known, metas, cfg, time_cfg)
    write_json_atomic(Path(run_dir) / CURRICULUM_FILE, doc)
    return doc


def publish_for_deployment(config, run_dir: str | Path, metas: list[dict]) -> dict | None:
    """After a phase: the curriculum of the deployment's task list (robot.tasks) from `metas` (its
    stored robot episodes), written to curriculum.json; None when `learner.curriculum` is off or the
    robot has fewer than two tasks to choose between."""
    section = config.learner.curriculum
    names = [t.name for t in config.robot.tasks]
    if not section.enabled or len(names) < 2:
        return None
    cfg = CurriculumConfig(rule=section.rule, tau=section.tau, floor=section.floor, window=section.window)
    robot = [m for m in metas if m.get("source") in ("online", "eval")]
    return write_curriculum(run_dir, names, names, robot, cfg,
                            RobotTimeConfig(period_s=1.0 / config.robot.rate_hz))
