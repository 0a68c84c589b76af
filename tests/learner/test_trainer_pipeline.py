"""The Trainer end to end on the mock, in-process: bootstrap -> sampled episodes stored like the ingest
stores them -> RL round (PPO and SAC) with the behaviour log-prob check -> publish head -> SFT ->
publish full -> the feature cache and stale-trunk rules. Small sizes: this checks the plumbing and
the log-prob contract; learning itself is checked in test_rl_bandit.py and test_rl_mock.py."""

import logging

import pytest
import torch

from deployment.config import load_config
from episodes.store import EpisodeStore
from learner.evaluate import collect_episodes
from learner.trainer import Trainer
from vla.policy import Policy
from vla.registry import CheckpointRegistry

torch.set_num_threads(1)


def make_config(run_dir, **learner):
    cfg = load_config(None, environ={}, run_dir=str(run_dir))
    cfg.learner.bootstrap.demos = 8
    cfg.learner.bootstrap.steps = 12
    cfg.learner.bootstrap.batch_size = 8
    cfg.learner.sft.steps = 4
    cfg.learner.sft.batch_size = 8
    cfg.learner.sft.eval_fraction = 0.25
    cfg.learner = cfg.learner.updated(**learner)
    return cfg


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    trainer = Trainer(make_config(run_dir), run_dir)
    assert not trainer.has_policy()
    version = trainer.bootstrap(progress=False)
    return trainer, version


def served_policy(trainer) -> Policy:
    """What the server would load: LATEST from the registry, a fresh model (own preprocessing)."""
    return Policy.load(CheckpointRegistry(trainer.run_dir / "checkpoints"))


def test_bootstrap_publishes_full_version(trained):
    trainer, version = trained
    assert version == 1 and trainer.has_policy()
    meta = trainer.registry.read_meta(1)
    assert meta["kind"] == "full" and meta["phase"] == "bootstrap"
    assert meta["metrics"]["n_demos"] == 8 and meta["metrics"]["loss_eval"] == meta["metrics"]["loss_eval"]


def test_ppo_round_logprobs_match_and_altered_logprob_is_detected(trained, caplog):
    trainer, _ = trained
    store = EpisodeStore(trainer.run_dir / "episodes")
    policy = served_policy(trainer)
    result = collect_episodes(policy, store, 4, seed=500, generator=torch.Generator().manual_seed(0), robot_id="simA")
    with caplog.at_level(logging.ERROR):
        metrics = trainer.rl_round(result.metas)
    assert metrics["n_episodes"] == 4 and metrics["n_transitions"] > 4
    assert metrics["logprob_checked"] == metrics["n_transitions"]
    assert metrics["logprob_mismatch"] == 0, metrics
    assert metrics["logprob_max_abs_diff_current"] < 1e-3
    assert metrics["critic_warmup"] == 1.0  # first round: value only
    assert not [r for r in caplog.records if "MISMATCH" in r.getMessage()]
    assert trainer.cache.stats["computed"] == metrics["n_transitions"]

    # the same episode again, with one stored log-prob altered (as if the server preprocessed differently)
    src = result.metas[0]
    episode = store.load(src["robot_id"], src["episode_id"])
    altered_id = "altered-" + src["episode_id"][:20]
    for rec in episode.steps:
        rec = dict(rec)
        images = {cam: episode.frame_bytes(rec["step"], cam) for cam in rec.pop("frames")}
        step = rec.pop("step")
        if step == 0:
            rec["log_prob"] += 0.05
        store.append_step("simA", altered_id, step, rec, images)
    meta = {k: v for k, v in src.items() if k not in ("episode_id", "robot_id", "n_stored_steps", "finished")}
    store.finish("simA", altered_id, meta)
    caplog.clear()
    with caplog.at_level(logging.ERROR):
        metrics = trainer.rl_round([store.read_meta("simA", altered_id)])
    assert metrics["logprob_mismatch"] == 1
    assert 0.04 < metrics["logprob_max_abs_diff"] < 0.06
    assert any("MISMATCH" in r.getMessage() and r.levelno == logging.ERROR for r in caplog.records)


