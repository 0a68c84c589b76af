"""A rollout given the learner's FeatureCache keeps the features the policy computed to act, and
they are the features the cache would compute from the stored frames (so an RL round reads them
instead of featurizing the same frames again)."""

import numpy as np
import torch

from deployment.model import ModelConfig
from episodes.store import EpisodeStore
from learner.dataset import load_decisions
from learner.evaluate import rollout
from learner.features import FeatureCache
from vla.model import build_model
from vla.normalization import Normalizer
from vla.policy import Policy


def test_acting_features_are_the_stored_frames_features(tiny_dir, tmp_path):
    torch.manual_seed(0)
    policy = Policy(build_model(ModelConfig(), backbone_dir=tiny_dir), Normalizer.identity())
    store = EpisodeStore(tmp_path / "episodes", durable=False)
    acting = FeatureCache(tmp_path / "features")
    res = rollout(policy, range(5, 8), "reach", "sample", torch.Generator().manual_seed(0), store=store,
                  features=acting, max_steps=3 * policy.spec.chunk)
    fresh = FeatureCache(tmp_path / "recomputed")
    for meta in res.metas:
        d = load_decisions(store, meta, policy.spec.chunk)
        assert len(d.steps) > 1
        kept = acting.features(policy, d)
        recomputed = fresh.features(policy, d)
        np.testing.assert_allclose(kept.numpy(), recomputed.numpy(), rtol=1e-4, atol=1e-5)
    assert acting.stats["computed"] == 0 and acting.stats["loaded"] > 3  # nothing featurized twice
    assert fresh.stats["computed"] == acting.stats["loaded"]
