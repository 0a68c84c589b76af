"""`vlaloop bench learning` / `python -m bench.learning`: the seed papers' claims, measured on the mock.

Claims (iRe-VLA, VLA-RL): (a) alternating head-only RL with LoRA SFT improves a VLA beyond its SFT
starting point, on the trained tasks and on unseen ones; (b) RL on the whole VLA is unstable and can
lose performance; (c) frozen-backbone RL is cheap enough for one machine.

Every method starts from the same Stage 0 model (per seed) and gets the same budget:
`iterations x rounds x episodes` online episodes (or, for `sft_extra_demos`, that many extra expert
demos), with an SFT phase after each iteration where the method has one.

    sft_only          SFT phases on the demos alone (no new data: "just train longer")
    sft_extra_demos   SFT phases on the demos + as many extra expert demos as the others get episodes
    irevla_ppo        iRe-VLA: head-only PPO rounds, then LoRA SFT on demos + online successes
    irevla_sac        iRe-VLA with SAC from demonstrations as the RL phase
    ppo_whole         PPO on the whole model (backbone unfrozen, learner/rl/ppo_whole.py), no SFT
    rl_only           head-only PPO rounds only, no SFT consolidation
    recap             RECAP (pi*0.6, docs/recap.md): collect rounds x episodes sampled with the
                      positive indicator, then value function -> labels -> conditioned SFT (recap_job)

Task split (mock `reach_slots`, sim/mock/tasks.py): `demo` colours (red, green)
have `demos` expert demos; the `rl` colour (blue) has only `rl_task_demos` (default 4; 0 = none) and
is otherwise met only in online episodes (online episodes sample demo + rl colours: split `train`);
the `held_out` colour (yellow) is never trained on. Greedy
success is evaluated on each split after every round/phase on fixed seeds.

Runs are independent jobs (method x seed) in `--jobs` worker processes (1 torch thread each); each
finished job is saved to OUT/results/METHOD-sSEED.json, so an interrupted run resumes where it
stopped. Output: a table (markdown, also OUT/table.md), OUT/learning_curves.png, OUT/summary.json.

    python -m bench.learning                      # the full table: 6 methods x 3 seeds (~45 min, 2 cores)
    python -m bench.learning --smoke              # seconds-sized version (the test suite runs it)
    python -m bench.learning --metaworld          # on MetaWorld, one core (docs/metaworld.md)
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

import numpy as np

METHODS = {
    "sft_only": "SFT on the demos only",
    "sft_extra_demos": "SFT + extra expert demos",
    "irevla_ppo": "iRe-VLA (PPO head + SFT)",
    "irevla_sac": "iRe-VLA (SAC head + SFT)",
    "ppo_whole": "PPO whole model, no SFT",
    "rl_only": "PPO head only, no SFT",
    "recap": "RECAP (value fn + advantage-conditioned SFT)",
}
RL_METHODS = {"irevla_ppo", "irevla_sac", "ppo_whole", "rl_only"}
SFT_METHODS = {"sft_only", "sft_extra_demos", "irevla_ppo", "irevla_sac"}
SPLITS = ("demo", "rl", "held_out")  # evaluation splits, in table order
# The iRe-VLA paper's MetaWorld results (its pretrained VLA, its own task split), as ranges over
# its tasks: SFT start -> after iRe-VLA. Not measured here; shown next to our rows.
PAPER_METAWORLD = {"method": "iRe-VLA paper, MetaWorld (their VLA; SFT → iRe-VLA)", "demo": "not quoted",
                   "rl": "0.28–0.56 → **0.80–1.00**", "held_out": "0.51 → **0.80**"}
EVAL_SEED = 10_000


@dataclass
class LearningBenchConfig:
    # "mock" (the task below) or "metaworld" (task "bench": the demo / rl / held_out task sets of
    # sim/metaworld/tasks.py; the paper's protocol on the paper's benchmark, docs/metaworld.md)
    backend: str = "mock"
    task: str = "reach_slots"
    workers: int = 0  # metaworld: env worker processes per rollout (0: in the job's own process)
    max_steps: int = 0  # caps every task's step limit (0: the tasks' own limits); smoke tests only
    seeds: tuple[int, ...] = (0, 1, 2)
    methods: tuple[str, ...] = tuple(METHODS)
    demos: int = 40  # expert demos (split "demo") for Stage 0 and every SFT phase
    # demos of the RL-only tasks (split "rl"): 0 = none at all. The tiny model has no pretrained
    # language, so with none its success on an unseen colour word is exactly 0 and sparse-reward RL
    # has nothing to learn from (measured); a few demos stand in for a VLM's weak zero-shot start.
    rl_task_demos: int = 4
    bootstrap_steps: int = 60  # the demo's short Stage 0 (docs/demo.md)
    iterations: int = 2  # RL phase + SFT phase, repeated
    rounds: int = 4  # RL rounds per phase (the first round of a run is the PPO critic warm-up)
    episodes_per_round: int = 128
    sft_steps: int = 200
    ppo_lr: float = 1e-4
    sac_updates_per_episode: int = 10
    eval_n: int = 100  # greedy episodes per split per evaluation
    # when to evaluate: "round" (after every RL round and SFT phase), "phase" (at the end of each
    # RL phase and after each SFT phase) or "iteration" (once per iteration, after its last phase);
    # on MetaWorld one evaluation costs about as much as two RL rounds
    evaluate_at: str = "round"
    jobs: int = 2

    @property
    def budget(self) -> int:
        return self.iterations * self.rounds * self.episodes_per_round


# the metaworld version of the table, sized for one CPU core in about an hour (docs/metaworld.md):
# MetaWorld episodes are 3-8x longer than the mock's, so far fewer of them; 20 demos for each of the
# 5 demo tasks and 600 Stage 0 steps (at 200 steps most tasks stay at 0 from pixels); ~15 demos per
# RL task (sim/metaworld/tasks.py, set "bench"): with ~3 or ~8 they start at exactly 0 (measured)
METAWORLD = dict(backend="metaworld", task="bench", demos=100, rl_task_demos=45, bootstrap_steps=600,
                 iterations=1, rounds=3, episodes_per_round=12, eval_n=12, sft_steps=150,
                 evaluate_at="iteration", jobs=1)
# on MetaWorld the smoke test also caps episodes and runs two methods: full-length episodes of an
# untrained policy cost minutes on two cores
METAWORLD_SMOKE = dict(methods=("sft_only", "irevla_ppo"), demos=2, rl_task_demos=1, eval_n=2,
                       episodes_per_round=2, max_steps=16)
SMOKE = dict(seeds=(0,), demos=6, rl_task_demos=2, bootstrap_steps=8, iterations=1, rounds=2, episodes_per_round=6, sft_steps=4,
             eval_n=6, sac_updates_per_episode=2, jobs=1)


# ---------------------------------------------------------------------------------------------- jobs
def _learner_config(cfg: LearningBenchConfig, run_dir: Path, seed: int):
    from deployment.config import load_config

    config = load_config(None, environ={}, run_dir=str(run_dir))
    lc = config.learner
    config.robot.task = cfg.task
    config.robot.backend = cfg.backend
    lc.seed, lc.bootstrap_demos, lc.bootstrap_steps = seed, cfg.demos + cfg.rl_task_demos, cfg.bootstrap_steps
    lc.sft_steps, lc.ppo_lr, lc.sac_updates_per_episode = cfg.sft_steps, cfg.ppo_lr, cfg.sac_updates_per_episode
    lc.episodes_per_round = cfg.episodes_per_round
    return config


def stage0(cfg: LearningBenchConfig, out: Path, seed: int) -> Path:
    """Demos on the `demo` split + Stage 0 for one seed (skipped if already done)."""
    import torch

    from episodes.store import EpisodeStore
    from learner.trainer import Trainer

    record_demos = _demo_recorder(cfg)
    boot = out / "stage0" / f"s{seed}"
    if (boot / "done.json").exists():
        return boot
    shutil.rmtree(boot, ignore_errors=True)
    torch.set_num_threads(1)
    config = _learner_config(cfg, boot, seed)
    t = time.time()
    store = EpisodeStore(boot / "episodes")
    record_demos(store, task=cfg.task, n=cfg.demos, seed=1000 * seed, split="demo",
                 image_size=config.model.image_size, cameras=tuple(config.model.cameras))
    if cfg.rl_task_demos:  # other seeds than the demo split's, so the episode ids differ
        record_demos(store, task=cfg.task, n=cfg.rl_task_demos, seed=1000 * seed + 700, split="rl",
                     image_size=config.model.image_size, cameras=tuple(config.model.cameras))
    trainer = Trainer(config, boot)
    trainer.bootstrap(progress=False)
    seconds = time.time() - t
    # Stage 0's greedy success is the same for every method of this seed (same model, same
    # evaluation seeds): measured once here instead of once per job
    stage0_eval = _evaluate(trainer.policy, cfg)
    (boot / "done.json").write_text(json.dumps({"seconds": seconds, "eval": stage0_eval,
                                                "eval_s": time.time() - t - seconds}))
    return boot


def _demo_recorder(cfg: LearningBenchConfig):
    if cfg.backend == "metaworld":
        from sim.metaworld.demos import record_demos
    else:
        from sim.mock.demos import record_demos
    return record_demos


def _evaluate(policy, cfg: LearningBenchConfig) -> dict[str, float]:
    from learner.evaluate import success_rate

    return {split: success_rate(policy, n=cfg.eval_n, task=cfg.task, seed=EVAL_SEED, split=split,
                                backend=cfg.backend, workers=cfg.workers, max_steps=cfg.max_steps)
            for split in SPLITS}


def run_job(cfg: LearningBenchConfig, out: Path, method: str, seed: int) -> dict:
    """One method from the seed's Stage 0; returns the curve, timings and update counts."""
    import torch

    from learner.dataset import load_decisions
    from learner.episode_rules import is_rl_episode
    from learner.evaluate import rollout
    from learner.rl.ppo_whole import whole_model_ppo_round
    from learner.trainer import Trainer

    if method == "recap":
        return recap_job(cfg, out, seed)
    record_demos = _demo_recorder(cfg)
    torch.set_num_threads(1)
    run_dir = out / "runs" / f"{method}-s{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)
    shutil.copytree(out / "stage0" / f"s{seed}", run_dir)
    config = _learner_config(cfg, run_dir, seed)
    if method == "irevla_sac":
        config.learner.algorithm = "sac"
    trainer = Trainer(config, run_dir)
    trainer.resume()
    t_job = time.time()
    rl_s, sft_s, n_updates, episodes = 0.0, 0.0, 0, 0
    stage0_eval = json.loads((out / "stage0" / f"s{seed}" / "done.json").read_text()).get("eval")
    curve = [{"episodes": 0, "phase": "stage0", "version": trainer.version,
              **(stage0_eval or _evaluate(trainer.policy, cfg))}]
    rounds_log = []
    g = torch.Generator().manual_seed(seed)
    whole_opt = None
    episode_seed = 200_000 + 100_000 * seed
    print(f"[{method} s{seed}] start: {curve[0]}", flush=True)
    for it in range(cfg.iterations):
        for r in range(cfg.rounds if method in RL_METHODS else 0):
            res = rollout(trainer.policy, range(episode_seed, episode_seed + cfg.episodes_per_round), cfg.task,
                          "sample", g, store=trainer.store, split="train", backend=cfg.backend,
                          workers=cfg.workers, max_steps=cfg.max_steps)
            episode_seed += cfg.episodes_per_round
            t = time.time()
            if method == "ppo_whole":
                metas = [m for m in res.metas if is_rl_episode(m)]
                decisions = [load_decisions(trainer.store, m, trainer.model.config.chunk) for m in metas]
                if whole_opt is None:
                    whole_opt = torch.optim.Adam(list(trainer.model.parameters()), lr=cfg.ppo_lr, eps=1e-5)
                warmup = trainer.rl_rounds_total < config.learner.critic_warmup_rounds
                m = whole_model_ppo_round(trainer.model, trainer.norm, decisions, whole_opt, trainer.rl_config,
                                          warmup, g)
                trainer.rl_rounds_total += 1
                trainer.publish("full", "rl", m)
            else:
                m = trainer.rl_round(res.metas)
                trainer.publish("head", "rl", m)
            rl_s += time.time() - t
            n_updates += int(m.get("n_updates", 0))
            episodes += cfg.episodes_per_round
            rounds_log.append({k: m.get(k) for k in ("approx_kl", "clipfrac", "logprob_mismatch", "critic_warmup",
                                                     "q_mean", "alpha") if k in m} | {"sampled": res.success_rate})
            last = r == cfg.rounds - 1
            if cfg.evaluate_at == "round" or (last and (cfg.evaluate_at == "phase" or method not in SFT_METHODS)):
                curve.append({"episodes": episodes, "phase": f"it{it} rl{r}", "version": trainer.version,
                              "sampled": res.success_rate, **_evaluate(trainer.policy, cfg)})
                print(f"[{method} s{seed}] {curve[-1]}", flush=True)
        if method not in SFT_METHODS:
            continue
        if method in ("sft_only", "sft_extra_demos"):
            episodes += cfg.rounds * cfg.episodes_per_round  # the budget the other methods spent
        if method == "sft_extra_demos":  # the same count of expert demos, on the tasks RL trains on
            record_demos(trainer.store, task=cfg.task, n=cfg.rounds * cfg.episodes_per_round,
                         seed=500_000 + 100_000 * seed + it * 10_000, split="train",
                         image_size=config.model.image_size, cameras=tuple(config.model.cameras))
        t = time.time()
        m = trainer.sft_phase(progress=False)
        trainer.publish("full", "sft", m)
        sft_s += time.time() - t
        n_updates += cfg.sft_steps
        curve.append({"episodes": episodes, "phase": f"it{it} sft", "version": trainer.version,
                      "n_online_successes": m.get("n_online_successes"), "n_expert": m.get("n_expert"),
                      **_evaluate(trainer.policy, cfg)})
        print(f"[{method} s{seed}] {curve[-1]}", flush=True)
    train_s = rl_s + sft_s  # training only: collection and evaluation excluded
    n_rounds, n_sft = len(rounds_log), sum(1 for p in curve if p["phase"].endswith("sft"))
    result = {"method": method, "seed": seed, "curve": curve, "rounds": rounds_log, "train_s": train_s,
              "rl_s_per_round": rl_s / n_rounds if n_rounds else None,
              "sft_s_per_phase": sft_s / n_sft if n_sft else None,
              "wall_s": time.time() - t_job, "n_updates": n_updates,
              "updates_per_s": n_updates / train_s if train_s > 0 else 0.0, "config": dataclasses.asdict(cfg),
              "learner": config.learner.model_dump()}
    shutil.rmtree(run_dir / "features", ignore_errors=True)  # caches are the bulk of a run dir
    return result


