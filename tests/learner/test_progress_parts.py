"""The progress model's parts on hand-made numbers: targets and keyframes, the ridge model, VOC and
the usable verdict, potential-based shaping (telescoping), the stall rule and its measurement."""

from __future__ import annotations

import numpy as np
import pytest

from learner.progress.quality import HeldOutEpisode, QualityConfig, quality_report, spearman, voc
from learner.progress.shaping import shape_decisions, shaped_rewards, shaping_decision, task_data
from learner.progress.targets import TargetConfig, keyframes, step_targets
from vla.progress_model import ProgressModel, ProgressModelConfig, fit
from vla.progress_stop import STALLED, StallMonitor, StallRule, cut_measurement


def _approach_pause_grasp_lift() -> tuple[np.ndarray, np.ndarray]:
    """Move 10 steps in x, rest 6 steps, close the gripper, lift 10 steps: T = 27."""
    x = np.concatenate([np.linspace(0, 0.1, 11), np.full(16, 0.1)])
    z = np.concatenate([np.full(17, 0.2), np.linspace(0.2, 0.3, 10)])
    positions = np.stack([x, np.zeros_like(x), z], axis=1)
    gripper = np.concatenate([np.ones(16), np.zeros(11)])
    return positions, gripper


def test_keyframes_are_the_pause_and_the_gripper_event():
    positions, gripper = _approach_pause_grasp_lift()
    assert keyframes(positions, gripper, TargetConfig()) == [10, 16]


def test_milestone_targets_give_each_segment_an_equal_share():
    positions, gripper = _approach_pause_grasp_lift()
    y = step_targets(positions, gripper, True, TargetConfig())
    assert y[0] == 0 and y[-1] == 1
    assert y[10] == pytest.approx(1 / 3) and y[16] == pytest.approx(2 / 3)
    assert np.all(np.diff(y) >= 0)
    timed = step_targets(positions, gripper, True, TargetConfig(milestones=False))
    assert timed == pytest.approx(np.arange(27) / 26)


def test_a_failure_ends_at_the_cap_and_a_takeover_flattens_the_steps_before_it():
    positions, gripper = _approach_pause_grasp_lift()
    cfg = TargetConfig(milestones=False, takeover_flat_steps=4)
    fail = step_targets(positions, gripper, False, cfg)
    assert fail[-1] == pytest.approx(0.5) and fail.max() == pytest.approx(0.5)
    driven = np.zeros(27, bool)
    driven[12:18] = True  # the operator drove steps 12..17
    y = step_targets(positions, gripper, True, cfg, driven)
    assert np.all(np.diff(y[7:12]) == 0)  # steps 8..11 (the 4 before the takeover) earn nothing
    assert np.all(np.diff(y[11:]) > 0) and y[-1] == 1.0  # the operator's steps and after do
    assert np.all(np.diff(y[:8]) > 0)


def test_ridge_model_fits_a_linear_progress_and_round_trips_through_json():
    rng = np.random.default_rng(0)
    feats = rng.normal(size=(200, 6))
    states = rng.normal(size=(200, 7))
    y = np.clip(0.5 + 0.1 * feats[:, 0] - 0.1 * states[:, 2], 0, 1)
    instr = ["reach the red block"] * 200
    model = fit(feats, states, instr, y, ProgressModelConfig(l2=1e-3), trunk_key="k")
    assert np.abs(model.predict(feats, states, instr) - y).max() < 0.02
    again = ProgressModel.from_json(model.to_json())
    assert np.allclose(again.predict(feats, states, instr), model.predict(feats, states, instr))
    with pytest.raises(ValueError, match="columns"):
        model.predict(feats[:, :5], states, instr)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fit(feats, states, instr, y + 2.0)
    with pytest.raises(ValueError, match="trunk"):
        model.check_trunk("other")


def test_voc_is_the_rank_correlation_with_time_order():
    assert voc([0.1, 0.2, 0.5, 0.9]) == pytest.approx(1.0)
    assert voc([0.9, 0.5, 0.2, 0.1]) == pytest.approx(-1.0)
    assert voc([0.3, 0.3, 0.3]) == 0.0 and voc([0.1, 0.2]) is None
    assert spearman(np.array([1, 2, 2, 3.0]), np.arange(4)) == pytest.approx(0.9486833)


def test_quality_verdict_says_why_a_model_is_unusable():
    up = np.linspace(0, 1, 6)
    good = [HeldOutEpisode("reach", True, up + 0.01 * i, up) for i in range(4)]
    report = quality_report(good, QualityConfig(min_voc=0.5))
    assert report["usable"] and report["voc"] == pytest.approx(1.0) and report["r2"] > 0.99
    assert report["voc_per_task"]["reach"]["episodes"] == 4 and report["calibration"]["n"] == 24
    noisy = [HeldOutEpisode("reach", True, np.random.default_rng(i).random(6), up) for i in range(4)]
    bad = quality_report(noisy, QualityConfig(min_voc=0.9))
    assert not bad["usable"] and "below 0.90" in bad["reason"]
    squashed = [HeldOutEpisode("reach", True, 0.9 + 0.01 * up, up) for _ in range(4)]  # in order, far off
    fooled = quality_report(squashed, QualityConfig(min_voc=0.5, min_r2=0.2))
    assert fooled["voc"] == pytest.approx(1.0) and not fooled["usable"] and "R^2" in fooled["reason"]
    few = quality_report(good[:2], QualityConfig(min_episodes=3))
    assert not few["usable"] and "only 2 held-out successful episodes" in few["reason"]


