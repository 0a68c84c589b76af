"""PPO and SAC learn a synthetic contextual bandit on "cached features" to >= 95% of the optimal
return, with the real vla action-head classes wrapped exactly as the Trainer wraps them.

The bandit: 8 contexts (a random feature vector + state each), each with its own optimal
normalized action chunk a* [4 x 7]; reward exp(-mean((a - a*)^2)) in (0, 1], optimum 1. The greedy
return is the mean reward of the policy's mean action over the contexts.
"""

import torch

from learner.rl.ppo import PPOConfig, RolloutBatch, compute_gae, gaussian_logprob, ppo_update
from learner.rl.sac import SACConfig, SACLearner, Transitions
from vla.model import ActionHeads, HeadActor, HeadCritic, HeadTwinQ

torch.set_num_threads(1)
F, S, H, D, K = 32, 7, 4, 7, 8
A = H * D


def make_bandit(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(K, F, generator=g), torch.randn(K, S, generator=g), torch.randn(K, A, generator=g), g


def reward(opt_a, k, a):
    return torch.exp(-((a - opt_a[k]) ** 2).mean(-1))


def greedy_return(actor, ctx_f, ctx_s, opt_a) -> float:
    with torch.no_grad():
        mean, _ = actor(ctx_f, ctx_s)
    return float(reward(opt_a, torch.arange(K), mean).mean())


def test_gae_matches_hand_computation():
    r = torch.tensor([0.0, 0.0, 1.0, 0.0, 0.0])
    v = torch.tensor([0.5, 0.6, 0.7, 0.2, 0.1])
    d = torch.tensor([0.0, 0.0, 1.0, 0.0, 1.0])  # two episodes: 3 and 2 decisions
    adv, ret = compute_gae(r, v, d, gamma=0.9, lam=0.8)
    # by hand, backwards
    e2 = [0.0 - 0.1, 0.0 + 0.9 * 0.1 - 0.2]
    a4 = e2[0]
    a3 = e2[1] + 0.9 * 0.8 * a4
    d2 = 1.0 - 0.7
    d1 = 0.0 + 0.9 * 0.7 - 0.6
    d0 = 0.0 + 0.9 * 0.6 - 0.5
    a2 = d2
    a1 = d1 + 0.72 * a2
    a0 = d0 + 0.72 * a1
    torch.testing.assert_close(adv, torch.tensor([a0, a1, a2, a3, a4]))
    torch.testing.assert_close(ret, adv + v)


def test_ppo_learns_contextual_bandit():
    ctx_f, ctx_s, opt_a, g = make_bandit(0)
    torch.manual_seed(0)
    heads = ActionHeads(F, S, H, D, hidden=128, init_log_std=-0.5)
    actor, critic = HeadActor(heads), HeadCritic(heads)
    opt = torch.optim.Adam([*actor.parameters(), *critic.parameters()], lr=1e-3, eps=1e-5)
    cfg = PPOConfig(critic_warmup_epochs=5, target_kl=None)  # every epoch: no KL stop
    warmup_rounds = 1
    start = greedy_return(actor, ctx_f, ctx_s, opt_a)
    n = 512
    for rnd in range(25):
        k = torch.randint(K, (n,), generator=g)
        with torch.no_grad():
            mean, log_std = actor(ctx_f[k], ctx_s[k])
            a = mean + log_std.exp() * torch.randn(mean.shape, generator=g)
            logp = gaussian_logprob(mean, log_std, a)
        batch = RolloutBatch(ctx_f[k], ctx_s[k], a, reward(opt_a, k, a), torch.ones(n), logp, logp.clone(),
                             torch.ones(n, dtype=torch.bool))
        metrics = ppo_update(actor, critic, opt, batch, cfg, warmup=rnd < warmup_rounds, generator=g)
        assert metrics["logprob_mismatch"] == 0
        if rnd == 0:  # warm-up: the critic learns, the policy must not move
            assert greedy_return(actor, ctx_f, ctx_s, opt_a) == start
    final = greedy_return(actor, ctx_f, ctx_s, opt_a)
    assert start < 0.5
    assert final >= 0.95, f"PPO reached {final:.3f} of the optimal return 1.0 (start {start:.3f})"


def test_sac_from_demos_learns_contextual_bandit():
    """SAC from demonstrations (50/50 demo/online batches) on a one-step chunk (A = 7): the demos are
    systematically off (a fixed bias), so cloning them is not enough -- the critic must lead the
    actor past them."""
    g = torch.Generator().manual_seed(1)
    a_dim = D
    ctx_f, ctx_s, opt_a = torch.randn(K, F, generator=g), torch.randn(K, S, generator=g), torch.randn(K, a_dim, generator=g)
    torch.manual_seed(1)
    heads = ActionHeads(F, S, 1, D, hidden=128, init_log_std=-0.5)
    actor, twin = HeadActor(heads), HeadTwinQ(heads)
    sac = SACLearner(actor, twin, a_dim, SACConfig(batch_size=128, init_alpha=1e-3, alpha_lr=3e-3, actor_lr=1e-3,
                                                    critic_lr=1e-3, bc_coef=0.0))
    assert not {p.data_ptr() for p in sac.target.parameters()} & {q.data_ptr() for q in twin.parameters()}

    def transitions(k, a):
        return Transitions(ctx_f[k], ctx_s[k], a, reward(opt_a, k, a), ctx_f[k], ctx_s[k], torch.ones(len(k)))

    kd = torch.randint(K, (64,), generator=g)
    bias = 0.5 * torch.randn(a_dim, generator=g)
    demo = transitions(kd, opt_a[kd] + bias + 0.2 * torch.randn(64, a_dim, generator=g))
    demo_return = float(reward(opt_a, torch.arange(K), opt_a + bias).mean())
    start = greedy_return(actor, ctx_f, ctx_s, opt_a)
    online = None
    for _ in range(20):
        k = torch.randint(K, (16,), generator=g)
        with torch.no_grad():
            mean, log_std = actor(ctx_f[k], ctx_s[k])
            a = mean + log_std.exp() * torch.randn(mean.shape, generator=g)
        new = transitions(k, a)
        online = new if online is None else Transitions.cat([online, new])
        metrics = sac.train(demo, online, 50, g)
    final = greedy_return(actor, ctx_f, ctx_s, opt_a)
    assert metrics["n_demo"] == 64 and metrics["n_online"] == 320
    assert start < 0.5 and demo_return < 0.8
    assert final >= 0.95, f"SAC reached {final:.3f} of the optimal return 1.0 (start {start:.3f}, demos {demo_return:.3f})"