def recap_job(cfg: LearningBenchConfig, out: Path, seed: int) -> dict:
    """RECAP from the seed's Stage 0, with the budget of the others: per iteration `rounds x
    episodes_per_round` sampled episodes (the policy asked for "positive"), then one RECAP phase
    (value function on every stored episode, labels, `sft_steps` of conditioned SFT) and a publish."""
    import torch

    from learner.evaluate import rollout
    from learner.trainer import Trainer

    torch.set_num_threads(1)
    run_dir = out / "runs" / f"recap-s{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)
    shutil.copytree(out / "stage0" / f"s{seed}", run_dir)
    config = _learner_config(cfg, run_dir, seed)
    config.learner.algorithm = "recap"
    trainer = Trainer(config, run_dir)
    trainer.resume()
    t_job, sft_s, episodes, rounds_log = time.time(), 0.0, 0, []
    stage0_eval = json.loads((out / "stage0" / f"s{seed}" / "done.json").read_text()).get("eval")
    curve = [{"episodes": 0, "phase": "stage0", "version": trainer.version, **(stage0_eval or _evaluate(trainer.policy, cfg))}]
    g, episode_seed = torch.Generator().manual_seed(seed), 200_000 + 100_000 * seed
    for it in range(cfg.iterations):
        n = cfg.rounds * cfg.episodes_per_round
        res = rollout(trainer.policy, range(episode_seed, episode_seed + n), cfg.task, "sample", g, store=trainer.store,
                      split="train", backend=cfg.backend, workers=cfg.workers, max_steps=cfg.max_steps)
        episode_seed, episodes = episode_seed + n, episodes + n
        t = time.time()
        m = trainer.recap_phase(it, progress=False)
        trainer.publish("full", "recap", m)
        sft_s += time.time() - t
        rounds_log.append({k: v for k, v in m.items() if k.startswith(("value_", "labels_", "sft_", "n_tasks"))}
                          | {"sampled": res.success_rate})
        curve.append({"episodes": episodes, "phase": f"it{it} sft", "version": trainer.version,
                      "sampled": res.success_rate, **_evaluate(trainer.policy, cfg)})
        print(f"[recap s{seed}] {curve[-1]}", flush=True)
    shutil.rmtree(run_dir / "features", ignore_errors=True)
    return {"method": "recap", "seed": seed, "curve": curve, "rounds": [], "recap": rounds_log, "train_s": sft_s,
            "rl_s_per_round": None, "sft_s_per_phase": sft_s / cfg.iterations, "wall_s": time.time() - t_job,
            "n_updates": cfg.iterations * cfg.sft_steps, "updates_per_s": cfg.iterations * cfg.sft_steps / sft_s,
            "config": dataclasses.asdict(cfg), "learner": config.learner.model_dump()}


