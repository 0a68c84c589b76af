"""`vlaloop bench interventions` / `python -m bench.interventions`: does an operator's time spent on
interventions teach a task the policy has never seen done, and does it beat spending the same
operator time on demonstrations?

The task is the RL-only task of bench/learning.py with NO demos of it (`rl_task_demos=0`: the mock's
blue block, whose greedy success is 0.00 after Stage 0 and stays there under iRe-VLA, because no
sampled episode ever succeeds). Every method starts from the same Stage 0 per seed (bench/learning.py's
`stage0`: the demo split's expert demos) and runs `iterations` x (RL rounds, SFT phase):

    irevla_ppo        iRe-VLA (head-only PPO rounds + LoRA SFT), no interventions: the baseline
    irevla_ppo_hil    the same, with the scripted intervener (sim/intervener.py) in every sampled
                      round: SFT gets the intervention segments (HG-DAgger), PPO drops the decisions
                      a takeover cut into (learner/dataset.py)
    irevla_sac_hil    the same with SAC: intervention segments in the demo half of its batches
    demos_same_time   no online episodes: before each SFT phase, expert demos of the RL task worth the
                      operator seconds `irevla_ppo_hil` (same seed) had spent by then, teleop + labels
    demos_same_teleop the same, matched to its teleop seconds only (labels by a success detector)

Operator seconds (`OperatorCost`, stated in the table): an intervention costs its steps x the
control period + a reaction time per takeover; an online episode costs a label (the operator
presses success/failure on the page) unless a success detector labels it; a demo costs its steps x
the control period + a per-demo overhead (reset, start/stop). Resets of online episodes are the
arm's own (homing) and cost no operator time.

Jobs run one after another by default (`--jobs 1`); each finished job is OUT/results/METHOD-sSEED.json
(an interrupted run resumes), Stage 0 is reused from OUT/stage0. The demo-matched controls read the
HIL job's result of their seed, so they run after it.

    python -m bench.interventions --out runs/bench-interventions        # 3 seeds (docs/interventions.md)
    python -m bench.interventions --smoke --out /tmp/bi                  # seconds (tests/bench)
    python -m bench.interventions --metaworld --out runs/bench-interventions-mw   # MetaWorld, hours
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.learning import (
    EVAL_SEED,
    METAWORLD,
    METAWORLD_SMOKE,
    LearningBenchConfig,
    _demo_recorder,
    _learner_config,
    finish_split_figure,
    online_episode_stats,
    stage0,
)
from sim.intervener import InterventionConfig

METHODS = {
    "irevla_ppo": "iRe-VLA PPO, no interventions",
    "irevla_ppo_hil": "iRe-VLA PPO + scripted interventions",
    "irevla_sac_hil": "iRe-VLA SAC + scripted interventions",
    "demos_same_time": "demos only, same operator s (teleop + labels)",
    "demos_same_teleop": "demos only, same teleop s (labels free)",
}
LATER_SETTINGS = ("sft_intervention_repeat",)  # added after the first published run
HIL_METHODS = {"irevla_ppo_hil", "irevla_sac_hil"}
DEMO_METHODS = {"demos_same_time": "operator_s", "demos_same_teleop": "teleop_s"}
SPLITS = ("demo", "rl")  # held-out colours stay at 0.00 for every method (docs/results.md): not evaluated
ORDER = ("irevla_ppo_hil", "irevla_sac_hil", "irevla_ppo", "demos_same_time", "demos_same_teleop")


@dataclass
class OperatorCost:
    control_period_s: float = 0.1
    """Seconds per control step (the robot client's default 10 Hz)."""
    takeover_s: float = 2.0
    """Reaction time per takeover: notice, take the device, settle into driving, hand back."""
    label_s: float = 1.0
    """One success/failure label of an online episode on the operator page."""
    demo_overhead_s: float = 5.0
    """Per demonstration besides its steps: reset the scene, start and stop the recording."""


@dataclass
class InterventionBenchConfig(LearningBenchConfig):
    rl_task_demos: int = 0
    methods: tuple[str, ...] = ("irevla_ppo_hil", "irevla_ppo", "demos_same_time", "demos_same_teleop")
    iterations: int = 2
    rounds: int = 3
    episodes_per_round: int = 96
    eval_n: int = 100
    jobs: int = 1
    # learner.sft.intervention_repeat of the HIL runs: each intervention sample counts this many times in SFT
    sft_intervention_repeat: int = 1
    intervention: InterventionConfig = field(default_factory=InterventionConfig)
    cost: OperatorCost = field(default_factory=OperatorCost)

    @property
    def budget(self) -> int:
        return self.iterations * self.rounds * self.episodes_per_round


# MetaWorld (bench task set; Stage 0 alone takes ~10 min per seed on one core): fewer, longer episodes
METAWORLD_HIL = {**METAWORLD, "rl_task_demos": 0, "rounds": 2, "episodes_per_round": 24}
SMOKE = dict(seeds=(0,), demos=6, bootstrap_steps=8, iterations=1, rounds=2, episodes_per_round=6,
             sft_steps=4, eval_n=6, sac_updates_per_episode=2,
             methods=("irevla_ppo_hil", "irevla_sac_hil", "irevla_ppo", "demos_same_time", "demos_same_teleop"))
# on the smoke's few steps of an untrained policy, a looser intervener so takeovers surely happen
SMOKE_INTERVENTION = dict(budget_fraction=0.5, grace_steps=1, segment_steps=4)


# ---------------------------------------------------------------------------------------------- jobs
def _evaluate(policy, cfg: InterventionBenchConfig) -> dict[str, float]:
    from learner.evaluate import success_rate

    return {split: success_rate(policy, n=cfg.eval_n, task=cfg.task, seed=EVAL_SEED, split=split,
                                backend=cfg.backend, workers=cfg.workers, max_steps=cfg.max_steps)
            for split in SPLITS}


def _trainer(cfg: InterventionBenchConfig, out: Path, method: str, seed: int):
    from learner.trainer import Trainer

    run_dir = out / "runs" / f"{method}-s{seed}"
    shutil.rmtree(run_dir, ignore_errors=True)
    shutil.copytree(out / "stage0" / f"s{seed}", run_dir)
    config = _learner_config(cfg, run_dir, seed)
    if method == "irevla_sac_hil":
        config.learner.algorithm = "sac"
    config.learner.sft.intervention_repeat = cfg.sft_intervention_repeat
    trainer = Trainer(config, run_dir)
    trainer.resume()
    return trainer, config


def run_online(cfg: InterventionBenchConfig, out: Path, method: str, seed: int) -> dict:
    """iRe-VLA rounds (with the scripted intervener for the HIL methods), SFT after each iteration;
    the operator's seconds counted as they are spent."""
    import torch

    from learner.evaluate import rollout
    from learner.recipes.inprocess import InProcessRun
    from learner.recipes.registry import recipe_for
    from sim.intervener import ScriptedIntervener

    torch.set_num_threads(1)
    trainer, config = _trainer(cfg, out, method, seed)
    intervener = ScriptedIntervener(cfg.intervention) if method in HIL_METHODS else None
    cost = cfg.cost
    g = torch.Generator().manual_seed(seed)
    ops = {"teleop_s": 0.0, "label_s": 0.0, "intervention_steps": 0, "takeovers": 0, "steps": 0,
           "episodes": 0, "episodes_with_takeover": 0, "successes": 0}
    curve = [{"episodes": 0, "phase": "stage0", **_evaluate(trainer.policy, cfg), **_op_point(ops)}]
    print(f"[{method} s{seed}] start: {curve[0]}", flush=True)
    t_job, seeds = time.time(), [200_000 + 100_000 * seed]  # bench/learning.py's episode seeds
    sampled = []

    def collect(phase, it: int) -> list[dict]:
        """The round's episodes, the scripted operator stepping in (HIL), its seconds counted."""
        before = (intervener.takeovers, intervener.intervention_steps) if intervener else (0, 0)
        res = rollout(trainer.policy, range(seeds[0], seeds[0] + phase.episodes), cfg.task, "sample", g,
                      store=trainer.store, split="train", backend=cfg.backend, workers=cfg.workers,
                      max_steps=cfg.max_steps, intervener=intervener)
        seeds[0] += phase.episodes
        if intervener is not None:
            ops["takeovers"] += intervener.takeovers - before[0]
            ops["intervention_steps"] += intervener.intervention_steps - before[1]
        ops["episodes"] += len(res.seeds)
        ops["steps"] += int(res.steps.sum())
        ops["successes"] += int(res.success.sum())
        ops["episodes_with_takeover"] += int((res.intervention_steps > 0).sum())
        ops["teleop_s"] = ops["intervention_steps"] * cost.control_period_s + ops["takeovers"] * cost.takeover_s
        ops["label_s"] = ops["episodes"] * cost.label_s
        sampled.append(res.success_rate)
        return res.metas

    def point(phase, entry: dict, m: dict, following) -> None:
        it = entry["iteration"]
        extra = ({"phase": f"it{it} rl{phase.round}", "sampled": sampled[-1]} if phase.episodes else
                 {"phase": f"it{it} sft", "n_intervention_episodes": m.get("n_intervention_episodes"),
                  "n_online_successes": m.get("n_online_successes")})
        curve.append({"episodes": ops["episodes"], **extra, **_evaluate(trainer.policy, cfg), **_op_point(ops)})
        print(f"[{method} s{seed}] {curve[-1]}", flush=True)

    run = InProcessRun(trainer, recipe_for(config.learner), collect=collect, on_published=point)
    for it in range(cfg.iterations):
        run.iteration(it)
    # the sampled episodes per split, read back from the store (RL-only task: its successes in sampling)
    online = online_episode_stats(trainer.run_dir, cfg.task, cfg.backend)
    return {"method": method, "seed": seed, "curve": curve, "ops": ops, "online": online,
            "wall_s": time.time() - t_job, "intervener": intervener.stats() if intervener else None,
            "config": _asdict(cfg)}


def _op_point(ops: dict) -> dict:
    return {"teleop_s": ops["teleop_s"], "label_s": ops["label_s"],
            "operator_s": ops["teleop_s"] + ops["label_s"], "intervention_steps": ops["intervention_steps"],
            "takeovers": ops["takeovers"], "steps": ops["steps"]}


def run_demos(cfg: InterventionBenchConfig, out: Path, method: str, seed: int) -> dict:
    """SFT phases on the Stage 0 demos + expert demos of the RL task, recorded before each phase
    until they cost the operator seconds the HIL run of this seed had spent by its phase."""
    import torch

    torch.set_num_threads(1)
    hil = json.loads((out / "results" / f"irevla_ppo_hil-s{seed}.json").read_text())
    targets = [p[DEMO_METHODS[method]] for p in hil["curve"] if p["phase"].endswith("sft")]
    from learner.recipes.inprocess import InProcessRun
    from learner.recipes.registry import recipe_for

    trainer, config = _trainer(cfg, out, method, seed)
    control = InProcessRun(trainer, recipe_for(config.learner, "sft_only"))
    record = _demo_recorder(cfg)
    cost = cfg.cost
    t_job, spent, n_demos, demo_seed = time.time(), 0.0, 0, 600_000 + 100_000 * seed
    curve = [{"episodes": 0, "phase": "stage0", **_evaluate(trainer.policy, cfg), "operator_s": 0.0, "demos": 0}]
    print(f"[{method} s{seed}] start: {curve[0]}", flush=True)
    for it, target in enumerate(targets):
        while True:  # whole demos while the next one still fits in the operator's time
            # the first demo alone measures what one costs on this task (MetaWorld's are ~6x the mock's)
            n = int((target - spent) // (spent / n_demos)) if n_demos else int(target > spent)
            if n < 1:
                break
            kept = record(trainer.store, task=cfg.task, n=n, seed=demo_seed, split="rl",
                          image_size=config.model.image_size, cameras=tuple(config.model.cameras))
            demo_seed += 2 * n + 10  # past every seed record_demos may have tried
            for meta in kept:
                spent += meta["n_steps"] * cost.control_period_s + cost.demo_overhead_s
            n_demos += len(kept)
            if spent > target:
                break
        control.iteration(it)  # the sft_only recipe: one SFT phase on every demo now in the store
        curve.append({"episodes": 0, "phase": f"it{it} sft", **_evaluate(trainer.policy, cfg),
                      "operator_s": spent, "target_s": target, "demos": n_demos})
        print(f"[{method} s{seed}] {curve[-1]}", flush=True)
    return {"method": method, "seed": seed, "curve": curve, "wall_s": time.time() - t_job,
            "ops": {"operator_s": spent, "demos": n_demos}, "config": _asdict(cfg)}


def _asdict(cfg: InterventionBenchConfig) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def _job(args) -> dict:
    cfg, out, method, seed = args
    from episodes.durable import write_json_atomic

    result = (run_demos if method in DEMO_METHODS else run_online)(cfg, out, method, seed)
    write_json_atomic(out / "results" / f"{method}-s{seed}.json", result)
    shutil.rmtree(out / "runs" / f"{method}-s{seed}" / "features", ignore_errors=True)
    return result


# ---------------------------------------------------------------------------------------------- report
def summarize(results: list[dict], cfg: InterventionBenchConfig, out_dir: Path | None = None) -> dict:
    for r in results:  # results saved without the store's per-split counts: read them back
        if "online" not in r and r["method"] not in DEMO_METHODS and out_dir is not None:
            r["online"] = online_episode_stats(out_dir / "runs" / f"{r['method']}-s{r['seed']}", cfg.task, cfg.backend)
    out = {}
    for method in cfg.methods:
        rs = [r for r in results if r["method"] == method]
        if not rs:
            continue
        row: dict = {"n_seeds": len(rs), "seeds": [r["seed"] for r in rs]}
        for split in SPLITS:
            final = np.array([r["curve"][-1][split] for r in rs])
            row[split] = {"start": float(np.mean([r["curve"][0][split] for r in rs])), "final": float(final.mean()),
                          "final_std": float(final.std()), "per_seed": final.tolist()}
        last = [r["curve"][-1] for r in rs]
        row["operator_s"] = float(np.mean([p["operator_s"] for p in last]))
        row["wall_s"] = float(np.mean([r["wall_s"] for r in rs]))
        if method in DEMO_METHODS:
            row["demos"] = float(np.mean([p["demos"] for p in last]))
            row["target_s"] = float(np.mean([p["target_s"] for p in last]))
        else:
            ops = [r["ops"] for r in rs]
            for k in ("teleop_s", "label_s", "takeovers", "intervention_steps", "steps", "episodes",
                      "episodes_with_takeover"):
                row[k] = float(np.mean([o[k] for o in ops]))
            online = [r["online"] for r in rs if r.get("online")]
            if online:  # sampled episodes of the RL-only task and how many succeeded (operator included)
                row["rl_sampled"] = float(np.mean([o["rl"]["episodes"] for o in online]))
                row["rl_sampled_successes"] = float(np.mean([o["rl"]["successes"] for o in online]))
            row["intervention_fraction"] = row["intervention_steps"] / row["steps"] if row["steps"] else 0.0
        out[method] = row
    return out


def format_table(summary: dict, cfg: InterventionBenchConfig) -> str:
    c, iv = cfg.cost, cfg.intervention
    lines = [f"Greedy success on {cfg.backend} `{cfg.task}`, RL-only task with {cfg.rl_task_demos} demos "
             f"({cfg.eval_n} episodes per split, mean ± std over seeds {list(cfg.seeds)}; Stage 0 → final after "
             f"{cfg.iterations} × ({cfg.rounds} rounds × {cfg.episodes_per_round} episodes + SFT)"
             + (f"; SFT repeats each intervention sample {cfg.sft_intervention_repeat}×" if cfg.sft_intervention_repeat > 1
                else "") + ")", "",
             "| method | RL-only task (per seed) | demo tasks | operator s (teleop + labels) | what the operator did |",
             "|---|---|---|---|---|"]
    for method, row in summary.items():
        rl, demo = row["rl"], row["demo"]
        per_seed = " / ".join(f"{v:.2f}" for v in rl["per_seed"])
        if method in DEMO_METHODS:
            did = f"{row['demos']:.0f} demos of the RL task (matched to {row['target_s']:.0f} s)"
            secs = f"{row['operator_s']:.0f}"
        else:
            did = (f"{row['takeovers']:.0f} takeovers, {row['intervention_steps']:.0f} steps "
                   f"({100 * row['intervention_fraction']:.1f} % of {row['steps']:.0f}) in "
                   f"{row['episodes_with_takeover']:.0f} of {row['episodes']:.0f} episodes; "
                   f"{row['episodes']:.0f} labels") if row["takeovers"] else f"{row['episodes']:.0f} labels"
            if "rl_sampled" in row:
                did += f"; RL-only task sampled {row['rl_sampled_successes']:.0f} / {row['rl_sampled']:.0f} successes"
            secs = f"{row['teleop_s']:.0f} + {row['label_s']:.0f}"
        lines.append(f"| {METHODS[method]} (`{method}`) | {rl['start']:.2f} → **{rl['final']:.2f}** ± "
                     f"{rl['final_std']:.2f} ({per_seed}) | {demo['start']:.2f} → {demo['final']:.2f} ± "
                     f"{demo['final_std']:.2f} | {secs} | {did} |")
    lines += ["", f"Costing: control period {c.control_period_s} s; takeover reaction {c.takeover_s} s; "
              f"label {c.label_s} s per online episode; demo = its steps × period + {c.demo_overhead_s} s. "
              f"Intervener: segment {iv.segment_steps} steps, budget {100 * iv.budget_fraction:.0f} % of steps, "
              f"≤ {iv.max_takeovers} takeovers per episode, stall < {iv.stall_distance} m over "
              f"{iv.stall_window} steps or > {iv.max_angle_deg:.0f}° off the expert for {iv.deviation_steps} steps."]
    return "\n".join(lines)


def plot(results: list[dict], cfg: InterventionBenchConfig, path: Path) -> None:
    """Greedy success against operator seconds spent (teleop + labels), one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(SPLITS), figsize=(6 * len(SPLITS), 4), sharey=True)
    colours = dict(zip(METHODS, plt.rcParams["axes.prop_cycle"].by_key()["color"], strict=False))
    for method in cfg.methods:
        for i, r in enumerate(x for x in results if x["method"] == method):
            xs = [p["operator_s"] for p in r["curve"]]
            for ax, split in zip(axes, SPLITS, strict=True):
                ax.plot(xs, [p[split] for p in r["curve"]], marker="o", ms=3, color=colours[method],
                        alpha=0.8, label=METHODS[method] if i == 0 else None)
    titles = {"demo": "tasks with demos", "rl": "RL-only task (no demos)"}
    finish_split_figure(fig, axes, [titles[s] for s in SPLITS], "operator seconds spent (teleop + labels, or demos)",
                        f"{cfg.backend} {cfg.task}: one line per seed", path)


# ---------------------------------------------------------------------------------------------- main
def run(cfg: InterventionBenchConfig, out: Path, fresh: bool = False) -> dict:
    unknown = set(cfg.methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown method(s) {sorted(unknown)}; choose from {list(METHODS)}")
    if DEMO_METHODS.keys() & set(cfg.methods) and "irevla_ppo_hil" not in cfg.methods:
        raise ValueError("the demo-matched controls need irevla_ppo_hil (their operator time) in --methods")
    if fresh:
        shutil.rmtree(out, ignore_errors=True)
    (out / "results").mkdir(parents=True, exist_ok=True)
    saved = out / "config.json"
    if saved.exists() and _job_settings(json.loads(saved.read_text())) != _job_settings(_asdict(cfg)):
        raise SystemExit(f"{out} holds results of another configuration ({saved}); use --fresh or another --out")
    saved.write_text(json.dumps(_asdict(cfg), indent=1))
    t0 = time.time()
    for s in cfg.seeds:  # one at a time: --jobs 1 is the point of this bench's sizing
        stage0(cfg, out, s)
    print(f"stage 0 ready for seeds {list(cfg.seeds)} ({time.time() - t0:.0f} s)", flush=True)
    todo = [(cfg, out, m, s) for m in sorted(cfg.methods, key=ORDER.index) for s in cfg.seeds
            if not (out / "results" / f"{m}-s{s}.json").exists()]
    _run_jobs(todo, cfg.jobs, t0)
    results = [json.loads((out / "results" / f"{m}-s{s}.json").read_text()) for m in cfg.methods for s in cfg.seeds]
    summary = summarize(results, cfg, out)
    table = format_table(summary, cfg)
    (out / "table.md").write_text(table + "\n")
    (out / "summary.json").write_text(json.dumps({"config": _asdict(cfg), "methods": summary,
                                                  "total_s": time.time() - t0}, indent=1))
    plot(results, cfg, out / "curves.png")
    print("\n" + table + f"\n\ncurves: {out / 'curves.png'}; total {time.time() - t0:.0f} s")
    return summary


def _job_settings(config: dict) -> dict:
    """What a job's result depends on: not which methods or seeds run (more can be added to an OUT),
    nor settings added later that are at their default (older results did not have them)."""
    defaults = _asdict(InterventionBenchConfig())
    return {k: v for k, v in config.items()
            if k not in ("methods", "seeds", "jobs") and not (k in LATER_SETTINGS and v == defaults[k])}


def _run_jobs(todo: list, jobs: int, t0: float) -> None:
    """In order in this process (jobs 1), or the online jobs in a pool first, then the controls
    (they read the HIL results)."""
    def report(i: int, r: dict) -> None:
        finals = ", ".join(f"{s} {r['curve'][-1][s]:.2f}" for s in SPLITS)
        print(f"done {i}/{len(todo)}: {r['method']} seed {r['seed']} in {r['wall_s']:.0f} s (final {finals}; "
              f"{time.time() - t0:.0f} s total)", flush=True)

    if jobs <= 1:
        for i, job in enumerate(todo, 1):
            report(i, _job(job))
        return
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    done = 0
    with ProcessPoolExecutor(max_workers=jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        for batch in ([j for j in todo if j[2] not in DEMO_METHODS], [j for j in todo if j[2] in DEMO_METHODS]):
            for r in pool.map(_job, batch):
                done += 1
                report(done, r)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.interventions", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/bench-interventions")
    p.add_argument("--smoke", action="store_true", help="tiny sizes (one seed, a few episodes): a smoke test")
    p.add_argument("--metaworld", action="store_true", help="on MetaWorld (task set `bench`, docs/metaworld.md)")
    p.add_argument("--fresh", action="store_true", help="discard earlier results in --out")
    p.add_argument("--methods", nargs="+", choices=list(METHODS), default=None)
    p.add_argument("--seeds", nargs="+", type=int, default=None)
    for f in dataclasses.fields(InterventionBenchConfig):
        kind = {"int": int, "float": float, "str": str}.get(f.type)
        if kind is not None:
            p.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=kind, default=None)
    for f in dataclasses.fields(InterventionConfig):
        p.add_argument("--iv-" + f.name.replace("_", "-"), dest="iv_" + f.name, type=type(f.default), default=None,
                       help=f"intervener: {f.name}")
    args = p.parse_args(argv)
    values: dict = dict(METAWORLD_HIL) if args.metaworld else {}
    if args.smoke:
        values.update(SMOKE)
        if args.metaworld:
            values.update({**METAWORLD_SMOKE, "rl_task_demos": 0,
                           "methods": ("irevla_ppo_hil", "irevla_ppo", "demos_same_time")})
    iv = dict(SMOKE_INTERVENTION) if args.smoke else {}
    for f in dataclasses.fields(InterventionBenchConfig):
        v = getattr(args, f.name, None)
        if v is not None:
            values[f.name] = tuple(v) if isinstance(v, list) else v
    for f in dataclasses.fields(InterventionConfig):
        v = getattr(args, "iv_" + f.name)
        if v is not None:
            iv[f.name] = v
    run(InterventionBenchConfig(**values, intervention=InterventionConfig(**iv)), Path(args.out), fresh=args.fresh)
    return 0


if __name__ == "__main__":
    sys.exit(main())
