"""`python -m bench.demo_tuning`: the learning of `vlaloop demo` in ONE process, no servers.

Records the scripted demos, runs Stage 0 (`Trainer.bootstrap`), evaluates greedy success on seeded
episodes (`learner.evaluate.success_rate`), then iterations of: RL rounds (sampled episodes collected
in-process and stored exactly as the ingest stores them), the deployment's recipe
(learner/recipes/) run in-process on them, evaluating after every phase. Prints one row per phase
(greedy success, wall time, PPO approx_kl / clipfrac / entropy) -- the record behind the demo's
defaults in docs/demo.md.

    python -m bench.demo_tuning --task reach_slots --seed 0
    python -m bench.demo_tuning --boot-cache runs/bench-boot --ppo-lr 1e-4   # reuse a Stage 0
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import time
from pathlib import Path

import torch

from deployment.config import load_config
from deployment.learner import set_setting
from episodes.store import EpisodeStore
from learner.evaluate import collect_episodes, success_rate
from learner.recipes.inprocess import InProcessRun
from learner.recipes.registry import recipe_for
from learner.trainer import Trainer
from sim.mock.demos import record_demos


def _config(args, run_dir: Path):
    cfg = load_config(None, environ={}, run_dir=str(run_dir))
    lc = cfg.learner
    cfg.robot.task = args.task
    for name in ("bootstrap_demos", "bootstrap_steps", "ppo_lr", "ppo_epochs", "ppo_minibatch_size",
                 "critic_warmup_rounds", "sft_steps", "sft_lr", "episodes_per_round", "rl_rounds_per_phase",
                 "ppo_target_kl", "algorithm", "sac_updates_per_episode", "sac_bc_coef", "sac_actor_lr",
                 "sac_init_alpha"):
        value = getattr(args, name)
        if value is not None:
            set_setting(lc, name, value)
    lc.seed = args.seed
    return cfg


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.demo_tuning", description=__doc__.splitlines()[0])
    p.add_argument("--task", default="reach_slots")
    p.add_argument("--run-dir", default="runs/bench-demo")
    p.add_argument("--boot-cache", default=None, help="dir holding a finished Stage 0 to copy (made if missing)")
    p.add_argument("--seed", type=int, default=0, help="learner seed (Stage 0 init/batches, PPO, sampling)")
    p.add_argument("--iterations", type=int, default=2)
    p.add_argument("--eval-n", type=int, default=50)
    p.add_argument("--threads", type=int, default=1)
    for name, typ in (("bootstrap_demos", int), ("bootstrap_steps", int), ("ppo_lr", float), ("ppo_epochs", int),
                      ("ppo_minibatch_size", int), ("critic_warmup_rounds", int), ("sft_steps", int),
                      ("sft_lr", float), ("episodes_per_round", int), ("rl_rounds_per_phase", int),
                      ("ppo_target_kl", float), ("algorithm", str), ("sac_updates_per_episode", int),
                      ("sac_bc_coef", float), ("sac_actor_lr", float), ("sac_init_alpha", float)):
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=typ, default=None)
    p.add_argument("--no-sft", action="store_true")
    p.add_argument("--no-rl", action="store_true", help="control: SFT phases only (no online episodes)")
    p.add_argument("--sac-raw-q", action="store_true",
                   help="SAC as before the fixes: Q on unclamped actions, unclipped Bellman targets")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    run_dir = Path(args.run_dir)
    shutil.rmtree(run_dir, ignore_errors=True)
    cfg = _config(args, run_dir)
    lc = cfg.learner
    rows = []
    t0 = time.time()
    boot = Path(args.boot_cache) if args.boot_cache else None
    if boot is not None and (boot / "checkpoints").exists():
        shutil.copytree(boot, run_dir)
        trainer = Trainer(cfg, run_dir)
        trainer.resume()
        boot_s = json.loads((boot / "boot_seconds.json").read_text())["seconds"]
    else:
        store = EpisodeStore(run_dir / "episodes")
        record_demos(store, task=args.task, n=lc.bootstrap.demos, seed=0, image_size=cfg.model.image_size,
                     cameras=tuple(cfg.model.cameras))
        trainer = Trainer(cfg, run_dir)
        trainer.bootstrap(progress=False)
        boot_s = time.time() - t0
        if boot is not None:
            (run_dir / "boot_seconds.json").write_text(json.dumps({"seconds": boot_s}))
            shutil.copytree(run_dir, boot, dirs_exist_ok=True)
    if args.sac_raw_q:
        trainer.rl_config("sac").q_action_bound, trainer.rl_config("sac").q_target_bounds = None, None
    te = time.time()
    rate = success_rate(trainer.policy, n=args.eval_n, task=args.task)
    rows.append({"phase": "bootstrap", "version": trainer.version, "greedy": rate, "seconds": boot_s,
                 "eval_s": time.time() - te})
    print(json.dumps(rows[-1]), flush=True)
    g = torch.Generator().manual_seed(args.seed)
    seeds = [100_000 + 10_000 * args.seed]
    timer = {"t": time.time()}

    def collect(phase, it: int) -> list[dict]:
        res = collect_episodes(trainer.policy, trainer.store, phase.episodes, task=args.task, seed=seeds[0],
                               generator=g)
        seeds[0] += phase.episodes
        timer.update(t=time.time(), sampled=res.success_rate)
        return res.metas

    def evaluated(phase, entry: dict, m: dict, following) -> None:
        te, it = time.time(), entry["iteration"]
        rate = success_rate(trainer.policy, n=args.eval_n, task=args.task)
        if phase.episodes:
            row = {"phase": f"it{it} rl{phase.round}", "sampled": timer["sampled"],
                   **{k: m.get(k) for k in ("approx_kl", "clipfrac", "entropy", "explained_variance", "q_mean",
                                            "critic_warmup")}}
        else:
            row = {"phase": f"it{it} sft", "n_online_successes": m.get("n_online_successes")}
        rows.append({**row, "version": trainer.version, "greedy": rate, "seconds": entry["seconds"],
                     "eval_s": time.time() - te})
        print(json.dumps(rows[-1]), flush=True)

    recipe = recipe_for(lc, "sft_only") if args.no_rl else recipe_for(lc)
    if args.no_sft:
        recipe = dataclasses.replace(recipe, sft=False)  # iRe-VLA's RL rounds alone
    run = InProcessRun(trainer, recipe, collect=collect, on_published=evaluated)
    for it in range(args.iterations):
        run.iteration(it)
    print(f"\n{'phase':<12} {'greedy':>6} {'sampled':>7} {'kl':>7} {'clipfrac':>8} {'entropy':>8} {'Q mean':>9} "
          f"{'train s':>7}")
    for r in rows:
        def f(k, fmt, r=r):
            return format(r[k], fmt) if isinstance(r.get(k), (int, float)) else "-"
        print(f"{r['phase']:<12} {f('greedy', '6.2f')} {f('sampled', '7.2f')} {f('approx_kl', '7.3f')} "
              f"{f('clipfrac', '8.2f')} {f('entropy', '8.1f')} {f('q_mean', '9.3g')} {f('seconds', '7.0f')}")
    print(f"total {time.time() - t0:.0f} s")
    (run_dir / "tuning.json").write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