def _job(args) -> dict:
    cfg, out, method, seed = args
    from episodes.durable import write_json_atomic

    result = run_job(cfg, out, method, seed)
    write_json_atomic(out / "results" / f"{method}-s{seed}.json", result)
    return result


# ---------------------------------------------------------------------------------------------- report
def online_episode_stats(run_dir: Path, task: str, backend: str = "mock") -> dict | None:
    """A run's sampled online episodes, read back from its episode store: episodes and successes per
    split (mock: by the colour word of the instruction; metaworld: by the episode's task) and mean
    steps per episode. None: no episodes."""
    from episodes.store import EpisodeStore
    from sim.mock.tasks import FAMILIES, LAYOUT_TASKS, split_colors

    metas = EpisodeStore(run_dir / "episodes").list_episodes(source="online") if run_dir.exists() else []
    if not metas:
        return None
    if backend == "metaworld":
        from sim.metaworld.tasks import TASK_SETS

        if task not in TASK_SETS:
            return None
        split_of = {t: s for s in SPLITS for t in TASK_SETS[task][s]}
        word_of = {m["episode_id"]: m["task"] for m in metas}
    else:
        family = LAYOUT_TASKS.get(task, task)
        if family not in FAMILIES:
            return None
        split_of = {c: s for s in SPLITS for c in split_colors(family, s)}
        word_of = {m["episode_id"]: next(w for w in m["instruction"].split() if w in split_of) for m in metas}
    stats = {s: {"episodes": 0, "successes": 0} for s in SPLITS}
    for m in metas:
        split = split_of[word_of[m["episode_id"]]]
        stats[split]["episodes"] += 1
        stats[split]["successes"] += m["outcome"] == "success"
    stats["mean_steps"] = float(np.mean([m["n_steps"] for m in metas]))
    return stats


