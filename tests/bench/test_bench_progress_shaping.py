"""The progress model as a recipe part, through the learning bench's in-process loop
(bench/learning.py, the same IReVLA recipe the live loop runs): with `learner.progress` enabled
the model is refitted before each RL round and its potential-based shaping changes the rewards the
PPO and SAC rounds train on; a model that fails its held-out check is not used (sparse rewards, and
the round says why)."""

import json
import shutil

import pytest

from bench.learning import SMOKE, LearningBenchConfig, run
from vla.progress_model import read_published

METHODS = ("irevla_ppo", "irevla_sac")


def _bench(out, progress: dict, stage0_from=None):
    # pick_place: its demos are long enough (up to 60 steps) for held-out successes with 3+ decisions
    cfg = LearningBenchConfig(**{**SMOKE, "methods": METHODS, "rounds": 1, "task": "pick_place",
                                 "learner": {"progress": {"enabled": True, "held_out_every": 2, **progress}}})
    if stage0_from is not None:  # the same Stage 0 (it does not depend on the progress settings)
        shutil.copytree(stage0_from / "stage0", out / "stage0")
    run(cfg, out)
    return {m: json.loads((out / "results" / f"{m}-s0.json").read_text()) for m in METHODS}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    usable_out = tmp_path_factory.mktemp("progress-usable")
    # the smoke Stage 0 (8 SFT steps) gives features that carry little: its held-out R^2 is ~0.14, so
    # the R^2 bar is lowered here; VOC must still pass
    usable = _bench(usable_out, {"min_r2": 0.0})
    # a held-out check no model can pass here: more held-out successes than the smoke store has
    failing_out = tmp_path_factory.mktemp("progress-failing")
    failing = _bench(failing_out, {"min_held_out": 1000}, stage0_from=usable_out)
    return usable_out, usable, failing_out, failing


@pytest.mark.parametrize("method", METHODS)
def test_shaping_changes_the_rewards_the_rl_round_trains_on(runs, method):
    out, results, _, _ = runs
    (rl_round,) = results[method]["rounds"][:1]
    assert rl_round["progress_model_usable"] == 1.0 and rl_round["progress_voc"] >= 0.5
    assert rl_round["progress_shaped_sets"] > 0
    # the round's rewards are not the sparse ones: the same decision sets, other sums
    assert rl_round["progress_reward_sum_shaped"] != pytest.approx(rl_round["progress_reward_sum_sparse"], abs=1e-3)
    model, report = read_published(out / "runs" / f"{method}-s0")
    assert model is not None and report["quality"]["usable"]


@pytest.mark.parametrize("method", METHODS)
def test_a_model_that_fails_its_check_is_not_used(runs, method):
    _, _, out, results = runs
    (rl_round,) = results[method]["rounds"][:1]
    assert rl_round["progress_model_usable"] == 0.0
    assert rl_round["progress_shaped_sets"] == 0 and rl_round["progress_sparse_sets"] > 0
    assert any("progress model unusable (only" in why for why in rl_round["progress_sparse_reasons"])
    _, report = read_published(out / "runs" / f"{method}-s0")
    assert report["quality"]["usable"] is False
