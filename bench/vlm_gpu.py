"""GPU bench of a full-size backbone: a random-weight model with a real checkpoint's shapes
(PaliGemma 3B, Qwen2.5-VL-3B; vla/random_vlm.py, built from configs, no download) as the VLA
backbone, measured as the loop uses it:

* forward latency (collate + backbone + pooler) vs batch size, float32 (the baseline, same run)
  and bfloat16 (what `backbone_dtype: auto` picks on CUDA), with peak memory;
* one LoRA SFT step (adapters + pooler + head, learner/sft.py's loss): time and peak memory;
* one head-only PPO update on cached features (the RL phase): time.

    python -m bench.vlm_gpu                      # both families, ~3-4 min on one recent GPU
    python -m bench.vlm_gpu --family qwen2_5_vl --batch-sizes 1,8,32
    python -m bench.vlm_gpu --size tiny --device cpu   # the same code path on tiny models (CI smoke)

Without a CUDA device (and no --device) it prints "skipped: no CUDA device" and exits 0.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from deployment.model import ModelConfig
from vla.random_vlm import FULL, build_random_vlm

INSTRUCTION = "pick up the red block and put it in the bowl"


def observations(cameras: list[str], n: int, seed: int = 0):
    from interface.policy import Observation

    rng = np.random.default_rng(seed)
    return [Observation({c: rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for c in cameras},
                        rng.normal(size=7).astype(np.float32), INSTRUCTION) for _ in range(n)]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_mib(device: torch.device) -> float:
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")


def timed(fn, device: torch.device, repeats: int) -> float:
    """Median wall time (ms) of `fn` after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        sync(device)
        t0 = time.perf_counter()
        fn()
        sync(device)
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def build(family: str, size: str, device: torch.device, cameras: list[str]):
    """A VLAModel on a random-weight backbone built directly on `device` (float32)."""
    from vla.model import VLAModel

    with torch.device(device):
        backbone, processor = build_random_vlm(family, size)
    config = ModelConfig(cameras=cameras, image_size=224, device=str(device), backbone_dtype="float32")
    model = VLAModel(config, backbone, processor, f"<random {family} {size}>", f"random/{family}-{size}", "random")
    return model.to(device)


def forward_rows(model, family: str, dtype: torch.dtype, batch_sizes: list[int], repeats: int) -> list[dict]:
    device = torch.device(model.config.device)
    model.backbone.to(dtype)
    rows = []
    for b in batch_sizes:
        obs = observations(model.config.cameras, b, seed=b)
        reset_peak(device)

        def forward(obs=obs):
            with torch.inference_mode():
                model.features(model.collate(obs))

        ms = timed(forward, device, repeats)
        rows.append({"family": family, "what": f"forward {str(dtype).removeprefix('torch.')}", "batch": b,
                     "ms": ms, "ms/sample": ms / b, "peak MiB": peak_mib(device)})
    return rows


def lora_sft_row(model, family: str, batch: int, repeats: int) -> dict:
    from learner.sft import SFTConfig, prepare_sft_mode, sft_loss, sft_parameters
    from vla.normalization import Normalizer

    device = torch.device(model.config.device)
    prepare_sft_mode(model, "lora", "nll")
    optimizer = torch.optim.AdamW(sft_parameters(model, SFTConfig(lr=1e-4)))
    norm = Normalizer.identity()
    obs = observations(model.config.cameras, batch, seed=99)
    actions = torch.zeros(batch, model.chunk_dim, device=device)

    def step():
        inputs = model.collate(obs)
        states = norm.normalize_states(model.states_tensor(obs))
        loss = sft_loss(model, inputs, states, actions, "nll")
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    reset_peak(device)
    ms = timed(step, device, repeats)
    model.set_mode("head_only")
    return {"family": family, "what": f"LoRA SFT step (r={model.config.lora_rank})", "batch": batch, "ms": ms,
            "ms/sample": ms / batch, "peak MiB": peak_mib(device)}