def summarize(results: list[dict], cfg: LearningBenchConfig, out_dir: Path | None = None) -> dict:
    """Per method: final greedy success per split (mean, std, min, max over seeds), Stage 0, the
    lowest point of the curve, wall/train time and updates per second; with `out_dir`, also the
    online episodes the runs collected (mean per run)."""
    out = {}
    for method in cfg.methods:
        rs = [r for r in results if r["method"] == method]
        if not rs:
            continue
        row = {"n_seeds": len(rs)}
        for split in SPLITS:
            final = np.array([r["curve"][-1][split] for r in rs])
            start = np.array([r["curve"][0][split] for r in rs])
            lowest = np.array([min(p[split] for p in r["curve"]) for r in rs])
            row[split] = {"start": float(start.mean()), "final": float(final.mean()), "final_std": float(final.std()),
                          "final_min": float(final.min()), "final_max": float(final.max()),
                          "lowest": float(lowest.mean())}
        row["train_s"] = float(np.mean([r["train_s"] for r in rs]))
        row["wall_s"] = float(np.mean([r["wall_s"] for r in rs]))
        row["updates_per_s"] = float(np.mean([r["updates_per_s"] for r in rs]))
        row["n_updates"] = float(np.mean([r["n_updates"] for r in rs]))
        for k in ("rl_s_per_round", "sft_s_per_phase"):
            vals = [r[k] for r in rs if r.get(k) is not None]
            row[k] = float(np.mean(vals)) if vals else None
        # RL gradient steps per round and wall time per step (feature extraction included for the
        # head-only methods: it is part of what a round costs)
        rl_steps = [(r["n_updates"] - r["config"]["sft_steps"] * sum(p["phase"].endswith("sft") for p in r["curve"]))
                    / len(r["rounds"]) for r in rs if r["rounds"]]
        row["rl_updates_per_round"] = float(np.mean(rl_steps)) if rl_steps else None
        row["rl_ms_per_update"] = (1000 * row["rl_s_per_round"] / row["rl_updates_per_round"]
                                   if rl_steps and row["rl_updates_per_round"] else None)
        runs = [online_episode_stats(out_dir / "runs" / f"{method}-s{r['seed']}", cfg.task, cfg.backend)
                for r in rs] if out_dir else []
        runs = [x for x in runs if x is not None]
        if runs:
            row["online"] = {s: {k: float(np.mean([x[s][k] for x in runs])) for k in ("episodes", "successes")}
                             for s in SPLITS}
            row["online"]["mean_steps"] = float(np.mean([x["mean_steps"] for x in runs]))
        out[method] = row
    return out


