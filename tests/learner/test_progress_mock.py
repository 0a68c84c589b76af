"""The progress model on real data: mock scripted demos and noisier expert episodes in a real
EpisodeStore, tiny-backbone features through the learner's FeatureCache, the trainer's fit, its
held-out check (VOC), the published file, the sparse task with nothing to learn from, and refits
only on change."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bench.harness import publish_tiny
from episodes.store import EpisodeStore
from learner.dataset import load_decisions, online_decisions
from learner.evaluate import rollout
from learner.features import FeatureCache
from learner.progress.quality import HeldOutEpisode, quality_report
from learner.progress.shaping import shape_decisions, shaping_decision
from learner.progress.targets import episode_step_targets
from learner.progress.trainer import (
    ProgressModelTrainer,
    episode_rows,
    fit_rows,
    held_out_split,
    predict_rows,
)
from sim.intervener import InterventionConfig, ScriptedIntervener
from sim.mock.demos import record_demos
from vla.policy import Policy
from vla.progress_model import read_published
from vla.progress_stop import StallRule, cut_measurement
from vla.registry import CheckpointRegistry

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    run = tmp_path_factory.mktemp("progress-run")
    publish_tiny(run)
    store = EpisodeStore(run / "episodes")
    record_demos(store, "reach", 12, seed=0, noise=0.1)
    record_demos(store, "reach", 12, seed=5000, noise=0.6, keep_failures=True, robot_id="pool")
    policy = Policy.load(CheckpointRegistry(run / "checkpoints"))
    # pick_place tried only by the untrained policy: failures, nothing to learn progress from
    rollout(policy, range(3), "pick_place", "sample", torch.Generator().manual_seed(0), store=store)
    cache = FeatureCache(run / "features")
    trainer = ProgressModelTrainer(run)
    report = trainer.refit_if_needed(store.list_episodes(), store, cache, policy)
    return run, store, cache, policy, trainer, report


def test_fitted_on_the_store_it_orders_held_out_successes_in_time(fitted):
    _, _, _, _, trainer, report = fitted
    assert report["state"] == "fitted" and report["n_rows"] > 100
    quality = report["quality"]
    assert quality["usable"], quality["reason"]
    assert quality["voc_per_task"]["reach"]["episodes"] >= 3
    assert quality["voc"] >= 0.6
    assert report["tasks"]["reach"]["demos"] >= 12 and report["fit_s"] < 60


def test_a_model_fitted_on_shuffled_targets_is_refused(fitted):
    """The control: the same inputs with the targets shuffled across rows carry no progress, and the
    held-out check must say so (this is what makes the check able to fail). VOC alone may not: a reach
    moves steadily, so any linear function of its states is monotone in time; R^2 does."""
    _, store, cache, policy, trainer, report = fitted
    metas = [m for m in store.list_episodes() if m.get("task") == "reach"]
    rows = [episode_rows(store, cache, policy, m, trainer.cfg.targets) for m in metas]
    fit_part, held = held_out_split([r for r in rows if r is not None], trainer.cfg.held_out_every)
    y = np.random.default_rng(0).permutation(np.concatenate([r.targets for r in fit_part]))
    for r, part in zip(fit_part, np.split(y, np.cumsum([len(r.targets) for r in fit_part])[:-1]), strict=True):
        r.targets = part
    model = fit_rows(fit_part, trainer.cfg.model, "k")
    shuffled = quality_report([HeldOutEpisode(r.task, r.success, predict_rows(model, r), r.targets) for r in held])
    assert shuffled["r2"] < 0.0 < 0.3 < report["quality"]["r2"]  # 0.51 on this seeded data
    assert not shuffled["usable"] and "below" in shuffled["reason"]


def test_a_task_without_demos_or_successes_gets_no_shaping_and_the_report_names_it(fitted):
    _, _, _, _, _, report = fitted
    assert report["sparse_tasks"] == ["pick_place"]
    use, why = shaping_decision("pick_place", report)
    assert not use and why == "sparse reward: task 'pick_place' has no demos and no successes yet"
    assert shaping_decision("reach", report)[0]


def test_published_file_predicts_like_the_trainer_and_refits_only_on_change(fitted):
    run, store, cache, policy, trainer, report = fitted
    model, published_report = read_published(run)
    assert published_report["quality"]["voc"] == report["quality"]["voc"]
    model.check_trunk(report["trunk_key"])
    meta = next(m for m in store.list_episodes() if m["robot_id"] == "pool")
    rows = episode_rows(store, cache, policy, meta, trainer.cfg.targets)
    assert np.allclose(predict_rows(model, rows), predict_rows(trainer.model, rows))
    assert trainer.refit_if_needed(store.list_episodes(), store, cache, policy) is None  # nothing new
    store.relabel(meta["robot_id"], meta["episode_id"], "failure" if meta["outcome"] == "success" else "success")
    assert trainer.refit_if_needed(store.list_episodes(), store, cache, policy)["state"] == "fitted"


def test_an_operators_takeover_adds_its_segments_and_flattens_the_steps_before_it(fitted):
    """Episodes of the untrained policy with the scripted intervener driving: the rows hold the
    policy's decisions and the operator's segments, and the policy's last steps before each takeover
    earn no progress."""
    _, store, cache, policy, trainer, _ = fitted
    cfg = InterventionConfig(budget_fraction=0.5, segment_steps=8, grace_steps=1)
    res = rollout(policy, range(7000, 7004), "reach", "sample", torch.Generator().manual_seed(1), store=store,
                  robot_id="operated", intervener=ScriptedIntervener(cfg))
    driven = [m for m in res.metas if m["intervention_steps"]]
    assert driven, "the intervener took over no episode"
    for meta in driven:
        episode = store.load(meta["robot_id"], meta["episode_id"])
        rows = episode_rows(store, cache, policy, meta, trainer.cfg.targets)
        flags = [bool(s.get("intervention")) for s in episode.steps]
        assert any(flags[s] for s in rows.steps)  # operator segments are rows too
        assert set(online_decisions(meta, episode, policy.spec.chunk).steps) <= set(rows.steps)  # and the policy's
        first = flags.index(True)
        targets = episode_step_targets(episode.steps, meta["outcome"] == "success", trainer.cfg.targets)
        flat_from = max(0, first - trainer.cfg.targets.takeover_flat_steps)
        assert np.all(np.diff(targets[max(0, flat_from - 1):first]) == 0)
        assert meta["outcome"] != "success" or targets[-1] == 1.0


def test_shaping_a_stored_rl_episode_as_a_recipe_would(fitted):
    """The plug-in path: a stored sampled episode's decisions (as RL loads them), the published model's
    potentials on their cached features, shaped rewards that telescope to -Phi(s0) -- and a task the
    report calls sparse keeps its rewards."""
    run, store, cache, policy, trainer, report = fitted
    model, _ = read_published(run)
    meta = next(m for m in store.list_episodes() if m.get("task") == "pick_place")
    d = load_decisions(store, meta, policy.spec.chunk)
    phi = model.predict(cache.features(policy, d).numpy(), d.states, [d.instruction] * len(d))
    gamma = 0.99
    shaped = shape_decisions(d.rewards, d.dones, phi, gamma, use=True)
    assert d.dones[-1] == 1.0 and len(d) > 3
    assert sum(gamma ** t * (shaped[t] - d.rewards[t]) for t in range(len(d))) == pytest.approx(-phi[0])
    use, _ = shaping_decision("pick_place", report)
    assert np.array_equal(shape_decisions(d.rewards, d.dones, phi, gamma, use=use), d.rewards)


def test_stall_measurement_on_policy_failures(fitted):
    """The untrained policy's pick_place episodes ran to their step limit: the measurement reports
    what the rule would cut and save on them (all failures, so no cut can be a false one)."""
    _, store, cache, policy, trainer, _ = fitted
    metas = [m for m in store.list_episodes() if m.get("task") == "pick_place"]
    episodes = []
    for m in metas:
        rows = episode_rows(store, cache, policy, m, trainer.cfg.targets)
        episodes.append((predict_rows(trainer.model, rows), False, int(m["n_steps"])))
    m = cut_measurement(episodes, StallRule(window=4, min_gain=0.05))
    assert m["episodes"] == 3 and m["cut_would_succeed"] == 0 and m["successes"] == 0
    assert m["cut"] == 0 or m["steps_saved_fraction"] > 0


def test_before_any_demo_or_success_the_trainer_waits_and_says_so(tmp_path, fitted):
    """A fresh run whose only episodes are failures: no model, the file says why, shaping stays sparse."""
    _, store, cache, policy, _, _ = fitted
    trainer = ProgressModelTrainer(tmp_path)
    failures = [m for m in store.list_episodes() if m.get("task") == "pick_place"]
    report = trainer.refit_if_needed(failures, store, cache, policy)
    assert report["state"] == "waiting for data: no task has a demo or a success yet"
    assert report["sparse_tasks"] == ["pick_place"]
    model, published = read_published(tmp_path)
    assert model is None and published == report
    assert shaping_decision("pick_place", published) == (
        False, "sparse reward: waiting for data: no task has a demo or a success yet")
