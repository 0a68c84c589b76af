"""The curriculum's task weights (uniform, VLA-RL's rule, learning progress, the floor, the pin) and
its file: written atomically by the learner, read and drawn from without the learner."""

from __future__ import annotations

import json
import math
import random

import pytest

from deployment.curriculum import CURRICULUM_FILE, CurriculumError, check_weights, next_task, read_curriculum
from learner.curriculum import CurriculumConfig, curriculum, task_weights, write_curriculum

KNOWN = ("reach", "push", "pick_place")


def _episodes(task: str, outcomes: str, start: float = 0.0) -> list[dict]:
    """'s' success, 'f' failure, in time order."""
    return [{"robot_id": "sim0", "episode_id": f"{task}-{i}", "task": task, "source": "online",
             "outcome": "success" if c == "s" else "failure", "n_steps": 30, "finished": start + i}
            for i, c in enumerate(outcomes)]


def test_uniform_is_the_baseline():
    w = task_weights({"reach": [True] * 10, "push": []}, CurriculumConfig(rule="uniform"))
    assert w == {"reach": 0.5, "push": 0.5}


def test_vla_rl_rule_is_exp_of_half_minus_success_over_tau_then_the_floor():
    outcomes = {"reach": [True] * 8, "push": [False] * 8, "pick_place": [True, False] * 4}
    cfg = CurriculumConfig(rule="vla_rl", tau=0.2, floor=0.05, window=20)
    w = task_weights(outcomes, cfg)
    s = {"reach": 9 / 10, "push": 1 / 10, "pick_place": 5 / 10}  # Laplace-smoothed success
    raw = {t: math.exp((0.5 - v) / 0.2) for t, v in s.items()}
    total = sum(raw.values())
    for t in KNOWN:
        assert w[t] == pytest.approx(0.05 + (1 - 3 * 0.05) * raw[t] / total)
    assert sum(w.values()) == pytest.approx(1.0)
    assert w["push"] > w["pick_place"] > w["reach"] >= 0.05  # the least successful is practised most


def test_floor_keeps_every_task_and_a_too_high_floor_is_refused():
    outcomes = {"reach": [True] * 20, "push": [False] * 20}
    w = task_weights(outcomes, CurriculumConfig(rule="vla_rl", tau=0.01, floor=0.1))
    assert w["reach"] == pytest.approx(0.1) and w["push"] == pytest.approx(0.9)
    with pytest.raises(CurriculumError, match="too high for 2 tasks"):
        task_weights(outcomes, CurriculumConfig(floor=0.6))


def test_learning_progress_prefers_the_task_whose_success_moves():
    moving = [False] * 10 + [True] * 10
    flat = [True, False] * 10
    w = task_weights({"reach": moving, "push": flat}, CurriculumConfig(rule="learning_progress", window=10, floor=0.0))
    assert w["reach"] == pytest.approx(1.0) and w["push"] == pytest.approx(0.0)
    none_moving = task_weights({"reach": flat, "push": flat}, CurriculumConfig(rule="learning_progress", window=10))
    assert none_moving["reach"] == pytest.approx(0.5)


def test_unknown_tasks_rules_and_pins_are_refused_with_the_known_names():
    with pytest.raises(CurriculumError, match=r"unknown task\(s\) 'wipe' \(known tasks: reach, push, pick_place\)"):
        curriculum(["reach", "wipe"], KNOWN, [], CurriculumConfig())
    with pytest.raises(CurriculumError, match="listed twice: push"):
        curriculum(["push", "push"], KNOWN, [], CurriculumConfig())
    with pytest.raises(CurriculumError, match="unknown curriculum rule 'greedy'"):
        CurriculumConfig(rule="greedy")
    with pytest.raises(CurriculumError, match="pinned task 'pick_place' is not in the task list"):
        curriculum(["reach", "push"], KNOWN, [], CurriculumConfig(pinned="pick_place"))


def test_written_file_is_read_back_and_drawn_from_and_a_pin_wins(tmp_path):
    metas = _episodes("reach", "ssssssss") + _episodes("push", "ffffffff", start=100)
    doc = write_curriculum(tmp_path, ["reach", "push"], KNOWN, metas, CurriculumConfig(rule="vla_rl"))
    assert not list(tmp_path.glob(".*.tmp"))  # temp file renamed away
    read = read_curriculum(tmp_path)
    assert read["weights"] == pytest.approx(doc["weights"]) and read["pinned"] is None
    assert read["episodes"] == {"reach": 8, "push": 8}
    assert read["robot_s"] == {"reach": pytest.approx(8 * (3.0 + 10.0)), "push": pytest.approx(8 * 13.0)}
    rng = random.Random(0)
    draws = [next_task(read, rng) for _ in range(2000)]
    assert draws.count("push") / 2000 == pytest.approx(read["weights"]["push"], abs=0.03)
    assert next_task(read, rng, pinned="reach") == "reach"
    write_curriculum(tmp_path, ["reach", "push"], KNOWN, metas, CurriculumConfig(pinned="reach"))
    assert {next_task(read_curriculum(tmp_path), rng) for _ in range(50)} == {"reach"}


def test_a_broken_weights_file_is_refused_in_one_line(tmp_path):
    assert read_curriculum(tmp_path) is None
    (tmp_path / CURRICULUM_FILE).write_text(json.dumps({"weights": {"reach": 0.7, "push": 0.7}}))
    with pytest.raises(CurriculumError, match="sum to 1.400000, not 1"):
        read_curriculum(tmp_path)
    with pytest.raises(CurriculumError, match="must be a number in"):
        check_weights({"reach": "a lot"})
