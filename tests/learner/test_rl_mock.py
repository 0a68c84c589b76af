"""PPO on real mock episodes moves the policy towards what succeeded.

Stage 0 on 8 expert demos (layouts 0..7, 40 steps: the tiny model partly fits them), then sampled
episodes on those layouts stored through EpisodeStore exactly as the ingest stores robot episodes,
then `Trainer.rl_round` twice: the first round is the critic warm-up (the policy must not move), the
second must raise the log-probability of the chunks of successful episodes relative to those of
failed ones (the sparse +1 success reward, GAE and the clipped ratio pointing the right way).

That one RL phase raises greedy success is tests/learner/test_rl_improves.py (it needs ~1000 episodes).
"""

import numpy as np
import torch

from deployment.config import load_config
from episodes.store import EpisodeStore
from learner.dataset import load_decisions
from learner.evaluate import rollout
from learner.rl.ppo import gaussian_logprob
from learner.trainer import Trainer
from sim.mock.demos import record_demos
from vla.model import HeadActor

torch.set_num_threads(1)
LAYOUTS = list(range(8))


def chunk_logprobs(trainer, metas) -> tuple[np.ndarray, np.ndarray]:
    """Per-decision log-prob of the recorded chunk under the trainer's current head, and success flags."""
    actor = HeadActor(trainer.model.heads)
    out, success = [], []
    for meta in metas:
        d = load_decisions(trainer.store, meta, trainer.model.config.chunk)
        f, s, a = trainer._tensors(d)
        with torch.no_grad():
            mean, log_std = actor(f, s)
            out.append(gaussian_logprob(mean, log_std, a).numpy())
        success.append(np.full(len(d), meta["outcome"] == "success"))
    return np.concatenate(out), np.concatenate(success)


def test_ppo_round_on_mock_episodes_favours_successful_chunks(tmp_path):
    cfg = load_config(None, environ={}, run_dir=str(tmp_path))
    lc = cfg.learner
    lc.bootstrap.demos, lc.bootstrap.steps, lc.bootstrap.batch_size = len(LAYOUTS), 40, 16
    lc.sft.eval_fraction, lc.ppo.learning_rate = 0.0, 1e-4
    store = EpisodeStore(tmp_path / "episodes")
    record_demos(store, "reach", len(LAYOUTS), seed=0)
    trainer = Trainer(cfg, tmp_path)
    trainer.bootstrap(progress=False)
    g = torch.Generator().manual_seed(0)

    warm = rollout(trainer.policy, LAYOUTS * 2, "reach", "sample", g, store=store)
    before, _ = chunk_logprobs(trainer, warm.metas)
    m1 = trainer.rl_round(warm.metas)
    after, _ = chunk_logprobs(trainer, warm.metas)
    assert m1["critic_warmup"] == 1.0 and m1["logprob_mismatch"] == 0
    np.testing.assert_array_equal(before, after)  # warm-up: value head only
    trainer.publish("head", "rl", m1)

    batch = rollout(trainer.policy, LAYOUTS * 4, "reach", "sample", g, store=store)
    outcomes = [m["outcome"] for m in batch.metas]
    assert 0 < outcomes.count("success") < len(outcomes), outcomes  # both kinds present: a signal exists
    before, success = chunk_logprobs(trainer, batch.metas)
    m2 = trainer.rl_round(batch.metas)
    after, _ = chunk_logprobs(trainer, batch.metas)
    assert m2["critic_warmup"] == 0.0 and m2["logprob_mismatch"] == 0 and m2["clipfrac"] > 0
    delta = after - before
    print(f"success rate {m2['success_rate']:.2f}; mean log-prob change: successes {delta[success].mean():+.3f}, "
          f"failures {delta[~success].mean():+.3f}")
    assert delta[success].mean() > delta[~success].mean() + 0.1
    assert delta[success].mean() > 0
