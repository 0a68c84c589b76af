"""RECAP in the learner (learner/recap/): the value targets of a success, a failure, a timed-out
and an intervened episode; n-step advantages; labels per task at the threshold; the fallbacks; one
RECAP iteration on the tiny model whose version is served with the indicator."""

import json

import numpy as np
import pytest
import torch

from deployment.config import load_config
from episodes.store import EpisodeStore
from learner.evaluate import rollout
from learner.recap.labels import (
    EpisodeValues,
    LabelConfig,
    NoPositiveSteps,
    label_episodes,
    n_step_advantages,
)
from learner.recap.phase import NoLabelledEpisodes, RecapConfig, RecapPhase, recap_iteration
from learner.recap.value import is_success, terminal_value, two_hot, value_targets
from learner.trainer import Trainer
from sim.intervener import InterventionConfig, ScriptedIntervener
from vla.advantage import META_KEY
from vla.policy import Policy
from vla.registry import CheckpointRegistry

torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------- value targets
def test_value_targets_of_a_success_a_failure_and_a_timeout():
    # L = 20, P = L: success in 10 steps -> -(10 - t)/40; failure -> -(T - t + 20)/40
    success = value_targets(10, True, limit=20)
    assert success[0] == pytest.approx(-10 / 40) and success[-1] == pytest.approx(-1 / 40)
    assert np.all(np.diff(success) > 0)  # closer to the goal, higher
    failure = value_targets(20, False, limit=20)
    assert failure[0] == pytest.approx(-1.0) and failure[-1] == pytest.approx(-21 / 40)
    assert failure.max() < success.min()  # every failed step is worth less than every successful one
    assert terminal_value(True, 20) == 0.0 and terminal_value(False, 20) == pytest.approx(-0.5)
    # a failure penalty of its own
    assert value_targets(4, False, limit=20, failure_penalty=60)[0] == pytest.approx(-64 / 80)
    # cut by the step limit: not a success, even labelled success
    assert is_success({"outcome": "success", "extra": {"end_reason": "success"}})
    assert not is_success({"outcome": "success", "extra": {"end_reason": "max_steps"}})
    assert not is_success({"outcome": "failure"})
    # two-hot: the distribution's mean is the target
    y = torch.tensor([-1.0, -0.51, -0.025, 0.0])
    centers = torch.linspace(-1, 0, 41)
    assert torch.allclose(two_hot(y, 41) @ centers, y, atol=1e-6)


def test_n_step_advantage_by_hand():
    g = np.array([-0.4, -0.3, -0.2, -0.1], np.float32)
    v = np.array([-0.5, -0.25, -0.2, -0.2], np.float32)
    a = n_step_advantages(g, v, 2)
    # i=0: (G0 - G2) + V2 - V0 = -0.2 - 0.2 + 0.5; i=1: -0.2 - 0.2 + 0.25; the last two: G - V
    assert a == pytest.approx([0.1, -0.15, 0.0, 0.1], abs=1e-6)


# ---------------------------------------------------------------------------------------- labels
def _episode(key, task, source, success, advantages, operator=None) -> EpisodeValues:
    n = len(advantages)
    # targets/values such that the MC advantage (n_step larger than the episode) is `advantages`
    return EpisodeValues(key=key, task=task, source=source, success=success, steps=np.arange(n) * 4,
                         targets=np.asarray(advantages, np.float32), values=np.zeros(n, np.float32),
                         operator=np.zeros(n, bool) if operator is None else np.asarray(operator, bool))


def test_labels_per_task_at_the_threshold():
    rng = np.random.default_rng(0)
    easy = [_episode(f"r/e{i}", "easy", "online", i % 2 == 0, rng.normal(0.0, 0.3, 10)) for i in range(10)]
    hard = [_episode(f"r/h{i}", "hard", "online", i == 0, rng.normal(-0.6, 0.02, 10)) for i in range(10)]
    demo = _episode("r/d0", "hard", "expert", True, [0.5] * 10)
    operator = _episode("r/o0", "hard", "online", False, [-0.9] * 4, operator=[False, True, True, False])
    episodes = easy + hard + [demo, operator]
    report = label_episodes(episodes, LabelConfig(n_step=100, percentile=70))
    for task, group in (("easy", easy), ("hard", hard + [operator])):
        own = np.concatenate([e.advantages[~e.operator] for e in group])
        assert report["thresholds"][task] == pytest.approx(np.percentile(own, 70))
        positive = np.concatenate([e.positive[~e.operator] for e in group])
        assert positive.mean() == pytest.approx(0.3, abs=0.02)  # the best 30 % of each task's own steps
        assert all(np.array_equal(e.positive, e.advantages >= report["thresholds"][task]) for e in group
                   if not e.operator.any())
    # the hard task's threshold is its own (a global one would label none of its steps positive)
    assert report["thresholds"]["hard"] < report["thresholds"]["easy"] - 0.3
    assert demo.positive.all()  # judged against the task's threshold like any step
    assert operator.positive.tolist() == [False, True, True, False]  # the operator's steps: positive
    assert report["tasks_without_success"] == []


def test_a_task_without_success_falls_back_and_nothing_positive_is_refused():
    solved = [_episode("r/s0", "solved", "online", True, [0.1, 0.2]), _episode("r/s1", "solved", "online", False, [0.0, -0.1])]
    unsolved = [_episode("r/u0", "unsolved", "online", False, [0.3, 0.4, 0.5]),
                _episode("r/u1", "unsolved", "online", False, [0.0, 0.1], operator=[False, True])]
    report = label_episodes(solved + unsolved, LabelConfig(n_step=100))
    assert report["tasks_without_success"] == ["unsolved"]
    assert not unsolved[0].positive.any()  # no success yet: the policy's own steps are all negative
    assert unsolved[1].positive.tolist() == [False, True]  # but the operator's correction is positive
    with pytest.raises(NoPositiveSteps, match="nothing to imitate"):
        label_episodes([_episode("r/f0", "t", "online", False, [0.1, 0.2])], LabelConfig())


