"""Measure the embedded tiny model on this machine: parameter counts, forward latency, training-step
time per mode, checkpoint load times.

    python -m bench.vla_model [--threads 1] [--repeats 200] [--json out.json]

Prints a markdown table (the one in docs/vla.md). Median of `repeats` timed calls after warm-up."""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from deployment.model import ModelConfig
from interface.policy import Observation
from vla.model import build_model
from vla.normalization import Normalizer
from vla.policy import Policy
from vla.registry import CheckpointRegistry, publish


def _median_ms(fn, repeats: int, warmup: int = 10) -> tuple[float, float, float]:
    """(median wall, min wall, median CPU time of this process) in ms. On a loaded machine the CPU
    time is the better estimate of the cost on an idle core (with 1 thread, CPU <= wall)."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    return statistics.median(wall), min(wall), statistics.median(cpu)


def _obs(rng: np.random.Generator, i: int) -> Observation:
    instr = ["reach the red block", "push the blue block to the left",
             "pick up the green block and put it in the bowl"][i % 3]
    return Observation({"front": rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)},
                       rng.normal(size=7).astype(np.float32), instr)


def _train_step_fn(model, opt, inputs, feats, states, actions, mode: str):
    def step():
        f = feats if mode == "head_only" else model.features(inputs)
        loss = -model.head_dist(f, states).log_prob(actions).sum(-1).mean() \
            + model.value(f, states).square().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return step


def run(threads: int = 1, repeats: int = 200, cache_dir: str | None = None) -> dict:
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as tmp:
        config = ModelConfig(tiny_cache_dir=cache_dir or str(Path(tmp) / "tiny"))
        model = build_model(config)
        norm = Normalizer.identity()
        policy = Policy(model, norm)
        one = [_obs(rng, 0)]
        r: dict = {"threads": threads, "params": model.parameter_counts()}
        inputs1 = model.collate(one)
        s1 = torch.zeros(1, 7)
        with torch.inference_mode():
            r["forward_b1_ms"] = _median_ms(lambda: model.head_dist(model.features(inputs1), s1), repeats)
        r["act_b1_ms"] = _median_ms(lambda: policy.act(one[0], "sample"), repeats)
        r["preprocess_b1_ms"] = _median_ms(lambda: model.collate(one), repeats)
        batch8 = [_obs(rng, i) for i in range(8)]
        r["act_batch8_ms"] = _median_ms(lambda: policy.act_batch(batch8, ["sample"] * 8), max(repeats // 4, 10))

        batch = [_obs(rng, i) for i in range(32)]
        inputs = model.collate(batch)
        states = torch.randn(32, 7)
        actions = torch.randn(32, model.chunk_dim)
        for mode in ("head_only", "lora", "full"):
            model.set_mode(mode)
            with torch.no_grad():
                feats = model.features(inputs)
            opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
            r[f"train_b32_{mode}_ms"] = _median_ms(
                _train_step_fn(model, opt, inputs, feats, states, actions, mode), max(repeats // 10, 5), warmup=3)
            r[f"trainable_{mode}"] = model.trainable_parameter_count()

        reg = CheckpointRegistry(Path(tmp) / "checkpoints")
        fresh = build_model(config)
        fresh.set_mode("lora")
        publish(reg, fresh, norm, kind="full")
        t0 = time.perf_counter()
        base = Policy.load(reg)
        load_ms = (time.perf_counter() - t0) * 1e3
        r["load_full_ms"] = (load_ms, load_ms, float("nan"))
        publish(reg, fresh, norm, kind="head", parent=1)
        r["load_head_with_base_ms"] = _median_ms(lambda: Policy.load(reg, 2, base=base), 20, warmup=2)
    return r


def table(r: dict) -> str:
    p = r["params"]

    def ms(key: str) -> str:
        med, low, cpu = r[key]
        fmt = ".2f" if med < 20 else ".0f"
        return f"{med:{fmt}} / {low:{fmt}} / {cpu:{fmt}} ms"

    rows = [
        ("backbone parameters (tiny PaliGemma)", f"{p['backbone']:,}"),
        ("pooler / heads (action+value+twin Q) parameters", f"{p['pooler']:,} / {p['heads']:,}"),
        ("trainable: head_only / lora / full",
         f"{r['trainable_head_only']:,} / {r['trainable_lora']:,} / {r['trainable_full']:,}"),
        ("forward batch 1 (backbone+pooler+head)", ms("forward_b1_ms")),
        ("preprocess batch 1 (resize, pixels, cached tokens)", ms("preprocess_b1_ms")),
        ("Policy.act batch 1 (preprocess+forward+sample)", ms("act_b1_ms")),
        ("Policy.act_batch batch 8", ms("act_batch8_ms")),
        ("train step batch 32, head_only (cached features)", ms("train_b32_head_only_ms")),
        ("train step batch 32, lora (backbone fwd+bwd)", ms("train_b32_lora_ms")),
        ("train step batch 32, full", ms("train_b32_full_ms")),
        ("Policy.load full version (backbone from disk)", ms("load_full_ms")),
        ("Policy.load head-only version with base=", ms("load_head_with_base_ms")),
    ]
    lines = [f"| measure ({r['threads']} thread(s)) | wall median / wall min / CPU median |", "|---|---|"]
    return "\n".join(lines + [f"| {a} | {b} |" for a, b in rows])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=200)
    ap.add_argument("--json", type=str, default=None)
    args = ap.parse_args()
    r = run(args.threads, args.repeats)
    r["load_average"] = os.getloadavg()
    print(table(r))
    print(f"\nload average during the run: {r['load_average'][0]:.1f} on {os.cpu_count()} cores")
    if args.json:
        Path(args.json).write_text(json.dumps(r, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
