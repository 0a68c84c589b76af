"""`python -m bench.progress_model`: the progress model on real simulator data (docs/progress_model.md).

Per task: scripted expert demos (noise 0.1, successes), a pool of noisier expert episodes (noise
``pool_noise``, successes and failures, each run to its success or its step limit) and a few
episodes sampled from the untrained tiny policy (failures that go nowhere; with ``--stage0-steps N``
from a Stage 0 of N SFT steps on the demos instead), all stored in a real EpisodeStore, with
features from that policy's backbone through the learner's FeatureCache.
The model is fitted on the demos and the first half of each pool; everything reported is measured
on the other half (held out):

* VOC per task on the held-out successes, the calibration gap and MAE against the targets, and the
  usable verdict, for the model and for controls: targets shuffled across rows (a model that learnt
  nothing real), state only, features only, time-linear targets instead of milestones;
* the stall rule on the held-out episodes, which all ran to their end: how many it would cut, how
  many of those would have succeeded, the successes lost, and the robot time it would save
  (episodes.robot_time: 10 Hz, 10 s reset per episode).

Runs in about 2 minutes on 2 CPU cores (mock); ``--backend metaworld --tasks drawer-open
button-press-topdown`` runs the same on MetaWorld.
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

SMOKE = dict(tasks=("reach",), demos=6, pool=8, policy_episodes=2)
VARIANTS = ("model", "time targets", "features only", "state only", "shuffled targets")
RULES = ((4, 0.02, 1), (8, 0.02, 1), (4, 0.02, 3), (6, 0.02, 3), (8, 0.02, 3), (12, 0.02, 3), (8, 0.05, 3))
"""(window, min_gain, smooth) of the stall rules measured; (8, 0.02, 3) is StallRule's default."""


@dataclass
class ProgressBenchConfig:
    backend: str = "mock"
    tasks: tuple[str, ...] = ("reach", "push", "pick_place")
    demos: int = 20
    """Expert demos per task (noise 0.1), all fitted on."""
    pool: int = 40
    """Noisier expert episodes per task (successes and failures); half fitted on, half held out."""
    pool_noise: float = 0.6
    policy_episodes: int = 10
    """Episodes sampled from the untrained tiny policy per task (half fitted on, half held out)."""
    seed: int = 0
    stage0_steps: int = 0
    """0: the untrained tiny model; else a Stage 0 of this many SFT steps on the demos (its sampled
    episodes then succeed sometimes, and its trunk's features are trained)."""


def collect(cfg: ProgressBenchConfig, run: Path) -> tuple[object, object, object, list[dict]]:
    """The store (recorded once; a rerun reuses it), the policy, the feature cache, the metas."""
    import torch

    from episodes.store import EpisodeStore
    from learner.evaluate import rollout
    from learner.features import FeatureCache
    from vla.policy import Policy
    from vla.registry import CheckpointRegistry

    torch.set_num_threads(1)
    if cfg.backend == "metaworld":
        from sim.metaworld.demos import record_demos
    else:
        from sim.mock.demos import record_demos
    store = EpisodeStore(run / "episodes")
    for task in cfg.tasks:
        record_demos(store, task, cfg.demos, seed=cfg.seed, noise=0.1)
        record_demos(store, task, cfg.pool, seed=cfg.seed + 100_000, noise=cfg.pool_noise, keep_failures=True,
                     robot_id="pool")
    if not (run / "checkpoints").exists():
        publish_policy(cfg, run, store)
    policy = Policy.load(CheckpointRegistry(run / "checkpoints"))
    for task in cfg.tasks:
        have = [m for m in store.list_episodes() if m["robot_id"] == "policy" and m.get("task") == task]
        missing = cfg.policy_episodes - len(have)
        if missing > 0:
            seeds = range(cfg.seed + 200_000 + len(have), cfg.seed + 200_000 + len(have) + missing)
            rollout(policy, seeds, task, "sample", torch.Generator().manual_seed(cfg.seed), store=store,
                    robot_id="policy", backend=cfg.backend)
    return store, policy, FeatureCache(run / "features"), store.list_episodes()


def publish_policy(cfg: ProgressBenchConfig, run: Path, store) -> None:
    """The untrained tiny model, or with ``stage0_steps`` a Stage 0 on the demos (the learner's bootstrap)."""
    from bench.harness import publish_tiny

    if not cfg.stage0_steps:
        publish_tiny(run, seed=cfg.seed)
        return
    from deployment.config import DeploymentConfig
    from learner.bootstrap import run_bootstrap
    from vla.registry import CheckpointRegistry

    config = DeploymentConfig.model_validate({
        "run_dir": str(run), "robot": {"backend": cfg.backend, "task": cfg.tasks[0]},
        "learner": {"bootstrap_steps": cfg.stage0_steps, "bootstrap_demos": 1, "seed": cfg.seed}})
    t = time.time()
    run_bootstrap(config, CheckpointRegistry(run / "checkpoints"), store, progress=False)
    print(f"Stage 0: {cfg.stage0_steps} SFT steps on {len(cfg.tasks) * cfg.demos} demos in {time.time() - t:.0f} s",
          flush=True)


