"""Reward model on the mock: labels saved vs label error as the operator-labelled set grows.

Per seed: expert demos + a short Stage 0 (as bench.learning), then a pool of sampled episodes of
that policy, stored exactly as the ingest stores robot episodes; the simulator's success predicate
is the true outcome. The first ``n`` pool episodes play the operator-labelled set (their labels are
the true outcomes); the classifier (vla.success_classifier, on the learner's cached features) is
fitted on them and applied to a fixed stream of further episodes, auto-labelling those with
max(p, 1 - p) >= the threshold. Reported per labelled-set size: the fraction of the stream
auto-labelled (operator labels saved), the error rate among those auto-labels, the overall label
error if the rest is labelled by the operator (error-free), and the ECE of the stream probabilities.

Baselines measured on the same episodes: "prior" -- a constant P(success) = the labelled set's
success rate, with the same threshold (what a model that ignores the episode could save), and
"majority" -- every stream episode auto-labelled with the labelled set's majority outcome.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.learning import LearningBenchConfig, stage0


@dataclass
class RewardBenchConfig:
    task: str = "reach_slots"
    """Mock task; the Stage 0 policy's sampled success on it gives both outcomes in the pool."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Learner seeds: each has its own demos, Stage 0, pool and stream."""
    sizes: tuple[int, ...] = (10, 20, 40, 80, 160)
    """Operator-labelled set sizes (the first n pool episodes)."""
    stream: int = 200
    """Episodes auto-labelled (or left to the operator) at every size, the same for all sizes."""
    demos: int = 40
    """Expert demos for Stage 0."""
    bootstrap_steps: int = 60
    """Stage 0 SFT steps (the demo's short Stage 0: a policy that succeeds sometimes)."""
    last_k: int = 2
    """Decision frames at the episode end pooled into the classifier input."""
    threshold: float = 0.9
    """Auto-label when max(p, 1 - p) >= threshold."""
    l2: float = 10.0
    """Ridge penalty of the classifier."""


SMOKE = dict(seeds=(0,), sizes=(10, 20), stream=12, demos=6, bootstrap_steps=8)


def collect(cfg: RewardBenchConfig, out: Path, seed: int) -> dict:
    """Stage 0, pool + stream episodes and their classifier inputs for one seed (cached on disk)."""
    import torch

    from learner.evaluate import rollout
    from learner.reward_model import episode_inputs
    from learner.trainer import Trainer
    from vla.success_classifier import SuccessClassifierConfig

    cache = out / f"inputs-s{seed}.npz"
    if cache.exists():
        data = np.load(cache)
        return {"x": data["x"], "y": data["y"]}
    torch.set_num_threads(1)
    lcfg = LearningBenchConfig(task=cfg.task, demos=cfg.demos, rl_task_demos=0, bootstrap_steps=cfg.bootstrap_steps)
    boot = stage0(lcfg, out, seed)
    trainer = Trainer(_config(lcfg, boot, seed), boot)
    trainer.resume()
    n = max(cfg.sizes) + cfg.stream
    g = torch.Generator().manual_seed(seed)
    t = time.time()
    res = rollout(trainer.policy, range(300_000 + 10_000 * seed, 300_000 + 10_000 * seed + n), cfg.task,
                  "sample", g, store=trainer.store, split="train")
    ccfg = SuccessClassifierConfig(last_k=cfg.last_k, auto_threshold=cfg.threshold, l2=cfg.l2)
    x, kept = episode_inputs(trainer.store, trainer.cache, trainer.policy, res.metas, ccfg)
    y = np.array([m["outcome"] == "success" for m in kept], np.float64)
    print(f"seed {seed}: {len(kept)} episodes, success rate {y.mean():.2f} ({time.time() - t:.0f} s)", flush=True)
    np.savez(cache, x=x, y=y)
    return {"x": x, "y": y}


def _config(lcfg: LearningBenchConfig, run_dir: Path, seed: int):
    from bench.learning import _learner_config

    return _learner_config(lcfg, run_dir, seed)


def evaluate_size(x: np.ndarray, y: np.ndarray, n: int, cfg: RewardBenchConfig) -> dict[str, dict]:
    """Fit on the first n, label the stream (the last cfg.stream) with the model and the baselines."""
    from vla.success_classifier import SuccessClassifierConfig, calibration, fit

    ccfg = SuccessClassifierConfig(last_k=cfg.last_k, auto_threshold=cfg.threshold, l2=cfg.l2)
    xs, ys = x[-cfg.stream:], y[-cfg.stream:]
    xl, yl = x[:n], y[:n]
    prior = float(yl.mean())
    if len(np.unique(yl)) == 2:
        p = fit(xl, yl, ccfg).predict_proba(xs)
    else:  # one class only: the model can say no more than the prior
        p = np.full(len(ys), prior)
    out = {}
    for name, probs, threshold in (("model", p, cfg.threshold), ("prior", np.full(len(ys), prior), cfg.threshold),
                                   ("majority", np.full(len(ys), float(prior >= 0.5)), 0.5)):
        auto = np.maximum(probs, 1 - probs) >= threshold
        wrong = (probs >= 0.5) != (ys == 1)
        out[name] = {"auto_fraction": float(auto.mean()),
                     "auto_error": float(wrong[auto].mean()) if auto.any() else float("nan"),
                     "label_error": float((wrong & auto).mean()),
                     "ece": calibration(probs, ys, ccfg.n_bins)["ece"]}
    return out


