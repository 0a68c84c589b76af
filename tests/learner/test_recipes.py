"""One schedule, written once: the live loop (learner/loop.py, episodes from robots through the
ingest) and the learning bench (bench/learning.py, in-process rollouts) run the same recipe object
(learner/recipes/) and leave the same phase record, phase for phase; and the recipes' names are
the deployment's choices."""

from __future__ import annotations

import shutil
import typing

import pytest
import torch
from test_learner_loop import add_episode, config_for, template  # noqa: F401

from bench.learning import Job, LearningBenchConfig, recipe_run
from deployment.learner import LearnerConfig
from episodes.status import PHASE_LOG, PhaseLog
from learner.loop import PhaseLoop
from learner.recipes.registry import RECIPES, recipe_for
from learner.trainer import Trainer
from vla.registry import CheckpointRegistry

torch.set_num_threads(1)
SETTINGS = {"ppo": {}, "recap": {"recap": {"episodes_per_iteration": 4, "value_steps": 10}, "sft": {"batch_size": 8}},
            "sft_only": {}, "sft_extra_demos": {}}


def schedule(run_dir) -> list[tuple]:
    """The phase record without what differs by nature (versions served, which episodes)."""
    return [(r["event"], r["phase"], r["iteration"], r["round"], len(r.get("trained_on", [])))
            for r in PhaseLog(run_dir / PHASE_LOG).records() if r["event"] in ("start", "end")]


def live_loop(run_dir, config) -> list[tuple]:
    """The learner's loop on episodes that robots streamed through the ingest (made in process);
    sft_extra_demos takes the store's unconsumed expert demos (Stage 0's four, here)."""
    for i in range(4):
        add_episode(run_dir, f"e{i}", "success" if i % 2 else "failure")
    assert PhaseLoop(config, run_dir, poll_s=0.05).run() == 0
    return schedule(run_dir)


def bench(run_dir, config) -> list[tuple]:
    """The learning bench's job on in-process rollouts of the mock."""
    cfg = LearningBenchConfig(task="reach", iterations=1, rounds=config.learner.rl_rounds_per_phase,
                              episodes_per_round=config.learner.episodes_per_round, eval_n=1,
                              evaluate_at="iteration", max_steps=12)
    job = Job(cfg, run_dir.parent, "x", 0, g=torch.Generator().manual_seed(0))
    job.trainer = Trainer(config, run_dir)
    job.trainer.resume()
    recipe_run(job, config).iteration(0)
    assert job.curve[-1]["episodes"] == cfg.budget
    return schedule(run_dir)


@pytest.mark.parametrize("name", list(SETTINGS))
def test_the_live_loop_and_the_bench_run_one_schedule(template, tmp_path, name):  # noqa: F811
    config = config_for(tmp_path, algorithm=name, **SETTINGS[name])
    records = {}
    for driver in (live_loop, bench):
        run_dir = tmp_path / driver.__name__ / "run"
        shutil.copytree(template, run_dir)
        records[driver.__name__] = driver(run_dir, config.model_copy(update={"run_dir": str(run_dir)}))
        kinds = [m["kind"] for m in map(CheckpointRegistry(run_dir / "checkpoints").read_meta,
                                        CheckpointRegistry(run_dir / "checkpoints").versions())]
        assert kinds[0] == "full" and len(kinds) == 1 + len(records[driver.__name__]) // 2
    assert records["live_loop"] == records["bench"]
    phases = [r[1] for r in records["bench"] if r[0] == "end"]
    assert phases == {"ppo": ["rl", "rl", "sft"], "recap": ["recap"], "sft_only": ["sft"],
                      "sft_extra_demos": ["sft"]}[name]


def test_every_deployable_algorithm_is_a_recipe():
    choices = set(typing.get_args(LearnerConfig.model_fields["algorithm"].annotation))
    assert choices == set(RECIPES)
    with pytest.raises(ValueError, match="unknown learner recipe 'dqn'"):
        recipe_for(LearnerConfig(), "dqn")


def test_the_bench_carries_learner_overrides_not_copies(tmp_path):
    from bench.learning import _learner_config

    lc = _learner_config(LearningBenchConfig(learner={"sac": {"bc_coef": 1.0}}, sft_steps=7), tmp_path, 3).learner
    assert (lc.sac.bc_coef, lc.sft.steps, lc.seed) == (1.0, 7, 3)
    assert lc.sac.actor_lr == LearnerConfig().sac.actor_lr  # the rest of the section as deployed
