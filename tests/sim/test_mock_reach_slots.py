"""The mock's `reach_slots` task (the demo's task): the reach family on a structured layout (each
colour's block within +-SLOT_JITTER of its own slot). Layout, expert, and agreement of the batched
scenes with the single scene that MockRobot runs (the learner's evaluation and the robot client must
see the same task)."""

import numpy as np

from sim.mock.backend import MockRobot
from sim.mock.sim import COLORS, Scene
from sim.mock.tasks import COLOR_SLOTS, SLOT_JITTER, sample_episode, success
from sim.mock.vec import VecScene, expert_policy, run_policy


def test_reach_slots_layout_expert_and_vec_agree():
    for seed in range(200):
        ep = sample_episode(seed, "reach_slots")
        assert ep.task.family == "reach" and ep.task.color != "yellow"  # train split: yellow is held out
        for i in np.flatnonzero(ep.state.present):
            slot = np.array(COLOR_SLOTS[COLORS[i]])
            assert np.all(np.abs(ep.state.blocks[i, :2] - slot) <= SLOT_JITTER + 1e-12)
        assert 3 <= ep.state.present.sum() <= 4
    ok, steps = run_policy("reach_slots", range(200), expert_policy(noise=0.1))
    assert ok.mean() >= 0.95
    # the batched scenes and the single scene (what MockRobot runs) agree step by step
    n = 32
    vec = VecScene(n, seeds=range(n), task="reach_slots")
    eps = [sample_episode(s, "reach_slots") for s in range(n)]
    scenes = [Scene(e.state) for e in eps]
    rng = np.random.default_rng(0)
    for _ in range(30):
        actions = vec.expert_actions(noise=0.3) + rng.normal(0, 0.01, (n, 7)) * (rng.random((n, 1)) < 0.2)
        was_done = vec.done.copy()
        vec.step(actions)
        for i in np.flatnonzero(~was_done):
            scenes[i].apply_action(actions[i])
            np.testing.assert_allclose(scenes[i].state.ee, vec.ee[i], atol=1e-12)
            np.testing.assert_allclose(scenes[i].state.blocks, vec.blocks[i], atol=1e-12)
            assert success(eps[i].task, scenes[i].state, eps[i].start_xy) == vec.succeeded[i]
    robot = MockRobot(task="reach_slots")
    assert robot.new_episode(seed=7) == vec.reset([7] * n, "reach_slots")[0]
    np.testing.assert_array_equal(robot.state.blocks, vec.blocks[0])