def format_table(summary: dict, cfg: LearningBenchConfig) -> str:
    lines = [f"Greedy success on {cfg.backend} `{cfg.task}` ({cfg.eval_n} episodes per split, mean ± std over "
             f"{', '.join(sorted({str(r['n_seeds']) for r in summary.values()}))} seed(s); "
             f"Stage 0 → final; budget {cfg.budget} online episodes or extra demos)", "",
             "| method | demo tasks | RL-only tasks | held-out tasks | lowest (demo tasks) | RL s / round | "
             "RL updates / round | ms / RL update | SFT s / phase | train s |",
             "|---|---|---|---|---|---|---|---|---|---|"]

    def sec(v):
        return "–" if v is None else f"{v:.1f}"

    for method, row in summary.items():
        cells = [f"{row[s]['start']:.2f} → **{row[s]['final']:.2f}** ± {row[s]['final_std']:.2f}" for s in SPLITS]
        lines.append(f"| {METHODS[method]} (`{method}`) | {' | '.join(cells)} | {row['demo']['lowest']:.2f} | "
                     f"{sec(row['rl_s_per_round'])} | {sec(row['rl_updates_per_round'])} | "
                     f"{sec(row['rl_ms_per_update'])} | {sec(row['sft_s_per_phase'])} | {row['train_s']:.0f} |")
    if cfg.backend == "metaworld":  # the paper's own MetaWorld figures, for comparison (not measured here)
        lines.append(f"| {PAPER_METAWORLD['method']} | {' | '.join(PAPER_METAWORLD[s] for s in SPLITS)} "
                     "| – | – | – | – | – | – |")
    online = {m: row["online"] for m, row in summary.items() if "online" in row}
    if online:
        lines += ["", "Online episodes per run (mean over seeds): successes / episodes sampled, per split",
                  "", "| method | demo tasks | RL-only tasks | mean steps per episode |", "|---|---|---|---|"]
        for method, o in online.items():
            cells = [f"{o[s]['successes']:.0f} / {o[s]['episodes']:.0f}" for s in ("demo", "rl")]
            lines.append(f"| `{method}` | {' | '.join(cells)} | {o['mean_steps']:.1f} |")
    return "\n".join(lines)