def test_shaping_telescopes_to_minus_the_first_potential_per_episode():
    rng = np.random.default_rng(1)
    gamma = 0.9
    lengths = [5, 1, 8]
    phi = rng.random(sum(lengths))
    rewards = np.zeros(sum(lengths))
    dones = np.zeros(sum(lengths))
    ends = np.cumsum(lengths) - 1
    dones[ends] = 1.0
    shaping = shaped_rewards(rewards, phi, dones, gamma)
    start = 0
    for n in lengths:
        discounted = sum(gamma ** t * shaping[start + t] for t in range(n))
        assert discounted == pytest.approx(-phi[start])  # Phi(terminal) = 0
        start += n
    # it adds to the environment reward, and scale multiplies only the shaping
    r = rng.random(len(phi))
    assert shaped_rewards(r, phi, dones, gamma, scale=0.5) == pytest.approx(r + 0.5 * shaping)
    with pytest.raises(ValueError, match="equal-length"):
        shaped_rewards(r, phi[:-1], dones, gamma)
    assert shape_decisions(r, dones, phi, gamma, use=False) == pytest.approx(r)  # a sparse task: unchanged
    assert shape_decisions(r, dones, phi, gamma, use=True) == pytest.approx(r + shaping)


def test_potential_shaping_leaves_the_best_action_of_a_bandit_unchanged():
    """Two one-step episodes from the same start: the shaped returns differ by the same constant as
    the sparse ones (both shift by -Phi(s0)), so the better action stays better."""
    phi0 = 0.4
    for phi_terminal_guess in (0.0, 0.9):  # whatever the model says about the end state, done zeroes it
        sparse = np.array([1.0, 0.0])
        shaped = [shaped_rewards(np.array([r]), np.array([phi0]), np.array([1.0]), 0.99)[0] for r in sparse]
        assert shaped[0] - shaped[1] == pytest.approx(1.0)
        assert shaped[0] == pytest.approx(1.0 - phi0), phi_terminal_guess


def test_shaping_decision_keeps_sparse_reward_where_progress_cannot_be_learnt():
    metas = [{"task": "reach", "source": "expert", "outcome": "success"},
             {"task": "push", "source": "online", "outcome": "failure"}]
    tasks = task_data(metas)
    quality = {"usable": True, "reason": "held-out VOC 0.80 >= 0.50", "min_voc": 0.5,
               "voc_per_task": {"reach": {"voc": 0.8, "episodes": 5}}}
    report = {"state": "fitted", "tasks": tasks, "quality": quality}
    assert shaping_decision("reach", report) == (True, "shaped: held-out VOC 0.80 >= 0.50")
    use, why = shaping_decision("push", report)
    assert not use and why == "sparse reward: task 'push' has no demos and no successes yet"
    use, why = shaping_decision("reach", {**report, "quality": {**quality, "usable": False, "reason": "VOC low"}})
    assert not use and "unusable (VOC low)" in why
    assert shaping_decision("reach", None) == (False, "sparse reward: no progress model")


def test_stall_rule_cuts_flat_progress_and_never_a_greedy_episode_unless_asked():
    rule = StallRule(window=3, min_gain=0.05, smooth=1)
    assert rule.stop_index(np.linspace(0, 1, 20)) is None
    flat_after = [0.0, 0.2, 0.4, 0.41, 0.42, 0.43, 0.44]
    assert rule.stop_index(flat_after) == 5  # best 0.43 vs best three decisions earlier 0.40
    monitor = StallMonitor(rule, mode="sample")
    assert [monitor.update(p) for p in flat_after] == [None] * 5 + [STALLED, STALLED]
    greedy = StallMonitor(rule, mode="greedy")
    assert all(greedy.update(p) is None for p in flat_after)
    asked = StallMonitor(StallRule(window=3, min_gain=0.05, smooth=1, in_greedy=True), mode="greedy")
    assert [asked.update(p) for p in flat_after][5] == STALLED
    with pytest.raises(ValueError, match="min_gain"):
        StallRule(min_gain=0.0)


def test_smoothing_keeps_one_noisy_frame_from_setting_the_bar():
    """A spike early in a success (one misread frame) raises the raw best so high that the steady
    climb after it looks stalled; the running median does not see it."""
    climb = [0.1, 0.5, 0.12, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6]
    assert StallRule(window=4, min_gain=0.05, smooth=1).stop_index(climb) == 5
    assert StallRule(window=4, min_gain=0.05, smooth=3).stop_index(climb) is None
    flat = [0.3] * 12
    assert StallRule(window=4, min_gain=0.05, smooth=3).stop_index(flat) == 6  # 2 to fill the median + 4
    rng = np.random.default_rng(3)
    rule = StallRule(window=5, min_gain=0.03, smooth=3)
    for _ in range(20):  # the live monitor and the offline rule agree decision by decision
        p = np.cumsum(rng.normal(0.01, 0.05, 30))
        monitor = StallMonitor(rule)
        first = next((t for t, x in enumerate(p) if monitor.update(x) == STALLED), None)
        assert first == rule.stop_index(p)


def test_cut_measurement_counts_cuts_that_would_have_succeeded():
    rule = StallRule(window=2, min_gain=0.1, smooth=1)
    episodes = [(np.linspace(0, 1, 10), True, 40),          # rising: never cut
                ([0.1, 0.1, 0.1, 0.1, 0.9, 1.0], True, 24),  # a late success cut at decision 2
                ([0.0, 0.05, 0.05, 0.05], False, 16)]        # a failure cut at decision 2
    m = cut_measurement(episodes, rule)
    assert m["cut"] == 2 and m["cut_would_succeed"] == 1 and m["false_cut_fraction"] == 0.5
    assert m["successes"] == 2 and m["successes_lost_fraction"] == 0.5
    assert m["steps_saved_fraction"] == pytest.approx((24 * 0.5 + 16 * 0.25) / 80)
