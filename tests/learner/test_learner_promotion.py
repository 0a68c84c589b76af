"""The learner and the server's promotion gate: after a refusal the trainer continues from the
promoted version (on resume and before the next round), and what it publishes next is a child of
the promoted version, so the gate can test it (a descendant of a refused version would be refused)."""

from __future__ import annotations

import torch

from bench.harness import publish_tiny
from deployment.config import load_config
from vla.normalization import Normalizer
from vla.registry import publish

torch.set_num_threads(1)


def test_trainer_goes_back_to_the_promoted_version_after_a_refusal(tmp_path):
    from learner.trainer import Trainer

    model, registry, v1 = publish_tiny(tmp_path)
    registry.set_promoted(v1)
    v2 = publish(registry, model, Normalizer.identity(), kind="head", parent=v1, phase="rl")
    v3 = publish(registry, model, Normalizer.identity(), kind="head", parent=v2, phase="rl")
    trainer = Trainer(load_config(environ={}, run_dir=str(tmp_path)), tmp_path)
    assert trainer.resume() == v3 and trainer.follow_promotion() is None  # nothing refused: carry on

    registry.mark_refused(v2, "worse by more than 0.1")  # the server rolled back v2; v3 is its child
    assert trainer.follow_promotion() == v1 and trainer.version == v1
    assert Trainer(load_config(environ={}, run_dir=str(tmp_path)), tmp_path).resume() == v1  # a restart too
    v4 = trainer.publish("head", "rl", {"loss": 0.0})
    meta = registry.read_meta(v4)
    assert meta["parent"] == v1 and registry.refused_ancestor(v4) is None and registry.latest() == v4
    assert registry.resume_version() == v4