def plot(results: list[dict], cfg: LearningBenchConfig, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(SPLITS), figsize=(5 * len(SPLITS), 4), sharey=True)
    titles = {"demo": "tasks with demos", "rl": "tasks trained online only", "held_out": "held-out tasks"}
    for method in cfg.methods:
        rs = [r for r in results if r["method"] == method]
        if not rs:
            continue
        xs = [p["episodes"] for p in rs[0]["curve"]]
        for ax, split in zip(axes, SPLITS, strict=True):
            ys = np.array([[p[split] for p in r["curve"]] for r in rs if len(r["curve"]) == len(xs)])
            line, = ax.plot(xs, ys.mean(0), marker="o", ms=3, label=METHODS[method])
            ax.fill_between(xs, ys.min(0), ys.max(0), color=line.get_color(), alpha=0.15)
    finish_split_figure(fig, axes, [titles[s] for s in SPLITS], "online episodes (or extra demos) spent",
                        f"{cfg.backend} {cfg.task}: mean over {len(cfg.seeds)} seed(s), band = min..max", path)


def finish_split_figure(fig, axes, titles: list[str], xlabel: str, suptitle: str, path: Path) -> None:
    """Greedy success per split, one panel each (titles in the panels' order): labels, limits, save."""
    import matplotlib.pyplot as plt

    for ax, title in zip(axes, titles, strict=True):
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("greedy success")
    axes[0].set_ylim(-0.02, 1.02)
    axes[-1].legend(fontsize=8, loc="upper left")
    fig.suptitle(suptitle)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------- main