def split(metas: list[dict], tasks: tuple[str, ...]) -> tuple[list[dict], list[dict]]:
    """(fit, held out): all demos; the first half of each task's pool and policy episodes, by seed."""
    fit_part, held = [], []
    for m in metas:
        if m.get("task") not in tasks:
            continue
        if m["robot_id"] == "expert":
            fit_part.append(m)
            continue
        group = sorted((g for g in metas if g["robot_id"] == m["robot_id"] and g.get("task") == m.get("task")),
                       key=lambda g: (g.get("seed") or (g.get("extra") or {}).get("seed") or 0, g["episode_id"]))
        (fit_part if group.index(m) < len(group) // 2 else held).append(m)
    return fit_part, held


def variant_config(name: str):
    from learner.progress.targets import TargetConfig
    from vla.progress_model import ProgressModelConfig

    if name == "time targets":
        return ProgressModelConfig(), TargetConfig(milestones=False)
    if name == "features only":
        return ProgressModelConfig(use_state=False), TargetConfig()
    return ProgressModelConfig(), TargetConfig()


def rows_for(store, cache, policy, metas: list[dict], targets_cfg) -> list:
    from learner.progress.trainer import episode_rows

    return [r for r in (episode_rows(store, cache, policy, m, targets_cfg) for m in metas) if r is not None]


def evaluate_variant(name: str, fit_rows_: list, held_rows: list, seed: int) -> tuple[dict, list]:
    """Quality report of one variant and its held-out predictions [(rows, predicted)]."""
    from learner.progress.quality import HeldOutEpisode, quality_report
    from learner.progress.trainer import fit_rows, predict_rows

    model_cfg, _ = variant_config(name)
    train = fit_rows_
    if name == "state only":  # the features zeroed: what the robot state alone tells
        train = [dataclasses.replace(r, features=np.zeros_like(r.features)) for r in fit_rows_]
        held_rows = [dataclasses.replace(r, features=np.zeros_like(r.features)) for r in held_rows]
    if name == "shuffled targets":
        y = np.random.default_rng(seed).permutation(np.concatenate([r.targets for r in train]))
        cuts = np.cumsum([len(r.targets) for r in train])[:-1]
        train = [dataclasses.replace(r, targets=t) for r, t in zip(train, np.split(y, cuts), strict=True)]
    model = fit_rows(train, model_cfg, "bench")
    predicted = [(r, predict_rows(model, r)) for r in held_rows]
    report = quality_report([HeldOutEpisode(r.task, r.success, p, r.targets, int(r.meta.get("n_steps") or 0))
                             for r, p in predicted])
    return report, predicted


def stall_rows(predicted: list, tasks: tuple[str, ...]) -> list[dict]:
    from episodes.robot_time import RobotTimeConfig, episode_seconds
    from vla.progress_stop import StallRule, cut_measurement

    time_cfg = RobotTimeConfig()  # 10 Hz, 10 s reset: robot-hours on the arm (the pool episodes count too)
    full = sum(s["control_s"] + s["reset_s"] for s in (episode_seconds(r.meta, time_cfg) for r, _ in predicted))
    out = []
    for window, gain, smooth in RULES:
        rule = StallRule(window=window, min_gain=gain, smooth=smooth)
        m = cut_measurement([(p, r.success, int(r.meta.get("n_steps") or 0)) for r, p in predicted], rule)
        saved_steps = m["steps_saved_fraction"] * sum(int(r.meta.get("n_steps") or 0) for r, _ in predicted)
        out.append({**m, "robot_s_full": full, "robot_s_saved": saved_steps * time_cfg.period_s})
    return out


def format_tables(cfg: ProgressBenchConfig, reports: dict[str, dict], stalls: list[dict], counts: dict) -> str:
    tasks = cfg.tasks
    policy = f"Stage 0 ({cfg.stage0_steps} steps)" if cfg.stage0_steps else "untrained-policy"
    lines = [f"{cfg.backend}, tiny backbone features; per task {cfg.demos} demos + {cfg.pool} pool episodes "
             f"(noise {cfg.pool_noise}) + {cfg.policy_episodes} {policy} episodes; fitted on the demos "
             f"and half of each pool, measured on the other half ({counts['held']} episodes, "
             f"{counts['held_success']} successes)", "",
             "| variant | " + " | ".join(f"VOC {t}" for t in tasks) + " | VOC all | R² | calibration gap | MAE | usable |",
             "|---|" + "---:|" * (len(tasks) + 4) + "---|"]
    for name, rep in reports.items():
        per = rep["voc_per_task"]
        cells = [f"{per[t]['voc']:.2f} ({per[t]['episodes']})" if t in per else "–" for t in tasks]
        voc = f"{rep['voc']:.2f}" if rep["voc"] is not None else "–"
        cal = rep["calibration"]
        r2 = f"{rep['r2']:.2f}" if rep["r2"] is not None else "–"
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {voc} | {r2} | {cal['gap']:.3f} | {cal['mae']:.3f} | "
                     f"{'yes' if rep['usable'] else 'no: ' + rep['reason']} |")
    lines += ["", "VOC cells: mean over the held-out successes (their count). Stall rule on the held-out episodes of "
              "the model (all ran to their end):", "",
              "| window (decisions) | min gain | median of | cut | cut that would have succeeded | successes lost | "
              "steps saved | robot s saved / total |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for s in stalls:
        false_cut = f"{100 * s['false_cut_fraction']:.0f} %" if s["false_cut_fraction"] is not None else "–"
        lost = f"{100 * s['successes_lost_fraction']:.0f} %" if s["successes_lost_fraction"] is not None else "–"
        lines.append(f"| {s['window']} | {s['min_gain']} | {s['smooth']} | {s['cut']}/{s['episodes']} | "
                     f"{s['cut_would_succeed']} "
                     f"({false_cut}) | {lost} | {100 * s['steps_saved_fraction']:.0f} % | "
                     f"{s['robot_s_saved']:.0f} / {s['robot_s_full']:.0f} |")
    return "\n".join(lines)


def run(cfg: ProgressBenchConfig, out: Path) -> dict:
    t0 = time.time()
    out.mkdir(parents=True, exist_ok=True)
    store, policy, cache, metas = collect(cfg, out / (f"run-stage0-{cfg.stage0_steps}" if cfg.stage0_steps else "run"))
    t_collect = time.time() - t0
    fit_metas, held_metas = split(metas, cfg.tasks)
    reports, predicted_model = {}, None
    rows_cache: dict[bool, tuple[list, list]] = {}
    for name in VARIANTS:
        _, targets_cfg = variant_config(name)
        if targets_cfg.milestones not in rows_cache:
            rows_cache[targets_cfg.milestones] = (rows_for(store, cache, policy, fit_metas, targets_cfg),
                                                  rows_for(store, cache, policy, held_metas, targets_cfg))
        fit_r, held_r = rows_cache[targets_cfg.milestones]
        reports[name], predicted = evaluate_variant(name, fit_r, held_r, cfg.seed)
        if name == "model":
            predicted_model = predicted
    stalls = stall_rows(predicted_model, cfg.tasks)
    counts = {"fit": len(fit_metas), "held": len(held_metas),
              "held_success": sum(m.get("outcome") == "success" for m in held_metas)}
    table = format_tables(cfg, reports, stalls, counts)
    summary = {"config": dataclasses.asdict(cfg), "counts": counts, "variants": reports, "stall": stalls,
               "collect_s": t_collect, "total_s": time.time() - t0}
    (out / "summary.json").write_text(json.dumps(summary, indent=1))
    (out / "table.md").write_text(table + "\n")
    print(table)
    print(f"\ndata {t_collect:.0f} s, total {time.time() - t0:.0f} s; {out / 'table.md'}, {out / 'summary.json'}")
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.progress_model", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/bench-progress-model")
    p.add_argument("--smoke", action="store_true", help="tiny sizes: a smoke test")
    p.add_argument("--backend", choices=("mock", "metaworld"), default=None)
    p.add_argument("--tasks", nargs="+", default=None)
    for name in ("demos", "pool", "policy_episodes", "seed", "stage0_steps"):
        p.add_argument("--" + name.replace("_", "-"), dest=name, type=int, default=None)
    p.add_argument("--pool-noise", dest="pool_noise", type=float, default=None)
    args = p.parse_args(argv)
    values = dict(SMOKE) if args.smoke else {}
    for f in dataclasses.fields(ProgressBenchConfig):
        v = getattr(args, f.name, None)
        if v is not None:
            values[f.name] = tuple(v) if isinstance(v, list) else v
    if args.backend == "metaworld" and args.tasks is None:
        values.setdefault("tasks", ("drawer-open", "button-press-topdown"))
    run(ProgressBenchConfig(**values), Path(args.out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
