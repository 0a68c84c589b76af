"""The Trainer on real mock episodes with scripted interventions (sim/intervener.py through
learner.evaluate.rollout): SAC's demo half holds the intervention segments, PPO's batch holds none
of the decisions a takeover cut into, and the SFT phase trains on the segments of failed episodes."""

import math

import pytest
import torch

from deployment.config import load_config
from learner.dataset import intervention_spans, load_decisions, sft_step_spans
from learner.evaluate import rollout
from learner.trainer import Trainer
from sim.intervener import InterventionConfig, ScriptedIntervener

torch.set_num_threads(1)


@pytest.fixture(scope="module", params=["sac", "ppo"])
def run(request, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp(f"run-{request.param}")
    cfg = load_config(None, environ={}, run_dir=str(run_dir))
    lc = cfg.learner
    lc.algorithm = request.param
    lc.bootstrap.demos, lc.bootstrap.steps, lc.bootstrap.batch_size = 4, 4, 8
    lc.sft.steps, lc.sft.batch_size, lc.sac.updates_per_episode, lc.critic_warmup_rounds = 2, 8, 1, 0
    trainer = Trainer(cfg, run_dir)
    trainer.bootstrap(progress=False)
    # one short takeover per episode and a short episode: some fail in spite of the operator
    iv = ScriptedIntervener(InterventionConfig(budget_fraction=0.5, grace_steps=1, segment_steps=3, max_takeovers=1))
    res = rollout(trainer.policy, range(8), "reach", "sample", torch.Generator().manual_seed(0),
                  store=trainer.store, intervener=iv, max_steps=12)
    assert iv.intervention_steps > 0
    return request.param, trainer, res.metas


def test_rl_round_uses_interventions_as_its_algorithm_should(run):
    algorithm, trainer, metas = run
    chunk = trainer.model.config.chunk
    m = trainer.rl_round(metas)
    if algorithm == "sac":  # every segment, one decision every H steps, in the demo half
        want = 0
        for meta in metas:
            episode = trainer.store.load(meta["robot_id"], meta["episode_id"])
            want += sum(math.ceil((end - start) / chunk) for start, end in intervention_spans(episode))
        assert want > 0 and m["n_intervention_transitions"] == want
        assert m["n_demo"] == len(trainer.algorithm.demo) + want  # expert demos + segments
    else:  # PPO: only the policy's own, uncut chunks
        decisions = [load_decisions(trainer.store, meta, chunk) for meta in metas]
        assert m["n_transitions"] == sum(len(d) for d in decisions)
        for d in decisions:
            teleop = {s["step"] for s in d.episode.steps if s.get("intervention")}
            assert not teleop & {t for s in d.steps for t in range(s, s + chunk)}


def test_sft_phase_trains_on_the_segments_of_failed_episodes(run):
    _, trainer, metas = run
    m = trainer.sft_phase(progress=False)
    assert m["n_intervention_episodes"] == sum(1 for x in metas if x["intervention_steps"])
    assert m["n_intervention_steps"] == sum(x["intervention_steps"] for x in metas)
    experts = trainer.store.list_episodes(source="expert")
    want = sum(x["n_steps"] for x in experts)
    for x in metas:
        episode = trainer.store.load(x["robot_id"], x["episode_id"])
        spans = sft_step_spans(x, episode)
        if x["outcome"] == "failure":  # only the operator's steps
            assert all(episode.steps[i]["intervention"] for a, b in spans for i in range(a, b))
        want += sum(b - a for a, b in spans)
    assert any(x["outcome"] == "failure" and x["intervention_steps"] for x in metas)
    assert m["n_train_samples"] + m["n_eval_samples"] == want
