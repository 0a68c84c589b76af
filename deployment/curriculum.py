"""The curriculum's file in the run directory: the learner writes the task weights, the server reads them.

``runs/<run>/curriculum.json`` (written atomically by ``learner.curriculum``):

    {"rule": "vla_rl", "weights": {"reach": 0.41, "push": 0.34, ...}, "pinned": null,
     "success": {...}, "episodes": {...}, "updated": <unix time>}

This module is what a reader needs -- reading, checking and drawing the next task -- and imports
nothing of the learner, so the server (and the operator page behind it) can use it as the process
boundaries require: server/scene.py draws a robot's next task from it (docs/progress_model.md).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

CURRICULUM_FILE = "curriculum.json"
RULES = ("uniform", "vla_rl", "learning_progress")


class CurriculumError(ValueError):
    pass


def check_tasks(tasks: list[str], known: list[str] | tuple[str, ...]) -> list[str]:
    """The deployment's task list, refused (with the known names) if it names an unknown task, repeats
    one, or is empty."""
    if not tasks:
        raise CurriculumError(f"the task list is empty (known tasks: {', '.join(known)})")
    unknown = [t for t in tasks if t not in known]
    if unknown:
        raise CurriculumError(f"unknown task(s) {', '.join(map(repr, unknown))} (known tasks: {', '.join(known)})")
    repeated = sorted({t for t in tasks if tasks.count(t) > 1})
    if repeated:
        raise CurriculumError(f"task(s) listed twice: {', '.join(repeated)}")
    return list(tasks)


def check_weights(weights: dict) -> dict[str, float]:
    """Weights that are a probability distribution over named tasks, else CurriculumError."""
    if not isinstance(weights, dict) or not weights:
        raise CurriculumError("curriculum weights must be a non-empty mapping task -> weight")
    out = {}
    for task, w in weights.items():
        if not isinstance(w, (int, float)) or not 0.0 <= w <= 1.0:
            raise CurriculumError(f"weight of task {task!r} must be a number in [0, 1], got {w!r}")
        out[str(task)] = float(w)
    if abs(sum(out.values()) - 1.0) > 1e-6:
        raise CurriculumError(f"curriculum weights sum to {sum(out.values()):.6f}, not 1")
    return out


def read_curriculum(run_dir: str | Path) -> dict | None:
    """The learner's current curriculum, checked (None before the learner wrote one)."""
    path = Path(run_dir) / CURRICULUM_FILE
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as e:
        raise CurriculumError(f"{path} is not JSON: {e}") from e
    data["weights"] = check_weights(data.get("weights"))
    return data


def next_task(curriculum: dict, rng: random.Random, pinned: str | None = None) -> str:
    """The task a robot practises next: an operator's pin wins (it must be one of the tasks), else a
    draw from the weights."""
    weights = curriculum["weights"]
    pin = pinned or curriculum.get("pinned")
    if pin is not None:
        if pin not in weights:
            raise CurriculumError(f"pinned task {pin!r} is not in the task list ({', '.join(weights)})")
        return pin
    tasks = list(weights)
    return rng.choices(tasks, weights=[weights[t] for t in tasks], k=1)[0]