# ---------------------------------------------------------------------------------------- on the tiny model
def _config(run_dir, **learner):
    cfg = load_config(None, environ={}, run_dir=str(run_dir))
    lc = cfg.learner
    lc.algorithm = "recap"
    lc.bootstrap.demos, lc.bootstrap.steps, lc.bootstrap.batch_size = 8, 12, 8
    lc.sft.steps, lc.sft.batch_size, lc.sft.eval_fraction = 4, 8, 0.25
    lc.recap.value_steps = 40
    cfg.learner = lc.updated(**learner)
    return cfg


def trainer_with_episodes(run_dir, **learner) -> Trainer:
    """Stage 0 on the tiny model, then 4 sampled episodes and 4 with the scripted operator stepping in."""
    trainer = Trainer(_config(run_dir, **learner), run_dir)
    trainer.bootstrap(progress=False)
    store = EpisodeStore(run_dir / "episodes")
    g = torch.Generator().manual_seed(0)
    rollout(trainer.policy, range(500, 504), "reach", "sample", g, store=store)
    intervener = ScriptedIntervener(InterventionConfig(budget_fraction=1.0, grace_steps=0, max_takeovers=1))
    res = rollout(trainer.policy, range(600, 604), "reach", "sample", g, store=store, intervener=intervener)
    assert res.intervention_steps.sum() > 0
    return trainer


@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    return trainer_with_episodes(tmp_path_factory.mktemp("recap"), recap={"guidance": 1.5})


def test_value_targets_of_an_intervened_episode_and_its_labels(trainer):
    phase = RecapPhase(trainer, RecapConfig.from_learner(trainer.lc))
    metas = [m for m in trainer.store.list_episodes() if m.get("intervention_steps")]
    episodes, metrics = phase.fit_values(trainer.store.list_episodes())
    by_key = {e.key: e for e in episodes}
    limits = {}
    for e in episodes:
        limits[e.task] = max(limits.get(e.task, 0), len(phase.loaded[e.key][1].steps))
    for m in metas:
        e = by_key[f"{m['robot_id']}/{m['episode_id']}"]
        steps = phase.loaded[e.key][1].steps
        # the return is what happened, operator included: the targets of its outcome over all its steps
        expected = value_targets(len(steps), m["outcome"] == "success", limits[e.task])[e.steps]
        assert e.targets == pytest.approx(expected)
        driven = [bool(steps[s].get("intervention")) for s in e.steps]
        assert e.operator.tolist() == driven
    label_episodes(episodes, LabelConfig())
    operated = [e for e in episodes if e.operator.any()]
    assert operated and all(e.positive[e.operator].all() for e in operated)
    assert metrics["value_samples"] > 0 and np.isfinite(metrics["value_mae_train"])


def test_one_recap_iteration_publishes_a_version_served_with_the_indicator(trainer):
    before = trainer.version
    metrics = recap_iteration(trainer, 0, RecapConfig.from_learner(trainer.lc))
    version = trainer.publish("full", "recap", metrics)
    assert version == before + 1
    meta = trainer.registry.read_meta(version)
    assert meta[META_KEY] == {"format": 1, "indicator": True, "guidance": 1.5}
    labels = json.loads((trainer.run_dir / "recap" / "labels-it000.json").read_text())
    assert labels["made_by_version"] == before and labels["published_version"] == version
    assert 0 < metrics["sft_positive_samples"] < metrics["sft_samples"]
    served = Policy.load(CheckpointRegistry(trainer.run_dir / "checkpoints"))
    assert served.advantage is not None and served.advantage.guidance == 1.5
    # the learner's own evaluation serves the model the same way as the server
    assert trainer.policy.advantage == served.advantage
    # a restarted learner keeps serving (and publishing) it with the indicator
    again = Trainer(trainer.config, trainer.run_dir)
    again.resume()
    assert again.run_time == {META_KEY: meta[META_KEY]}


def test_a_store_with_no_labelled_episode_publishes_nothing(tmp_path, trainer):
    run_dir = tmp_path / "empty"
    cold = Trainer(_config(run_dir), run_dir)
    cold._adopt(trainer.model, trainer.norm, trainer.version)  # a model, but no episode at all
    with pytest.raises(NoLabelledEpisodes, match="no episode labelled"):
        recap_iteration(cold, 0, RecapConfig.from_learner(cold.lc))
    assert CheckpointRegistry(run_dir / "checkpoints").versions() == []


def test_conditioned_sft_takes_only_the_steps_whose_frames_were_stored(trainer):
    """A simulated failure may keep its frames only at the policy's decisions (sim/metaworld): the
    steps without a frame are no samples, so the SFT never reads a frame that is not there."""
    from learner.recap.sft import ConditionedSFTConfig, LabelledEpisode, build_conditioned_data
    from learner.sft import make_batch

    meta = next(m for m in trainer.store.list_episodes(source="online") if not m.get("intervention_steps"))
    episode = trainer.store.load(meta["robot_id"], meta["episode_id"])
    kept = {s["step"] for s in episode.steps[::4]}
    for s in episode.steps:
        if s["step"] not in kept:
            s["frames"] = []
    labelled = LabelledEpisode(meta, episode, {s["step"]: True for s in episode.steps})
    data = build_conditioned_data([labelled], chunk=4, cfg=ConditionedSFTConfig(eval_fraction=0.0))
    assert data.train and {x.step for x in data.train} <= kept
    make_batch(trainer.model, trainer.norm, data, data.train)  # reads every sample's frame
