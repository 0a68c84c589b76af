"""AWR, RECAP's baseline (learner/recap/awr.py): the weights from the advantages by hand (higher
advantage, higher weight; the clip; operator steps at the clip), weighted sampling of the SFT
batches (high weights drawn more often; unweighted batches exactly as before), and one AWR
iteration on the tiny model -- after a RECAP version -- publishes an ordinary version."""

import json

import numpy as np
import pytest
import torch
from test_recap import _episode, trainer_with_episodes

from learner.recap.awr import AWRConfig, awr_weights
from learner.recap.labels import LabelConfig, label_episodes
from learner.recap.phase import RecapConfig, RecapPhase, recap_iteration
from learner.sft import SFTConfig, SFTData, global_batch_indices
from learner.trainer import Trainer
from vla.advantage import META_KEY
from vla.policy import Policy
from vla.registry import CheckpointRegistry

torch.set_num_threads(1)


# ---------------------------------------------------------------------------------------- weights
def test_weights_from_the_advantages_by_hand():
    a = _episode("r/a", "t", "online", True, [-0.2, 0.0, 0.1, 0.3])
    b = _episode("r/b", "t", "online", False, [-0.1, 5.0, -3.0], operator=[False, False, True])
    demo = _episode("r/d", "t", "expert", True, [0.2, 0.2])
    flat = _episode("r/f", "flat", "online", True, [0.4, 0.4])  # no spread: every weight 1
    for ep in (a, b, demo, flat):
        ep.advantages = ep.targets.copy()  # as label_episodes' Monte-Carlo advantage would make them
    report = awr_weights([a, b, demo, flat], AWRConfig(temperature=2.0, clip=20.0))
    sigma = np.std([-0.2, 0.0, 0.1, 0.3, -0.1, 5.0])  # the policy's own steps: not the demo, not the operator
    assert report["awr_scales"]["t"] == pytest.approx(sigma)
    assert a.weights == pytest.approx(np.exp(np.array([-0.2, 0.0, 0.1, 0.3]) / (2.0 * sigma)), rel=1e-5)
    assert np.all(np.diff(a.weights) > 0)  # a higher advantage, a higher weight
    assert a.weights[1] == pytest.approx(1.0)  # A = 0: as the value function expected, weight 1
    assert demo.weights == pytest.approx(np.exp(0.2 / (2.0 * sigma)), rel=1e-5)  # a demo: by its advantage
    assert b.weights[1] == pytest.approx(np.exp(5.0 / (2.0 * sigma)), rel=1e-5) and b.weights[1] < 20
    assert b.weights[2] == 20.0  # the operator's step: the clip, whatever its advantage
    assert flat.weights.tolist() == [1.0, 1.0]
    w = np.concatenate([e.weights for e in (a, b, demo, flat)])
    assert report["awr_ess_fraction"] == pytest.approx(w.sum() ** 2 / (len(w) * (w ** 2).sum()))
    assert report["awr_clipped_fraction"] == pytest.approx(1 / len(w))
    report = awr_weights([a, b, demo, flat], AWRConfig(temperature=0.5, clip=20.0))
    assert b.weights[1] == 20.0  # exp(5 / (0.5 sigma)) > 20: the clip
    assert a.weights.max() < 20 and report["awr_clipped_fraction"] == pytest.approx(2 / len(w))
    with pytest.raises(ValueError, match="temperature > 0"):
        awr_weights([a], AWRConfig(temperature=0.0))


# ---------------------------------------------------------------------------------------- weighted batches
def _old_global_batch_indices(n: int, cfg: SFTConfig) -> list[torch.Tensor]:
    """learner/sft.py's function before AWR, verbatim: the unweighted batches must not change."""
    g = torch.Generator().manual_seed(cfg.seed)
    flat: list[int] = []
    need = cfg.steps * cfg.batch_size
    while len(flat) < need:
        flat += torch.randperm(n, generator=g).tolist()
    return [torch.tensor(flat[i * cfg.batch_size:(i + 1) * cfg.batch_size]) for i in range(cfg.steps)]