def summarize(per_seed: list[dict[int, dict]], cfg: RewardBenchConfig) -> list[dict]:
    rows = []
    for n in cfg.sizes:
        for method in ("model", "prior", "majority"):
            vals = [s[n][method] for s in per_seed]
            row = {"n": n, "method": method}
            for k in ("auto_fraction", "auto_error", "label_error", "ece"):
                v = np.array([r[k] for r in vals], float)
                row[k], row[k + "_sd"] = float(np.nanmean(v)) if np.isfinite(v).any() else float("nan"), \
                    float(np.nanstd(v)) if np.isfinite(v).any() else float("nan")
            rows.append(row)
    return rows


def format_table(rows: list[dict], cfg: RewardBenchConfig, base_rates: list[float]) -> str:
    lines = [f"mock {cfg.task}, {len(cfg.seeds)} seed(s), stream of {cfg.stream} episodes per seed, "
             f"threshold {cfg.threshold}, last_k {cfg.last_k}; true success rate of the stream "
             f"{', '.join(f'{r:.2f}' for r in base_rates)} (per seed); mean ± sd over seeds",
             "",
             "| labelled | method | auto-labelled (labels saved) | error among auto-labels | label error overall | ECE |",
             "|---:|---|---:|---:|---:|---:|"]

    def cell(r, k, pct=True):
        v, sd = r[k], r[k + "_sd"]
        if not np.isfinite(v):
            return "–"
        return f"{100 * v:.1f} ± {100 * sd:.1f} %" if pct else f"{v:.3f} ± {sd:.3f}"

    for r in rows:
        lines.append(f"| {r['n']} | {r['method']} | {cell(r, 'auto_fraction')} | {cell(r, 'auto_error')} | "
                     f"{cell(r, 'label_error')} | {cell(r, 'ece', False)} |")
    return "\n".join(lines)


def plot(rows: list[dict], cfg: RewardBenchConfig, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for method, style in (("model", "o-"), ("prior", "s--"), ("majority", "^:")):
        rs = [r for r in rows if r["method"] == method]
        ns = [r["n"] for r in rs]
        for ax, key in zip(axes, ("auto_fraction", "auto_error"), strict=True):
            ax.errorbar(ns, [r[key] for r in rs], yerr=[r[key + "_sd"] for r in rs], fmt=style, capsize=3,
                        label=method)
    axes[0].set_ylabel("fraction of episodes auto-labelled (labels saved)")
    axes[1].set_ylabel("error rate among auto-labels")
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xticks(list(cfg.sizes), [str(n) for n in cfg.sizes])
        ax.set_xlabel("operator-labelled episodes")
        ax.grid(alpha=0.3)
        ax.set_ylim(-0.02, 1.02)
    axes[0].legend()
    fig.suptitle(f"reward model on mock {cfg.task}: threshold {cfg.threshold}, "
                 f"mean ± sd over {len(cfg.seeds)} seed(s)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(cfg: RewardBenchConfig, out: Path) -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    per_seed, base_rates = [], []
    for seed in cfg.seeds:
        data = collect(cfg, out, seed)
        x, y = data["x"], data["y"]
        if len(y) < max(cfg.sizes) + cfg.stream:
            raise SystemExit(f"seed {seed}: only {len(y)} episodes with decisions, need {max(cfg.sizes) + cfg.stream}")
        base_rates.append(float(y[-cfg.stream:].mean()))
        per_seed.append({n: evaluate_size(x, y, n, cfg) for n in cfg.sizes})
    rows = summarize(per_seed, cfg)
    table = format_table(rows, cfg, base_rates)
    (out / "table.md").write_text(table + "\n")
    (out / "summary.json").write_text(json.dumps({"config": dataclasses.asdict(cfg), "rows": rows,
                                                  "stream_success_rate": base_rates}, indent=1))
    plot(rows, cfg, out / "reward_model.png")
    print("\n" + table)
    print(f"\ncurve: {out / 'reward_model.png'}; total {time.time() - t0:.0f} s")
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.reward_model", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/bench-reward-model")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: a smoke test")
    p.add_argument("--seeds", nargs="+", type=int, default=None)
    p.add_argument("--sizes", nargs="+", type=int, default=None)
    for f in dataclasses.fields(RewardBenchConfig):
        kind = {"int": int, "float": float, "str": str}.get(f.type)
        if kind is not None:
            p.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=kind, default=None)
    args = p.parse_args(argv)
    values = dict(SMOKE) if args.smoke else {}
    for f in dataclasses.fields(RewardBenchConfig):
        v = getattr(args, f.name, None)
        if v is not None:
            values[f.name] = tuple(v) if isinstance(v, list) else v
    run(RewardBenchConfig(**values), Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
