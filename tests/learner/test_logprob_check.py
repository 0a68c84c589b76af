"""The learner's log-prob check (learner.rl.ppo.check_logprobs) against what a server really
sends: a chunk sampled in normalized space, returned in robot units (float32), stored, and
normalized again by the learner. Float rounding alone must not read as a mismatch, even with a head
whose means blew up; a real preprocessing difference must still be caught."""

from __future__ import annotations

import numpy as np
import torch

from learner.rl.ppo import RolloutBatch, check_logprobs, gaussian_logprob, logprob_resolution
from vla.normalization import Normalizer

H, A, N = 4, 7, 64


def _normalizer() -> Normalizer:
    rng = np.random.default_rng(0)
    actions = rng.normal([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.5], [0.01, 0.01, 0.01, 0.05, 0.05, 0.05, 0.4], (500, A))
    return Normalizer.from_demos(actions, rng.normal(size=(500, 7)), action_dim=A, state_dim=7)


def _served(mean: torch.Tensor, log_std: torch.Tensor, norm: Normalizer, seed: int = 0):
    """What the server does (vla.policy.Policy.act_from_features) and what the learner gets back."""
    dist = torch.distributions.Normal(mean, torch.exp(log_std).expand_as(mean))
    eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(seed))
    a_norm = dist.mean + dist.stddev * eps
    server_logprob = dist.log_prob(a_norm).sum(-1)
    robot_units = norm.unnormalize_actions(a_norm.view(-1, H, A)).numpy().astype(np.float32)
    stored = np.asarray(robot_units.tolist(), np.float64)  # JSON in the episode store
    learner_actions = norm.normalize_actions(torch.from_numpy(stored.astype(np.float32))).flatten(1)
    return server_logprob, learner_actions


def _batch(recomputed, server, resolution) -> RolloutBatch:
    z = torch.zeros(len(server))
    return RolloutBatch(features=z[:, None], states=z[:, None], actions=z[:, None], rewards=z, dones=z,
                        behaviour_logprob=recomputed, server_logprob=server,
                        same_version=torch.ones(len(server), dtype=torch.bool), logprob_resolution=resolution)


def _check(mean, log_std, norm, tolerance=1e-3, learner_mean=None):
    server, actions = _served(mean, log_std, norm)
    seen = mean if learner_mean is None else learner_mean
    recomputed = gaussian_logprob(seen, log_std, actions)
    return check_logprobs(_batch(recomputed, server, logprob_resolution(seen, log_std, actions)), tolerance)


def test_float_noise_of_a_head_whose_means_blew_up_is_not_a_mismatch():
    norm = _normalizer()
    g = torch.Generator().manual_seed(1)
    mean = 1e5 * torch.randn(N, H * A, generator=g)  # the means blew up
    log_std = torch.full((H * A,), -5.0)  # the clamp's floor: sigma = 0.0067
    out = _check(mean, log_std, norm)
    assert out["logprob_max_abs_diff"] > 10.0  # tens of nats of pure float noise (an absolute check fires)
    assert out["logprob_mismatch"] == 0, out


def test_a_sane_head_is_checked_tightly_and_a_real_mismatch_is_caught():
    norm = _normalizer()
    g = torch.Generator().manual_seed(2)
    mean = torch.randn(N, H * A, generator=g)
    log_std = torch.full((H * A,), -1.0)
    ok = _check(mean, log_std, norm)
    assert ok["logprob_mismatch"] == 0 and ok["logprob_max_allowed"] < 0.01  # still a tight check
    # the learner sees a slightly different input (a state normalized differently): mean off by 0.05
    bad = _check(mean, log_std, norm, learner_mean=mean + 0.05)
    assert bad["logprob_mismatch"] > N // 2, bad
    # and with the blown-up head, a real input difference is still far above the float noise
    big = 1e5 * torch.randn(N, H * A, generator=g)
    wrong = _check(big, torch.full((H * A,), -5.0), norm, learner_mean=big * 1.001)
    assert wrong["logprob_mismatch"] > N // 2, wrong
