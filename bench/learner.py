"""Learner benchmark: why the RL phase trains the head on cached features.

    python -m bench.learner [--samples 256] [--full-batches 4] [--ingest-seconds 5] [--json out.json]

Rows (tiny embedded model, mock frames, this machine's CPU threads):
* head-only PPO update on cached features: the real `ppo_update` (4 epochs, minibatch 64), time per
  sample per epoch -- one gradient pass over one sample;
* full-model PPO update from raw frames (backbone unfrozen, mode "full"): preprocessing + backbone +
  pooler + heads forward, the same clipped PPO + value loss, backward, optimizer step, per sample;
  the ratio of the two is the speed-up of freezing the VLM (iRe-VLA);
* feature computation (no grad, once per frame, amortized over every later round);
* ingestion: 4 robot clients with 2 JPEG cameras streaming steps over ZeroMQ into the fsynced store
  (`bench.learner_ingest`, the learner-service engineer's harness).
"""

from __future__ import annotations

import argparse
import json
import logging
import time

import numpy as np
import torch

from learner.rl.ppo import PPOConfig, RolloutBatch, gaussian_logprob, ppo_update
from vla.model import HeadActor, HeadCritic


def mock_observations(n: int, size: int, seed: int = 0):
    from interface.policy import Observation
    from sim.mock.vec import VecScene

    vec = VecScene(n)
    instructions = vec.reset(range(seed, seed + n), "reach")
    images = vec.render(size, "front")
    states = vec.states()
    return [Observation({"front": images[i]}, states[i], instructions[i]) for i in range(n)]


def bench_features(policy, obs, batch: int = 64) -> float:
    policy.features(obs[:batch])  # warm-up
    t0 = time.perf_counter()
    for start in range(0, len(obs), batch):
        policy.features(obs[start:start + batch])
    return (time.perf_counter() - t0) / len(obs)


def rollout_batch(actor, features, states, generator) -> RolloutBatch:
    n = features.shape[0]
    with torch.no_grad():
        mean, log_std = actor(features, states)
        actions = mean + log_std.exp() * torch.randn(mean.shape, generator=generator)
        logp = gaussian_logprob(mean, log_std, actions)
    rewards = (torch.rand(n, generator=generator) < 0.3).float()
    return RolloutBatch(features, states, actions, rewards, torch.ones(n), logp, logp.clone(),
                        torch.ones(n, dtype=torch.bool))


def bench_head_ppo(model, features, states, repeats: int = 3) -> float:
    g = torch.Generator().manual_seed(0)
    actor, critic = HeadActor(model.heads), HeadCritic(model.heads)
    cfg = PPOConfig(update_epochs=4, minibatch_size=64, learning_rate=3e-4, target_kl=None)  # every epoch timed
    opt = torch.optim.Adam([*actor.parameters(), *critic.parameters()], lr=cfg.learning_rate)
    batch = rollout_batch(actor, features, states, g)
    ppo_update(actor, critic, opt, batch, cfg, warmup=False, generator=g)  # warm-up
    t0 = time.perf_counter()
    for _ in range(repeats):
        ppo_update(actor, critic, opt, batch, cfg, warmup=False, generator=g)
    return (time.perf_counter() - t0) / (repeats * cfg.update_epochs * len(batch))