def run(cfg: LearningBenchConfig, out: Path, fresh: bool = False) -> dict:
    if cfg.evaluate_at not in ("round", "phase", "iteration"):
        raise ValueError(f"evaluate_at {cfg.evaluate_at!r}: one of round, phase, iteration")
    unknown = set(cfg.methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown method(s) {sorted(unknown)}; choose from {list(METHODS)}")
    if fresh:
        shutil.rmtree(out, ignore_errors=True)
    (out / "results").mkdir(parents=True, exist_ok=True)
    saved = out / "config.json"
    if saved.exists() and json.loads(saved.read_text()) != json.loads(json.dumps(dataclasses.asdict(cfg))):
        raise SystemExit(f"{out} holds results of another configuration ({saved}); use --fresh or another --out")
    saved.write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
    t0 = time.time()
    ctx = multiprocessing.get_context("spawn")
    # longest first within a seed, so parallel workers finish together
    order = ["irevla_sac", "ppo_whole", "recap", "irevla_ppo", "sft_extra_demos", "sft_only", "rl_only"]
    todo = [(cfg, out, m, s) for s in cfg.seeds for m in sorted(cfg.methods, key=order.index)
            if not (out / "results" / f"{m}-s{s}.json").exists()]
    # with one worker, seed by seed (Stage 0, then its jobs): a run cut short has every method on
    # its first seeds and no Stage 0 it did not use; with more, every Stage 0 first
    groups = [[s] for s in cfg.seeds] if cfg.jobs == 1 else [list(cfg.seeds)]
    done = 0
    with ProcessPoolExecutor(max_workers=cfg.jobs, mp_context=ctx) as pool:
        for seeds in groups:
            for f in as_completed([pool.submit(stage0, cfg, out, s) for s in seeds]):
                f.result()
            print(f"stage 0 ready for seeds {seeds} ({time.time() - t0:.0f} s)", flush=True)
            for f in as_completed([pool.submit(_job, job) for job in todo if job[3] in seeds]):
                r, done = f.result(), done + 1
                final = ", ".join(f"{s} {r['curve'][-1][s]:.2f}" for s in SPLITS)
                print(f"done {done}/{len(todo)}: {r['method']} seed {r['seed']} in {r['wall_s']:.0f} s "
                      f"(final {final}; {time.time() - t0:.0f} s total)", flush=True)
    return report(cfg, out, t0)


def report(cfg: LearningBenchConfig, out: Path, t0: float | None = None) -> dict:
    """The table, curves and summary from the results in OUT/results (those there: a run cut
    short reports the jobs it finished, each row with its seed count)."""
    paths = [out / "results" / f"{m}-s{s}.json" for m in cfg.methods for s in cfg.seeds]
    missing = [p.stem for p in paths if not p.exists()]
    if missing:
        print(f"not run (no result): {', '.join(missing)}", flush=True)
    results = [json.loads(p.read_text()) for p in paths if p.exists()]
    summary = summarize(results, cfg, out)
    table = format_table(summary, cfg)
    (out / "table.md").write_text(table + "\n")
    total = None if t0 is None else time.time() - t0
    (out / "summary.json").write_text(json.dumps({"config": dataclasses.asdict(cfg), "methods": summary,
                                                  "total_s": total, "not_run": missing}, indent=1))
    plot(results, cfg, out / "learning_curves.png")
    print("\n" + table)
    print(f"\ncurves: {out / 'learning_curves.png'}" + ("" if total is None else f"; total {total:.0f} s"))
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.learning", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/bench-learning")
    p.add_argument("--smoke", action="store_true", help="tiny sizes (one seed, a few episodes): a smoke test")
    p.add_argument("--metaworld", action="store_true",
                   help="the table on MetaWorld (task set `bench`, sizes for its longer episodes; docs/metaworld.md)")
    p.add_argument("--fresh", action="store_true", help="discard earlier results in --out")
    p.add_argument("--report", action="store_true", help="only the table and curves from the results in --out")
    p.add_argument("--methods", nargs="+", choices=list(METHODS), default=None)
    p.add_argument("--seeds", nargs="+", type=int, default=None)
    for f in dataclasses.fields(LearningBenchConfig):
        kind = {"int": int, "float": float, "str": str}.get(f.type)
        if kind is not None:
            p.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=kind, default=None)
    args = p.parse_args(argv)
    values = dict(METAWORLD) if args.metaworld else {}
    if args.smoke:
        values.update(SMOKE)
        if args.metaworld:
            values.update(METAWORLD_SMOKE)
    for f in dataclasses.fields(LearningBenchConfig):
        v = getattr(args, f.name, None)
        if v is not None:
            values[f.name] = tuple(v) if isinstance(v, list) else v
    cfg = LearningBenchConfig(**values)
    if args.report:
        report(cfg, Path(args.out))
    else:
        run(cfg, Path(args.out), fresh=args.fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