def test_weighted_sampling_draws_high_weights_more_often_and_unweighted_batches_are_unchanged():
    cfg = SFTConfig(steps=50, batch_size=16, seed=3)
    weights = [1.0] * 8 + [0.0, 10.0]  # sample 8 never, sample 9 ten times as often as each of 0..7
    batches = global_batch_indices(10, cfg, weights)
    assert len(batches) == cfg.steps and all(len(b) == cfg.batch_size for b in batches)
    counts = np.bincount(torch.cat(batches).numpy(), minlength=10)
    assert counts[8] == 0
    # expected 800 x 10/18 = 444 draws of sample 9 and 44 of each other: far apart (seeded, so exact)
    assert counts[9] > 5 * counts[:8].max()
    again = global_batch_indices(10, cfg, weights)
    assert all(torch.equal(x, y) for x, y in zip(batches, again, strict=True))  # seeded
    for n in (7, 10, 33):
        old, new = _old_global_batch_indices(n, cfg), global_batch_indices(n, cfg)
        assert all(torch.equal(x, y) for x, y in zip(old, new, strict=True))
    with pytest.raises(ValueError, match="finite numbers >= 0"):
        global_batch_indices(3, cfg, [1.0, -1.0, 1.0])


def test_sft_data_keeps_the_weights_of_its_training_samples_only():
    data = SFTData(train=[], eval=[])
    data.add_episode(["a", "b"], held_out=False, weights=[1.0, 2.0])
    data.add_episode(["c"], held_out=True, weights=[5.0])  # held out: its weight is never drawn
    data.add_episode(["d"], held_out=False, weights=[3.0])
    assert data.train == ["a", "b", "d"] and data.train_weights == [1.0, 2.0, 3.0]
    with pytest.raises(ValueError, match="weighted in every training episode or in none"):
        data.add_episode(["e"], held_out=False)
    assert SFTData(train=[], eval=[]).train_weights is None


# ---------------------------------------------------------------------------------------- on the tiny model
@pytest.fixture(scope="module")
def trainer(tmp_path_factory):
    return trainer_with_episodes(tmp_path_factory.mktemp("awr"), recap={"awr_temperature": 1.0, "awr_clip": 20.0})


def test_awr_samples_have_the_plain_prompt_and_operator_steps_weigh_the_clip(trainer):
    trainer.lc.recap.weighting = "awr"
    phase = RecapPhase(trainer, RecapConfig.from_learner(trainer.lc))
    episodes, _ = phase.fit_values(trainer.store.list_episodes())
    label_episodes(episodes, LabelConfig())
    awr_weights(episodes, phase.cfg.weighting.awr)
    data = phase.sft_data(episodes)
    assert len(data.train_weights) == len(data.train)
    plain = {m["instruction"] for m in trainer.store.list_episodes()}
    assert all(s.instruction in plain for s in data.train + data.eval)  # no "Advantage: ..." appended
    operated = [w for s, w in zip(data.train, data.train_weights, strict=True)
                if next(x for x in s.episode.steps if x["step"] == s.step).get("intervention")]
    assert operated and all(w == 20.0 for w in operated)
    assert len(set(data.train_weights)) > 2  # the policy's own steps: weighted by their advantages


def test_an_awr_iteration_after_a_recap_version_publishes_an_ordinary_version(trainer):
    trainer.lc.recap.weighting = "indicator"
    recap = trainer.publish("full", "recap", recap_iteration(trainer, 0, RecapConfig.from_learner(trainer.lc)))
    assert META_KEY in trainer.registry.read_meta(recap)  # RECAP: served with the indicator
    trainer.lc.recap.weighting = "awr"
    metrics = recap_iteration(trainer, 1, RecapConfig.from_learner(trainer.lc))
    version = trainer.publish("full", "recap", metrics)
    meta = trainer.registry.read_meta(version)
    assert version == recap + 1 and META_KEY not in meta  # AWR: an ordinary policy
    assert metrics["sft_positive_samples"] == 0 and 0 < metrics["sft_awr_ess_fraction"] <= 1
    labels = json.loads((trainer.run_dir / "recap" / "labels-it001.json").read_text())
    assert labels["published_version"] == version and 0 < labels["awr_ess_fraction"] <= 1
    assert all(len(e["weight"]) == len(e["steps"]) for e in labels["episodes"].values())
    served = Policy.load(CheckpointRegistry(trainer.run_dir / "checkpoints"))
    assert served.advantage is None and trainer.policy.advantage is None
    again = Trainer(trainer.config, trainer.run_dir)
    again.resume()
    assert again.run_time == {}
