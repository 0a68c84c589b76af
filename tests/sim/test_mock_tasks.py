"""Mock tasks: instructions, layouts, the held-out split."""

from __future__ import annotations

import numpy as np
import pytest

from sim.mock import HELD_OUT, MockRobot, is_held_out, split_colors
from sim.mock.sim import COLORS, TABLE_MAX, TABLE_MIN
from sim.mock.tasks import FAMILIES, MAX_STEPS, layout_ok, sample_episode


def test_held_out_split_is_explicit_and_disjoint():
    assert is_held_out("reach", "yellow") and not is_held_out("reach", "red")
    for family in FAMILIES:
        train, held = set(split_colors(family, "train")), set(split_colors(family, "held_out"))
        assert train and held and not train & held and train | held == set(COLORS)
        assert held == {c for f, c in HELD_OUT if f == family}
    with pytest.raises(ValueError):
        split_colors("reach", "test")


def test_demo_and_rl_splits_partition_train():
    for family in FAMILIES:
        demo, rl = set(split_colors(family, "demo")), set(split_colors(family, "rl"))
        assert demo and rl and not demo & rl and demo | rl == set(split_colors(family, "train"))
    assert split_colors("reach", "rl") == ("blue",)
    tasks = [sample_episode(seed, "reach_slots", "demo").task.color for seed in range(60)]
    assert set(tasks) == {"red", "green"}


@pytest.mark.parametrize("family", [*FAMILIES, "mixed"])
def test_train_split_never_samples_held_out(family):
    seen = set()
    for seed in range(300):
        ep = sample_episode(seed, family, "train")
        assert not ep.task.held_out and ep.task.color in ep.task.instruction
        assert ep.task.max_steps == MAX_STEPS[ep.task.family]
        seen.add((ep.task.family, ep.task.color))
    if family != "mixed":
        assert {c for _, c in seen} == set(split_colors(family, "train"))
    held = [sample_episode(seed, family, "held_out").task for seed in range(50)]
    assert all(t.held_out for t in held)


@pytest.mark.parametrize("family", FAMILIES)
def test_layouts_vary_and_respect_constraints(family):
    eps = [sample_episode(seed, family) for seed in range(300)]
    assert all(layout_ok(e.task, e.state) for e in eps)
    assert all(e.state.present[e.task.target] for e in eps)
    assert {int(e.state.present.sum()) for e in eps} == {3, 4}
    xy = np.array([e.start_xy for e in eps])
    assert np.all(xy >= TABLE_MIN) and np.all(xy <= TABLE_MAX) and xy.std(axis=0).min() > 0.05
    assert len({e.task.instruction for e in eps}) >= 8  # varied language
    if family == "push":
        assert {e.task.direction for e in eps} == {"left", "right", "forward", "backward"}
    a, b = sample_episode(17, family), sample_episode(17, family)
    assert a.task == b.task and np.array_equal(a.state.blocks, b.state.blocks)


def test_robot_task_selection():
    robot = MockRobot(task="mixed", seed=5)
    families = {robot.task_name for _ in range(30) if robot.new_episode()}
    assert families == set(FAMILIES)
    robot.new_episode(seed=2, task="push", split="held_out")
    assert robot.task_name == "push" and robot.task.held_out and robot.max_steps == 40
    with pytest.raises(ValueError):
        robot.new_episode(seed=1, task="dance")