def bench_full_ppo(model, norm, obs, batch: int, n_batches: int) -> float:
    """The same PPO loss, but from raw frames through the unfrozen backbone."""
    g = torch.Generator().manual_seed(0)
    model.set_mode("full")
    model.train()
    actor, critic = HeadActor(model.heads), HeadCritic(model.heads)
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    cfg = PPOConfig(target_kl=None)  # every epoch timed

    def step(part) -> None:
        inputs = model.collate(part)
        states = norm.normalize_states(model.states_tensor(part))
        features = model.features(inputs)
        rb = rollout_batch(actor, features.detach(), states, g)
        mean, log_std = actor(features, states)
        ratio = (gaussian_logprob(mean, log_std, rb.actions) - rb.behaviour_logprob).exp()
        adv = rb.rewards - rb.rewards.mean()
        pg = torch.max(-adv * ratio, -adv * ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef)).mean()
        v_loss = 0.5 * (critic(features, states) - rb.rewards).pow(2).mean()
        opt.zero_grad(set_to_none=True)
        (pg + cfg.vf_coef * v_loss).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        opt.step()

    step(obs[:batch])  # warm-up
    t0 = time.perf_counter()
    for i in range(n_batches):
        step(obs[(i * batch) % len(obs):][:batch])
    model.set_mode("head_only")
    model.eval()
    return (time.perf_counter() - t0) / (n_batches * batch)


def run(samples: int, full_batch: int, full_batches: int, ingest_seconds: float) -> dict:
    from deployment.model import ModelConfig
    from vla.model import build_model
    from vla.normalization import Normalizer
    from vla.policy import Policy

    config = ModelConfig()
    model = build_model(config)
    policy = Policy(model, Normalizer.identity(config.action_dim, config.state_dim))
    obs = mock_observations(samples, config.image_size)
    feature_s = bench_features(policy, obs)
    features = policy.features(obs).float()
    states = torch.from_numpy(np.stack([o.state for o in obs]))
    head_s = bench_head_ppo(model, features, states)
    full_s = bench_full_ppo(model, policy.norm, obs, full_batch, full_batches)
    result = {"threads": torch.get_num_threads(), "samples": samples,
              "head_ppo_us_per_sample": head_s * 1e6, "full_ppo_us_per_sample": full_s * 1e6,
              "speedup": full_s / head_s, "feature_us_per_frame": feature_s * 1e6,
              "params": model.parameter_counts()}
    if ingest_seconds > 0:
        try:
            from bench.learner_ingest import ingest_benchmark
        except ImportError as e:  # the service half is not there: say so, do not invent a number
            result["ingest"] = {"error": f"bench.learner_ingest unavailable: {e}"}
        else:
            result["ingest"] = ingest_benchmark(n_clients=4, cameras=2, seconds=ingest_seconds)
    return result


def format_table(r: dict) -> str:
    lines = ["| measurement | value |", "|---|---|",
             f"| head-only PPO update on cached features | {r['head_ppo_us_per_sample']:.1f} µs / sample |",
             f"| full-model PPO update from raw frames (backbone unfrozen) | "
             f"{r['full_ppo_us_per_sample']:.0f} µs / sample |",
             f"| speed-up of the head-only update | **{r['speedup']:.0f}x** |",
             f"| feature computation (no grad, once per frame) | {r['feature_us_per_frame']:.0f} µs / frame |"]
    ing = r.get("ingest")
    if ing is not None:
        if "error" in ing:
            lines.append(f"| ingestion, 4 clients x 2 JPEG cameras | not measured: {ing['error']} |")
        else:
            lines.append(f"| ingestion, {ing['clients']} clients x {ing['cameras']} JPEG cameras (fsynced) | "
                         f"{ing['steps_per_s']:.0f} steps/s ({ing['frames_per_s']:.0f} frames/s, "
                         f"ack p50 {ing['ack_p50_ms']:.1f} ms) |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.learner", description=__doc__.splitlines()[0])
    p.add_argument("--samples", type=int, default=256, help="cached-feature batch for the head update")
    p.add_argument("--full-batch", type=int, default=32)
    p.add_argument("--full-batches", type=int, default=4)
    p.add_argument("--ingest-seconds", type=float, default=5.0, help="0 = skip the ingestion row")
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    p.add_argument("--json", default=None, help="also write the results here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.threads:
        torch.set_num_threads(args.threads)
    r = run(args.samples, args.full_batch, args.full_batches, args.ingest_seconds)
    print(f"learner: tiny model {r['params']}, {r['threads']} torch threads")
    print(format_table(r))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(r, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
