"""The embedded default reading instructions through its own BPE tokens (`bpe`, the old default)
or through the frozen pretrained all-MiniLM-L6-v2 (`minilm`): what each learns and what each costs.

    python -m bench.language_encoder --learning     # Stage 0 per encoder and seed, greedy success
    python -m bench.language_encoder --costs        # /v1/act, an RL round's features, train steps

`--learning`: bench.learning's Stage 0 (demos of the mock's `reach_slots` demo colours + a few of
its RL colour, full-mode SFT) for each encoder and seed, then greedy success on fixed seeds of the
demo tasks under the trained phrasing, under a phrasing kept out of training, and under another
task's instruction (learner.evaluate.LANGUAGE_CONDITIONS), and on the RL-only and held-out colours.
A policy that follows language keeps its success under the held-out phrasing and loses it under
the wrong instruction. The full learning table on either encoder: `python -m bench.learning
--language-encoder minilm` (its table has the same two columns).

`--costs`: both models published, served by real `vlaloop serve` subprocesses and timed through
`/v1/act` in alternating blocks; in process: a never-seen instruction's encoder pass, the features
of one RL round's decision frames (what the feature cache computes), head-only / LoRA / full train
steps of batch 32. Prints markdown tables.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ENCODERS = ("bpe", "minilm")
LEARNING_COLUMNS = (("demo", "demo tasks"), ("demo_held_out_phrasing", "held-out phrasing"),
                    ("demo_wrong_instruction", "another task's instruction"), ("rl", "RL-only colour"),
                    ("held_out", "held-out colour"))


# ---------------------------------------------------------------- learning

def learning(out: Path, seeds: list[int], demos: int, steps: int, eval_n: int) -> dict:
    from bench.learning import LearningBenchConfig, stage0

    results: dict = {}
    for encoder in ENCODERS:
        cfg = LearningBenchConfig(task="reach_slots", demos=demos, bootstrap_steps=steps, eval_n=eval_n,
                                  seeds=tuple(seeds), methods=("sft_only",), language_encoder=encoder)
        for seed in seeds:
            t0 = time.time()
            boot = stage0(cfg, out / encoder, seed)
            done = json.loads((boot / "done.json").read_text())
            results.setdefault(encoder, {})[seed] = done["eval"]
            print(f"[{encoder} s{seed}] {done['eval']} ({time.time() - t0:.0f} s)", file=sys.stderr, flush=True)
    return results


def learning_table(results: dict, demos: int, steps: int, eval_n: int) -> str:
    seeds = sorted({s for per in results.values() for s in per})
    lines = [f"Greedy success after Stage 0 ({demos} `reach_slots` demos + 4 of the RL colour, {steps} full-mode "
             f"steps), {eval_n} fixed episodes per cell, mean ± std over seeds {seeds}", "",
             "| encoder | " + " | ".join(label for _, label in LEARNING_COLUMNS)
             + " | trained − held-out phrasing | trained − wrong instruction |",
             "|---|" + "---|" * (len(LEARNING_COLUMNS) + 2)]
    for encoder, per in results.items():
        runs = list(per.values())

        def cell(values):
            return f"{np.mean(values):.2f} ± {np.std(values):.2f}"

        cells = [cell([r[key] for r in runs]) for key, _ in LEARNING_COLUMNS]
        gap = cell([r["demo"] - r["demo_held_out_phrasing"] for r in runs])
        drop = cell([r["demo"] - r["demo_wrong_instruction"] for r in runs])
        lines.append(f"| `{encoder}` | {' | '.join(cells)} | {gap} | {drop} |")
    lines += ["", "Per seed: " + "; ".join(
        f"`{e}` s{s}: " + "/".join(f"{per[s][k]:.2f}" for k, _ in LEARNING_COLUMNS)
        for e, per in results.items() for s in sorted(per))]
    return "\n".join(lines)


# ---------------------------------------------------------------- costs

def _ms(fn, repeats: int, warmup: int = 3) -> tuple[float, float]:
    """(median wall, median CPU time of this process) in ms."""
    for _ in range(warmup):
        fn()
    wall, cpu = [], []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        wall.append((time.perf_counter() - t0) * 1e3)
        cpu.append((time.process_time() - c0) * 1e3)
    return statistics.median(wall), statistics.median(cpu)


def _observations(n: int, instructions: list[str]):
    from interface.policy import Observation

    rng = np.random.default_rng(0)
    return [Observation({"front": rng.integers(0, 256, (96, 96, 3), dtype=np.uint8)},
                        rng.normal(size=7).astype(np.float32), instructions[i % len(instructions)]) for i in range(n)]


def in_process_costs(model, repeats: int) -> dict:
    import torch

    from bench.vla_model import _train_step_fn

    rl_round = _observations(128, ["reach the red block", "reach the green block", "move to the blue block",
                                   "go to the red block"])
    batch = rl_round[:32]
    r: dict = {}

    def round_features():  # one RL round's decision frames through the trunk (the feature cache's work)
        with torch.no_grad():
            for i in range(0, len(rl_round), 32):
                model.features(model.collate(rl_round[i:i + 32]))

    model.set_mode("head_only")
    r["rl_round_features_ms"] = _ms(round_features, max(repeats // 10, 3), warmup=1)
    inputs = model.collate(batch)
    states, actions = torch.randn(32, 7), torch.randn(32, model.chunk_dim)
    for mode in ("head_only", "lora", "full"):
        model.set_mode(mode)
        with torch.no_grad():
            feats = model.features(inputs)
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-5)
        r[f"train_b32_{mode}_ms"] = _ms(_train_step_fn(model, opt, inputs, feats, states, actions, mode),
                                        max(repeats // 10, 5))
    model.set_mode("head_only")
    if model.language is not None:
        fresh = iter(f"reach the block number {i}" for i in range(10 ** 6))
        r["new_instruction_ms"] = _ms(lambda: model.language.embed([next(fresh)]), repeats)
        from vla.language import LanguageEncoder

        t0 = time.perf_counter()
        LanguageEncoder(model.language.path)  # a second copy: what a new process pays once
        r["encoder_load_ms"] = ((time.perf_counter() - t0) * 1e3, float("nan"))
    return r


def act_latency(run_dirs: dict[str, str], n: int) -> dict:
    """/v1/act round trips against one real server per encoder, in alternating blocks."""
    from bench.serving import _client, interleaved, start_server, vlaloop_call

    frame = np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    servers = {e: start_server(d, threads=1, max_batch=1) for e, d in run_dirs.items()}
    try:
        clients = {e: _client(s.url) for e, s in servers.items()}
        timing: dict[str, list] = {e: [] for e in servers}

        def call(e):
            return lambda: timing[e].append(vlaloop_call(clients[e], frame)["timing"])

        a, b = interleaved(call("bpe"), call("minilm"), n)
        for c in clients.values():
            c.close()
    finally:
        for s in servers.values():
            s.stop()
    return {e: {"round_trip_p50_ms": float(np.percentile(ms, 50)), "round_trip_p99_ms": float(np.percentile(ms, 99)),
                "infer_p50_ms": float(np.median([t["infer_ms"] for t in timing[e]]))}
            for e, ms in (("bpe", a), ("minilm", b))}


def costs(repeats: int, n: int) -> dict:
    import torch

    from deployment.model import ModelConfig
    from vla.model import build_model
    from vla.normalization import Normalizer
    from vla.registry import CheckpointRegistry, publish

    torch.set_num_threads(1)
    out: dict = {"in_process": {}}
    with tempfile.TemporaryDirectory(prefix="bench-language-") as tmp:
        run_dirs = {}
        for encoder in ENCODERS:
            model = build_model(ModelConfig(language_encoder=encoder, tiny_cache_dir=f"{tmp}/tiny"))
            out["in_process"][encoder] = in_process_costs(model, repeats)
            out.setdefault("params", {})[encoder] = model.parameter_counts()
            run_dirs[encoder] = f"{tmp}/{encoder}"
            served = build_model(ModelConfig(language_encoder=encoder, tiny_cache_dir=f"{tmp}/tiny"))
            publish(CheckpointRegistry(f"{tmp}/{encoder}/checkpoints"), served, Normalizer.identity(), kind="full")
        out["act"] = act_latency(run_dirs, n)
    out["load_average"] = os.getloadavg()
    return out


def costs_table(r: dict) -> str:
    def ms(value) -> str:
        wall, cpu = value
        return f"{wall:.1f} / {cpu:.1f}" if cpu == cpu else f"{wall:.0f}"

    rows = [("`/v1/act` round trip p50 / p99 (96×96, msgpack+JPEG, real server)",
             *(f"{r['act'][e]['round_trip_p50_ms']:.1f} / {r['act'][e]['round_trip_p99_ms']:.1f}" for e in ENCODERS)),
            ("server's infer p50 inside it",
             *(f"{r['act'][e]['infer_p50_ms']:.1f}" for e in ENCODERS))]
    labels = {"rl_round_features_ms": "features of one RL round's 128 decision frames (batches of 32)",
              "train_b32_head_only_ms": "train step batch 32, head_only (cached features: the RL update)",
              "train_b32_lora_ms": "train step batch 32, lora (an SFT step)",
              "train_b32_full_ms": "train step batch 32, full (a Stage 0 step)",
              "new_instruction_ms": "a never-seen instruction through the encoder (once per instruction)",
              "encoder_load_ms": "loading the encoder (once per process)"}
    for key, label in labels.items():
        rows.append((label, *(ms(r["in_process"][e][key]) if key in r["in_process"][e] else "–" for e in ENCODERS)))
    p = r["params"]
    rows.append(("trainable parameters: pooler (+ language projection)",
                 *(f"{p[e]['pooler']:,}" for e in ENCODERS)))
    lines = ["| measure (1 torch thread; ms: wall median / CPU median) | `bpe` (old default) | `minilm` |",
             "|---|---|---|"] + [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines + ["", f"load average after the run: {r['load_average'][0]:.1f} on {os.cpu_count()} cores"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.language_encoder", description=__doc__.splitlines()[0])
    p.add_argument("--learning", action="store_true")
    p.add_argument("--costs", action="store_true")
    p.add_argument("--out", default="runs/bench-language")
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--demos", type=int, default=40)
    p.add_argument("--steps", type=int, default=60, help="Stage 0 steps (the demo's and the RL tests')")
    p.add_argument("--eval-n", type=int, default=50)
    p.add_argument("--repeats", type=int, default=50)
    p.add_argument("--n", type=int, default=200, help="/v1/act round trips per encoder")
    args = p.parse_args(argv)
    if not (args.learning or args.costs):
        p.error("choose --learning and/or --costs")
    if args.learning:
        res = learning(Path(args.out), args.seeds, args.demos, args.steps, args.eval_n)
        print(learning_table(res, args.demos, args.steps, args.eval_n))
    if args.costs:
        print(costs_table(costs(args.repeats, args.n)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