def head_update_row(model, family: str, n: int, repeats: int) -> dict:
    from learner.rl.ppo import PPOConfig, RolloutBatch, gaussian_logprob, ppo_update
    from vla.model import HeadActor, HeadCritic

    device = torch.device(model.config.device)
    g = torch.Generator(device=device).manual_seed(0)
    f = torch.randn(n, model.feature_dim, device=device, generator=g)
    s = torch.randn(n, model.config.state_dim, device=device, generator=g)
    actor, critic = HeadActor(model.heads), HeadCritic(model.heads)
    with torch.no_grad():
        mean, log_std = actor(f, s)
        a = mean + log_std.exp() * torch.randn(mean.shape, device=device, generator=g)
        logp = gaussian_logprob(mean, log_std, a)
    batch = RolloutBatch(f, s, a, torch.rand(n, device=device, generator=g), torch.ones(n, device=device), logp,
                         logp.clone(), torch.ones(n, dtype=torch.bool, device=device))
    optimizer = torch.optim.Adam([*actor.parameters(), *critic.parameters()], lr=3e-4, eps=1e-5)
    cfg = PPOConfig(update_epochs=4, minibatch_size=64, target_kl=None)  # every epoch timed
    reset_peak(device)
    ms = timed(lambda: ppo_update(actor, critic, optimizer, batch, cfg, warmup=False), device, repeats)
    return {"family": family, "what": "head-only PPO update (4 epochs)", "batch": n, "ms": ms, "ms/sample": ms / n,
            "peak MiB": peak_mib(device)}


def print_table(rows: list[dict]) -> None:
    cols = ["family", "what", "batch", "ms", "ms/sample", "peak MiB"]
    fmt = {"ms": "{:.1f}", "ms/sample": "{:.2f}", "peak MiB": "{:.0f}"}
    cells = [[fmt.get(c, "{}").format(r[c]) for c in cols] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    print("| " + " | ".join(c.ljust(w) for c, w in zip(cols, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells:
        print("| " + " | ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) + " |")


def bench_family(family: str, args, device: torch.device) -> list[dict]:
    t0 = time.perf_counter()
    model = build(family, args.size, device, args.cameras.split(","))
    params = sum(p.numel() for p in model.backbone.parameters())
    print(f"{family}: {params / 1e6:.1f} M parameters, built in {time.perf_counter() - t0:.0f} s", flush=True)
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    rows = forward_rows(model, family, torch.float32, batch_sizes, args.repeats)  # the baseline
    bf16 = torch.bfloat16 if device.type == "cuda" else torch.float32
    if bf16 != torch.float32:
        rows += forward_rows(model, family, bf16, batch_sizes, args.repeats)
    rows.append(lora_sft_row(model, family, args.sft_batch, args.repeats))
    rows.append(head_update_row(model, family, args.rl_batch, args.repeats))
    del model
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.vlm_gpu", description=__doc__.splitlines()[0])
    p.add_argument("--family", action="append", choices=sorted(FULL), help="default: all with full-size shapes")
    p.add_argument("--size", choices=["full", "tiny"], default="full")
    p.add_argument("--device", default=None, help="default: cuda if available, else skip")
    p.add_argument("--cameras", default="front,wrist")
    p.add_argument("--batch-sizes", default="1,4,16,32")
    p.add_argument("--sft-batch", type=int, default=8)
    p.add_argument("--rl-batch", type=int, default=512, help="transitions in the head-only PPO update")
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args(argv)
    if args.device is None:
        if not torch.cuda.is_available():
            print("skipped: no CUDA device (this bench measures a full-size backbone on a GPU; "
                  "`--size tiny --device cpu` runs its code path here)")
            return 0
        args.device = "cuda"
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    print(f"device: {name}; torch {torch.__version__}; size {args.size}", flush=True)
    rows = []
    for family in args.family or sorted(FULL):
        rows += bench_family(family, args, device)
    print_table(rows)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
