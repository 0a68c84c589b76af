"""The scripted intervener (sim/intervener.py) on the real mock scenes, and the rollout that records
its takeovers: who drives when, the budget, and what the stored steps say.

The rule is checked with stand-in proposals on a real VecScene (the expert's own action: never a
takeover; its opposite: a takeover after the grace and deviation steps; standing still: the stall
trigger). The rollout runs a bootstrapped tiny policy and checks the records: executed = the
expert's action, intervention / source / proposed_action / on_policy, meta's count, and that a
greedy rollout refuses an intervener."""

import numpy as np
import pytest
import torch

from sim.intervener import InterventionConfig, ScriptedIntervener
from sim.mock.vec import VecScene

torch.set_num_threads(1)
H = 4


def drive(vec: VecScene, intervener: ScriptedIntervener, proposal) -> np.ndarray:
    """Step the scenes until done; returns [T, N] bool: who the expert drove at each step."""
    intervener.start(vec.n)
    driven_log, t = [], 0
    while not vec.done.all():
        expert = vec.expert_actions(0.0)
        proposed = proposal(expert)
        driven = intervener.decide(proposed, expert, vec.states(), ~vec.done, decision_boundary=t % H == 0)
        vec.step(np.where(driven[:, None], expert, proposed))
        driven_log.append(driven.copy())
        t += 1
    return np.array(driven_log)


def test_the_expert_itself_is_never_taken_over():
    vec = VecScene(8, seeds=range(8), task="reach")
    iv = ScriptedIntervener(InterventionConfig(budget_fraction=1.0))
    assert not drive(vec, iv, lambda e: e).any() and iv.takeovers == 0
    assert vec.succeeded.all()


def test_a_policy_heading_away_is_taken_over_for_a_segment_ending_at_a_decision():
    cfg = InterventionConfig(budget_fraction=1.0, grace_steps=4, deviation_steps=3, segment_steps=5, max_takeovers=1)
    vec = VecScene(4, seeds=range(4), task="reach")
    log = drive(vec, ScriptedIntervener(cfg), lambda e: -e)
    for i in range(4):
        steps = np.flatnonzero(log[:, i])
        assert len(steps) and steps[0] == 4  # the grace steps; then 3 deviating steps (2, 3, 4) fire
        assert (np.diff(steps) == 1).all()  # one contiguous segment (max_takeovers 1)
        assert len(steps) >= cfg.segment_steps
        last = steps[-1]
        assert vec.succeeded[i] or (last + 1) % H == 0  # hands back where the policy plans a new chunk


def test_a_stalled_policy_is_taken_over():
    cfg = InterventionConfig(budget_fraction=1.0, max_angle_deg=180.0, grace_steps=0)  # stall trigger only
    vec = VecScene(4, seeds=range(4), task="reach")
    log = drive(vec, ScriptedIntervener(cfg), lambda e: np.zeros_like(e) + [0, 0, 0, 0, 0, 0, 1])
    assert log.any(axis=0).all()
    first = [np.flatnonzero(log[:, i])[0] for i in range(4)]
    assert min(first) == cfg.stall_window  # no travel over the window; later ones waited for budget


def test_the_budget_caps_intervention_steps():
    cfg = InterventionConfig(budget_fraction=0.1, segment_steps=3)
    vec = VecScene(32, seeds=range(32), task="reach")
    iv = ScriptedIntervener(cfg)
    log = drive(vec, iv, lambda e: -e)
    assert iv.intervention_steps == log.sum() > 0
    assert iv.intervention_steps <= 0.1 * iv.steps_seen + H  # a segment may run on to its decision boundary
    assert (log.sum(axis=0) > 0).sum() < 32  # not every episode got the expert


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="budget_fraction"):
        InterventionConfig(budget_fraction=1.5)
    with pytest.raises(ValueError, match="segment_steps"):
        InterventionConfig(segment_steps=0)


@pytest.fixture(scope="module")
def policy(tmp_path_factory):
    from deployment.config import load_config
    from learner.trainer import Trainer

    run_dir = tmp_path_factory.mktemp("run")
    cfg = load_config(None, environ={}, run_dir=str(run_dir))
    cfg.learner.bootstrap.demos, cfg.learner.bootstrap.steps, cfg.learner.bootstrap.batch_size = 4, 4, 8
    trainer = Trainer(cfg, run_dir)
    trainer.bootstrap(progress=False)
    return trainer.policy


def test_rollout_records_scripted_interventions(policy, tmp_path):
    from episodes.store import EpisodeStore
    from learner.evaluate import rollout

    store = EpisodeStore(tmp_path / "episodes")
    iv = ScriptedIntervener(InterventionConfig(budget_fraction=0.5, grace_steps=1, segment_steps=4))
    res = rollout(policy, range(6), "reach", "sample", torch.Generator().manual_seed(0), store=store,
                  intervener=iv)
    assert res.intervention_steps.sum() == iv.intervention_steps > 0
    for meta in res.metas:
        steps = store.load(meta["robot_id"], meta["episode_id"]).steps
        teleop = [s for s in steps if s["intervention"]]
        assert meta["intervention_steps"] == len(teleop)
        for s in teleop:
            assert s["intervention_source"] == "scripted" and s["on_policy"] is False
            assert len(s["proposed_action"]) == 7 and s["proposed_action"] != s["action"]
        for s in steps:
            if not s["intervention"]:
                assert s["on_policy"] and s["proposed_action"] is None and s["intervention_source"] is None
        replay_matches_expert(meta, steps)
    with pytest.raises(ValueError, match="greedy evaluation never intervenes"):
        rollout(policy, range(2), "reach", "greedy", intervener=iv)


def replay_matches_expert(meta: dict, steps: list[dict]) -> None:
    """Replaying the stored executed actions on a fresh scene of the same seed: on every
    intervention step the stored action is the expert's action at that state."""
    from sim.mock.demos import executed_action

    vec = VecScene(1, seeds=[meta["extra"]["seed"]], task="reach")
    for s in steps:
        np.testing.assert_allclose(s["state"], vec.states()[0], atol=1e-5)
        if s["intervention"]:
            np.testing.assert_allclose(s["action"], executed_action(vec.expert_actions(0.0)[0]), atol=1e-6)
        vec.step(np.array([s["action"]]))