def test_publish_head_then_sft_invalidates_cache_and_old_trunk_is_skipped(trained):
    trainer, _ = trained
    store = EpisodeStore(trainer.run_dir / "episodes")
    result = collect_episodes(served_policy(trainer), store, 3, seed=600, generator=torch.Generator().manual_seed(1),
                              robot_id="simB")
    metrics = trainer.rl_round(result.metas)
    assert metrics["critic_warmup"] == 0.0 and metrics["logprob_mismatch"] == 0
    head_version = trainer.publish("head", "rl", metrics)
    meta = trainer.registry.read_meta(head_version)
    assert meta["kind"] == "head" and meta["base_version"] == 1
    # episodes from the new head version: recomputed under v_head, still matching
    fresh = collect_episodes(served_policy(trainer), store, 2, seed=700, robot_id="simB")
    assert {m["policy_version"] for m in fresh.metas} == {head_version}
    before = dict(trainer.cache.stats)
    m2 = trainer.rl_round(result.metas + fresh.metas)  # old episodes: features come from the cache
    assert m2["logprob_mismatch"] == 0 and m2["n_episodes"] == 5
    assert trainer.cache.stats["loaded"] - before["loaded"] == metrics["n_transitions"]

    sft = trainer.sft_phase(progress=False)
    assert sft["steps"] == 4 and sft["n_expert"] == 8 and sft["loss_eval"] == sft["loss_eval"]
    assert not any((trainer.run_dir / "features").iterdir())  # invalidated
    full = trainer.publish("full", "sft", sft)
    assert trainer.registry.read_meta(full)["kind"] == "full"
    stale = trainer.rl_round(fresh.metas)  # acted on the pre-SFT trunk: PPO must not use them
    assert stale["n_skipped_stale"] == 2 and stale["n_transitions"] == 0


def test_sac_round_and_resume(tmp_path, trained):
    trainer, _ = trained
    from torch.utils.tensorboard import SummaryWriter

    writer = SummaryWriter(str(tmp_path / "tb"))
    sac = Trainer(make_config(trainer.run_dir, algorithm="sac", sac={"updates_per_episode": 5, "batch_size": 16}),
                  trainer.run_dir, log=writer)
    version = sac.resume()
    assert version == trainer.registry.latest()
    store = EpisodeStore(trainer.run_dir / "episodes")
    new = collect_episodes(served_policy(sac), store, 2, seed=800, robot_id="simC")
    metrics = sac.rl_round(new.metas)
    assert metrics["n_updates"] == 10 and metrics["n_demo"] > 0 and metrics["n_online"] > 0
    assert metrics["logprob_mismatch"] == 0
    assert all(k in metrics for k in ("loss_q", "q_mean", "alpha"))
    writer.close()
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "tb"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"trainer/rl/q_mean", "trainer/rl/success_rate", "trainer/rl/entropy"} <= tags


def test_a_restarted_learner_continues_the_algorithm_not_only_the_weights(trained):
    """SAC's target critics, temperature, optimizer moments and update count are saved with every
    publish and restored on resume when the resumed version is the one they were saved with; a
    resume onto another version (a rollback) starts the algorithm afresh."""
    trainer, _ = trained
    cfg = make_config(trainer.run_dir, algorithm="sac", sac={"updates_per_episode": 3, "batch_size": 8})
    store = EpisodeStore(trainer.run_dir / "episodes")
    first = Trainer(cfg, trainer.run_dir)
    before = first.resume()
    first.rl_round(collect_episodes(served_policy(first), store, 2, seed=900, robot_id="simD").metas)
    version = first.publish("head", "rl", {})
    saved = first.algorithm.state_dict()
    assert (trainer.run_dir / "rl_state.pt").exists()

    restarted = Trainer(cfg, trainer.run_dir)
    assert restarted.resume() == version
    more = collect_episodes(served_policy(restarted), store, 2, seed=910, robot_id="simD").metas
    restarted.rl_round(more)
    assert restarted.algorithm.learner.n_updates == saved["n_updates"] + 6
    older = Trainer(cfg, trainer.run_dir)
    assert older.resume(before) == before
    older.rl_round(more)
    assert older.algorithm.learner.n_updates == 6


def test_sft_with_nothing_to_learn_from_is_skipped_not_a_crash(trained, tmp_path):
    """A learner restarted on a registry whose store has no demos must not crash-loop in SFT."""
    from episodes.store import EpisodeStore

    trainer, _ = trained
    real_store = trainer.store
    trainer.store = EpisodeStore(tmp_path / "empty")
    try:
        before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
        metrics = trainer.sft_phase(progress=False)
        assert metrics["skipped"] == 1.0
        assert all(torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    finally:
        trainer.store = real_store
