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
    recap             RECAP (pi*0.6, docs/recap.md): `rounds x episodes` sampled with the positive
                      indicator, then value function -> advantage labels -> conditioned SFT
    awr               AWR, RECAP's baseline: the same, but the SFT on the plain prompt, each sample
                      drawn in proportion to exp(advantage / temperature) (learner/recap/awr.py)

Task split (mock `reach_slots`, sim/mock/tasks.py): `demo` colours (red, green)
have `demos` expert demos; the `rl` colour (blue) has only `rl_task_demos` (default 4; 0 = none) and
is otherwise met only in online episodes (online episodes sample demo + rl colours: split `train`);
the `held_out` colour (yellow) is never trained on. Greedy
success is evaluated on each split after every round/phase on fixed seeds.

Runs are independent jobs (method x seed) in `--jobs` worker processes (1 torch thread each); each
finished job is saved to OUT/results/METHOD-sSEED.json, and a job saves itself at the end of every
iteration (OUT/runs/METHOD-sSEED/bench_state/), so a killed run resumes at the last finished
iteration of each job; every finished cell (a Stage 0, or an iteration of a method and seed) is
logged to OUT/progress.jsonl with a progress line and an ETA. Output: a table (markdown, also
OUT/table.md), OUT/learning_curves.png, OUT/summary.json. A method is a METHODS entry: its label
and the learner recipe it runs (learner/recipes/), the same object the live loop runs, here on
in-process rollouts (learner/recipes/inprocess.py).

    python -m bench.learning                      # the full table: 6 methods x 3 seeds (~45 min, 2 cores)
    python -m bench.learning --smoke              # seconds-sized version (the test suite runs it)
    python -m bench.learning --metaworld          # on MetaWorld, one core (docs/metaworld.md)
    python -m bench.learning --metaworld-long     # on MetaWorld at the long table's budget (hours; resumable)
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import io
import json
import multiprocessing
import shutil
import sys
import time
from collections.abc import Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

SPLITS = ("demo", "rl", "held_out")  # evaluation splits, in table order
# The iRe-VLA paper's MetaWorld results (its pretrained VLA, its own task split), as ranges over
# its tasks: SFT start -> after iRe-VLA. Not measured here; shown next to our rows.
PAPER_METAWORLD = {"method": "iRe-VLA paper, MetaWorld (their VLA; SFT → iRe-VLA)", "demo": "not quoted",
                   "rl": "0.28–0.56 → **0.80–1.00**", "held_out": "0.51 → **0.80**"}
EVAL_SEED = 10_000
RESET_S_NOTE = "10 s reset per episode (a real arm's; the mock and MetaWorld are charged it too)"
# columns next to the splits: the demo tasks given a phrasing kept out of training, and given another
# task's instruction (a policy that reads the words drops there) -- learner.evaluate.LANGUAGE_CONDITIONS
LANGUAGE_COLUMNS = {"demo_held_out_phrasing": "held_out_phrasing", "demo_wrong_instruction": "wrong_instruction"}


@dataclass
class LearningBenchConfig:
    # "mock" (the task below) or "metaworld" (task "bench": the demo / rl / held_out task sets of
    # sim/metaworld/tasks.py; the paper's protocol on the paper's benchmark, docs/metaworld.md)
    backend: str = "mock"
    task: str = "reach_slots"
    workers: int = 0  # metaworld: env worker processes per rollout (0: in the job's own process)
    max_steps: int = 0  # caps every task's step limit (0: the tasks' own limits); smoke tests only
    seeds: tuple[int, ...] = (0, 1, 2)
    methods: tuple[str, ...] = dataclasses.field(default_factory=lambda: tuple(METHODS))
    demos: int = 40  # expert demos (split "demo") for Stage 0 and every SFT phase
    # demos of the RL-only tasks (split "rl"): 0 = none at all. The tiny model has no pretrained
    # language, so with none its success on an unseen colour word is exactly 0 and sparse-reward RL
    # has nothing to learn from (measured); a few demos stand in for a VLM's weak zero-shot start.
    rl_task_demos: int = 4
    bootstrap_steps: int = 60  # the demo's short Stage 0 (docs/demo.md)
    iterations: int = 2  # RL phase + SFT phase, repeated
    rounds: int = 4  # RL rounds per phase (the first round of a run is the PPO critic warm-up)
    episodes_per_round: int = 128
    # the split the online episodes (and sft_extra_demos' extra demos) are drawn from: "train" (the
    # demo and RL tasks) or "rl" (the RL tasks only, as the paper's RL stage)
    collect_split: str = "train"
    sft_steps: int = 200
    ppo_lr: float = 1e-4
    sac_updates_per_episode: int = 10
    eval_n: int = 100  # greedy episodes per split per evaluation
    # when to evaluate: "round" (after every RL round and SFT phase), "phase" (at the end of each
    # RL phase and after each SFT phase) or "iteration" (once per iteration, after its last phase);
    # on MetaWorld one evaluation costs about as much as two RL rounds
    evaluate_at: str = "round"
    jobs: int = 2
    language_encoder: str = ""  # model.language_encoder of every run: bpe, minilm or "" (the model's default)
    # any other learner setting for every method, as LearnerConfig.updated takes it (nested sections,
    # e.g. {"sac": {"bc_coef": 1.0}}); the fields above are the table's own knobs, set on top
    learner: dict = dataclasses.field(default_factory=dict)

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
# the long MetaWorld table's budget, where the loop has data to learn from: per method and seed 3 iRe-VLA
# iterations x 15 rounds x 20 online episodes on the RL tasks only (900 episodes, ~300 per RL
# task), then an SFT phase of 300 steps on the demos + every online success; SFT-only gets the same
# SFT steps, SFT + extra demos 900 expert demos of the RL tasks; SAC at 20 updates per episode
# (half of every batch demos, RLPD-style); greedy success on 24 fixed episodes per split after
# every iteration. RECAP (and AWR, its paper's baseline) samples the same 900 episodes and runs one
# RECAP phase (value function, labels, 300 conditioned or weighted SFT steps) per iteration. Whole-model PPO runs after the other methods'
# seeds (it may get fewer).
# rl_only (head-only PPO without SFT) is left out: irevla_ppo's RL phase is the same. Hours on one
# core: docs/metaworld.md gives the estimate and how to resume.
METAWORLD_LONG = dict(METAWORLD, methods=("sft_only", "sft_extra_demos", "irevla_ppo", "irevla_sac", "recap",
                                           "awr", "ppo_whole"),
                      iterations=3, rounds=15, episodes_per_round=20, collect_split="rl", sft_steps=300,
                      sac_updates_per_episode=20, eval_n=24)
SMOKE = dict(seeds=(0,), demos=6, rl_task_demos=2, bootstrap_steps=8, iterations=1, rounds=2, episodes_per_round=6, sft_steps=4,
             eval_n=6, sac_updates_per_episode=2, jobs=1)


# ---------------------------------------------------------------------------------------------- jobs
def _learner_config(cfg: LearningBenchConfig, run_dir: Path, seed: int):
    from deployment.config import load_config

    config = load_config(None, environ={}, run_dir=str(run_dir))
    lc = config.learner = config.learner.updated(**cfg.learner)
    config.robot.task = cfg.task
    config.robot.backend = cfg.backend
    lc.seed, lc.bootstrap.demos, lc.bootstrap.steps = seed, cfg.demos + cfg.rl_task_demos, cfg.bootstrap_steps
    lc.sft.steps, lc.ppo.learning_rate, lc.sac.updates_per_episode = cfg.sft_steps, cfg.ppo_lr, cfg.sac_updates_per_episode
    lc.episodes_per_round, lc.rl_rounds_per_phase = cfg.episodes_per_round, cfg.rounds
    config.model.language_encoder = cfg.language_encoder or None
    return config


def stage0(cfg: LearningBenchConfig, out: Path, seed: int) -> Path:
    """Demos on the `demo` split + Stage 0 for one seed (skipped if already done)."""
    import torch

    from episodes.durable import write_json_atomic
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
    write_json_atomic(boot / "done.json", {"seconds": seconds, "eval": stage0_eval, "eval_s": time.time() - t - seconds})
    _progress(cfg, out, "stage0", "stage0", seed, 0, time.time() - t)
    return boot


def _demo_recorder(cfg: LearningBenchConfig):
    if cfg.backend == "metaworld":
        from sim.metaworld.demos import record_demos
    else:
        from sim.mock.demos import record_demos
    return record_demos


def _evaluate(policy, cfg: LearningBenchConfig) -> dict[str, float]:
    from learner.evaluate import rollout, success_rate

    rates = {split: success_rate(policy, n=cfg.eval_n, task=cfg.task, seed=EVAL_SEED, split=split,
                                 backend=cfg.backend, workers=cfg.workers, max_steps=cfg.max_steps)
             for split in SPLITS}
    for column, condition in LANGUAGE_COLUMNS.items():  # the demo tasks' episodes, other words given
        rates[column] = rollout(policy, range(EVAL_SEED, EVAL_SEED + cfg.eval_n), cfg.task, "greedy", split="demo",
                                backend=cfg.backend, workers=cfg.workers, max_steps=cfg.max_steps,
                                language=condition).success_rate
    return rates


@dataclass
class Job:
    """One (method, seed) run: its trainer and what the table needs from it. Everything but the
    trainer is saved at the end of every iteration (`save`); a killed run resumes from there."""

    cfg: LearningBenchConfig
    out: Path
    method: str
    seed: int
    trainer: object = None
    g: object = None  # torch.Generator: sampled actions of the online episodes
    run: object = None  # learner.recipes.inprocess.InProcessRun: the method's recipe on the trainer
    sampled: float = 0.0  # sampled success of the last phase's online episodes
    iterations_done: int = 0
    episodes: int = 0  # online episodes (or extra demos) spent so far: the curve's x
    robot_s: float = 0.0  # robot seconds they cost (episodes.robot_time): the curve's other x
    episode_seed: int = 0  # seed of the next online episode
    rl_s: float = 0.0
    sft_s: float = 0.0
    wall_s: float = 0.0  # of the finished iterations (and Stage 0's evaluation read back)
    n_updates: int = 0
    curve: list = dataclasses.field(default_factory=list)
    rounds: list = dataclasses.field(default_factory=list)

    @property
    def run_dir(self) -> Path:
        return self.out / "runs" / f"{self.method}-s{self.seed}"

    @property
    def tag(self) -> str:
        return f"[{self.method} s{self.seed}]"

    def point(self, phase: str, **extra) -> None:
        """A point of the curve: greedy success per split now."""
        self.curve.append({"episodes": self.episodes, "robot_h": self.robot_s / 3600, "phase": phase,
                           "version": self.trainer.version, **extra,
                           **_evaluate(self.trainer.policy, self.cfg)})
        print(f"{self.tag} {self.curve[-1]}", flush=True)


# --- the methods: each is a learner recipe (learner/recipes/registry.py) run in-process on rollouts
@dataclass(frozen=True)
class Method:
    label: str
    recipe: str  # the learner recipe it runs (learner.algorithm)
    online: bool  # collects online episodes (an RL method)
    sft: bool  # has an SFT phase (its RL phase is evaluated once, after the SFT)
    learner: Mapping[str, Any] = dataclasses.field(default_factory=dict)  # other learner settings the method sets


METHODS: dict[str, Method] = {
    "sft_only": Method("SFT on the demos only", "sft_only", online=False, sft=True),
    "sft_extra_demos": Method("SFT + extra expert demos", "sft_extra_demos", online=False, sft=True),
    "irevla_ppo": Method("iRe-VLA (PPO head + SFT)", "ppo", online=True, sft=True),
    "irevla_sac": Method("iRe-VLA (SAC head + SFT)", "sac", online=True, sft=True),
    "ppo_whole": Method("PPO whole model, no SFT", "ppo_whole", online=True, sft=False),
    "rl_only": Method("PPO head only, no SFT", "rl_only", online=True, sft=False),
    "recap": Method("RECAP (value fn + advantage-conditioned SFT)", "recap", online=True, sft=True),
    "awr": Method("AWR (advantage-weighted SFT, RECAP's value fn)", "recap", online=True, sft=True,
                  learner={"recap": {"weighting": "awr"}}),
}
RL_METHODS = {m for m, spec in METHODS.items() if spec.online}
SFT_METHODS = {m for m, spec in METHODS.items() if spec.sft}
ROUND_KEYS = ("approx_kl", "clipfrac", "logprob_mismatch", "critic_warmup", "q_mean", "alpha",  # per RL round
              "progress_model_usable", "progress_voc", "progress_shaped_sets", "progress_sparse_sets",
              "progress_reward_sum_sparse", "progress_reward_sum_shaped", "progress_sparse_reasons")
CONSOLIDATION_KEYS = ("value_", "labels_", "sft_", "n_tasks")  # per phase that collected and trained the trunk


def robot_time_config(cfg: LearningBenchConfig, config):
    """What the bench charges per episode: executed steps at the robot's control period (1 /
    robot.rate_hz, 10 Hz) + the reset a real arm takes (episodes.robot_time.RESET_S: 10 s; the mock
    and MetaWorld reset instantly but are charged the arm's reset so the curves are in robot-hours)."""
    from episodes.robot_time import RobotTimeConfig

    return RobotTimeConfig.for_backend(cfg.backend, rate_hz=config.robot.rate_hz)


def _charge(job: Job, metas: list[dict]) -> None:
    """Add what `metas` cost the arm to the job's robot time (expert demos: teleoperated, so the same)."""
    from episodes.robot_time import robot_time

    t = robot_time(metas, robot_time_config(job.cfg, job.trainer.config))
    job.robot_s += t.robot_s + t.demo_s


def _collect(job: Job, phase, it: int) -> list[dict]:
    """The phase's online episodes, `episodes_per_round` per rollout call, stored in the run's store."""
    from learner.evaluate import rollout

    cfg, metas, successes = job.cfg, [], 0
    while len(metas) < phase.episodes:
        n = min(cfg.episodes_per_round, phase.episodes - len(metas))
        res = rollout(job.trainer.policy, range(job.episode_seed, job.episode_seed + n), cfg.task, "sample", job.g,
                      store=job.trainer.store, split=cfg.collect_split, backend=cfg.backend, workers=cfg.workers,
                      max_steps=cfg.max_steps)
        job.episode_seed += n
        job.episodes += n
        _charge(job, res.metas)
        metas += res.metas
        successes += round(res.success_rate * n)
    job.sampled = successes / len(metas)
    return metas


def _record_demos(job: Job, phase, it: int) -> list[dict]:
    """As many expert demos as the others get online episodes, on the tasks they collect on."""
    cfg, trainer = job.cfg, job.trainer
    kept = _demo_recorder(cfg)(trainer.store, task=cfg.task, n=phase.demos,
                               seed=500_000 + 100_000 * job.seed + it * 10_000, split=cfg.collect_split,
                               image_size=trainer.config.model.image_size, cameras=tuple(trainer.config.model.cameras))
    job.episodes += phase.demos
    _charge(job, kept)
    return kept


def _published(job: Job, phase, entry: dict, metrics: dict, following) -> None:
    """After each phase: timings, the round's record, and a point of the curve when `evaluate_at` says."""
    cfg, it = job.cfg, entry["iteration"]
    rl = phase.name == "rl"
    if rl:
        job.rl_s += entry["seconds"]
        job.n_updates += int(metrics.get("n_updates", 0))
        job.rounds.append({k: metrics[k] for k in ROUND_KEYS if k in metrics} | {"sampled": job.sampled})
    else:  # the trunk's training: an SFT (or a RECAP) phase
        job.sft_s += entry["seconds"]
        job.n_updates += cfg.sft_steps
        if phase.episodes:
            job.rounds.append({k: v for k, v in metrics.items() if k.startswith(CONSOLIDATION_KEYS)}
                              | {"sampled": job.sampled})
    if following is None:  # x = the budget spent, by the methods that spend none too
        job.episodes = max(job.episodes, (it + 1) * cfg.rounds * cfg.episodes_per_round)
    if cfg.evaluate_at == "round" or following is None or (cfg.evaluate_at == "phase" and following.name != phase.name):
        extra = {"sampled": job.sampled} if phase.episodes else {}
        if "n_online_successes" in metrics:
            extra.update(n_online_successes=metrics["n_online_successes"], n_expert=metrics.get("n_expert"))
        job.point(f"it{it} rl{phase.round}" if rl else f"it{it} sft", **extra)


def recipe_run(job: Job, config):
    """The method's recipe on the job's trainer, with in-process rollouts as its episode source."""
    from learner.recipes.inprocess import InProcessRun
    from learner.recipes.registry import recipe_for

    return InProcessRun(job.trainer, recipe_for(config.learner), collect=lambda ph, it: _collect(job, ph, it),
                        record_demos=lambda ph, it: _record_demos(job, ph, it),
                        on_published=lambda *a: _published(job, *a))


# --- a job: start (or resume), iterate, save after each iteration
_SAVED = "bench_state"  # in the run dir: the job at the end of its last finished iteration
_JOB_FIELDS = ("iterations_done", "episodes", "robot_s", "episode_seed", "rl_s", "sft_s", "wall_s", "n_updates", "curve",
               "rounds")


def _save(job: Job) -> None:
    """The job as it is now (an iteration just ended): counters, curve, the generators, the RL
    algorithm's state (optimizers included) and the episodes and version to go back to."""
    import torch

    from episodes.durable import write_atomic, write_json_atomic
    from learner.trainer import RL_STATE_FILE

    d = job.run_dir / _SAVED
    d.mkdir(exist_ok=True)
    rl_state = job.run_dir / RL_STATE_FILE
    buf = io.BytesIO()
    torch.save({"g": job.g.get_state(), "trainer_g": job.trainer.generator.get_state(),
                "rl_state": rl_state.read_bytes() if rl_state.exists() else None}, buf)
    write_atomic(d / "state.pt", buf.getvalue())
    episodes = sorted(str(p.relative_to(job.run_dir / "episodes"))
                      for p in (job.run_dir / "episodes").glob("*/*") if (p / "meta.json").exists())
    write_json_atomic(d / "job.json", {**{k: getattr(job, k) for k in _JOB_FIELDS}, "version": job.trainer.version,
                                       "episodes_kept": episodes})  # last: the commit point


def _restore(job: Job, config) -> bool:
    """Back to the end of the last finished iteration (False: none, start from Stage 0). Episodes and
    versions of the iteration that was cut short are dropped: the rerun makes them again."""
    import torch

    from learner.trainer import RL_STATE_FILE, Trainer

    d = job.run_dir / _SAVED
    if not (d / "job.json").exists():
        return False
    saved = json.loads((d / "job.json").read_text())
    keep = set(saved["episodes_kept"])
    for p in (job.run_dir / "episodes").glob("*/*"):
        if str(p.relative_to(job.run_dir / "episodes")) not in keep:
            shutil.rmtree(p)
    shutil.rmtree(job.run_dir / "features", ignore_errors=True)
    state = torch.load(d / "state.pt", weights_only=True)  # tensors, numbers, bytes: never arbitrary pickle
    if state["rl_state"] is not None:
        (job.run_dir / RL_STATE_FILE).write_bytes(state["rl_state"])
    job.trainer = Trainer(config, job.run_dir)
    job.trainer.resume(saved["version"])
    job.trainer.generator.set_state(state["trainer_g"])
    job.g.set_state(state["g"])
    for k in _JOB_FIELDS:  # a job saved before a field existed keeps its default
        setattr(job, k, saved.get(k, getattr(job, k)))
    return True


def run_job(cfg: LearningBenchConfig, out: Path, method: str, seed: int) -> dict:
    """One method from the seed's Stage 0 (or from its last finished iteration); returns the curve,
    timings and update counts."""
    import torch

    from learner.trainer import Trainer

    torch.set_num_threads(1)
    job = Job(cfg, out, method, seed, g=torch.Generator().manual_seed(seed), episode_seed=200_000 + 100_000 * seed)
    config = _learner_config(cfg, job.run_dir, seed)
    config.learner.algorithm = METHODS[method].recipe
    config.learner = config.learner.updated(**METHODS[method].learner)
    t_job = time.time()
    if _restore(job, config):
        print(f"{job.tag} resumed after iteration {job.iterations_done} of {cfg.iterations}", flush=True)
    else:
        shutil.rmtree(job.run_dir, ignore_errors=True)
        shutil.copytree(out / "stage0" / f"s{seed}", job.run_dir)
        job.trainer = Trainer(config, job.run_dir)
        job.trainer.resume()
        stage0_eval = json.loads((out / "stage0" / f"s{seed}" / "done.json").read_text()).get("eval")
        job.curve = [{"episodes": 0, "robot_h": 0.0, "phase": "stage0", "version": job.trainer.version,
                      **(stage0_eval or _evaluate(job.trainer.policy, cfg))}]
        print(f"{job.tag} start: {job.curve[0]}", flush=True)
    job.run = recipe_run(job, config)
    for it in range(job.iterations_done, cfg.iterations):
        t_it = time.time()
        job.run.iteration(it)
        job.iterations_done, job.wall_s = it + 1, job.wall_s + time.time() - t_it
        _save(job)
        _progress(cfg, out, "iteration", method, seed, it, time.time() - t_it)
    train_s = job.rl_s + job.sft_s  # training only: collection and evaluation excluded
    n_rounds, n_sft = len(job.rounds), sum(1 for p in job.curve if p["phase"].endswith("sft"))
    result = {"method": method, "seed": seed, "curve": job.curve, "rounds": job.rounds, "train_s": train_s,
              "rl_s_per_round": job.rl_s / n_rounds if n_rounds else None,
              "sft_s_per_phase": job.sft_s / n_sft if n_sft else None,
              "wall_s": job.wall_s, "n_updates": job.n_updates,
              "updates_per_s": job.n_updates / train_s if train_s > 0 else 0.0, "config": dataclasses.asdict(cfg),
              "learner": config.learner.model_dump()}
    shutil.rmtree(job.run_dir / "features", ignore_errors=True)  # caches are the bulk of a run dir
    print(f"{job.tag} this session {time.time() - t_job:.0f} s", flush=True)
    return result


def _job(args) -> dict:
    cfg, out, method, seed = args
    from episodes.durable import write_json_atomic

    result = run_job(cfg, out, method, seed)
    write_json_atomic(out / "results" / f"{method}-s{seed}.json", result)
    return result


# --- progress: one line per finished cell (a Stage 0, or one iteration of a method and seed), with an ETA
def table_cells(cfg: LearningBenchConfig) -> list[tuple[str, int, int]]:
    """Every unit of work of the table: ("stage0", seed, 0) and (method, seed, iteration)."""
    return [("stage0", s, 0) for s in cfg.seeds] + [(m, s, it) for s in cfg.seeds for m in cfg.methods
                                                    for it in range(cfg.iterations)]


def _progress(cfg: LearningBenchConfig, out: Path, kind: str, method: str, seed: int, it: int, seconds: float) -> None:
    """Log a finished cell to OUT/progress.jsonl and print the table's progress and ETA: the cells
    left, each at the mean time of that method's finished cells (of all cells while it has none),
    over `jobs` workers."""
    log = out / "progress.jsonl"
    with open(log, "a") as f:
        f.write(json.dumps({"method": method, "seed": seed, "iteration": it, "seconds": round(seconds, 1),
                            "time": time.time()}) + "\n")
    done = {}
    for line in log.read_text().splitlines():
        e = json.loads(line)
        done[(e["method"], e["seed"], e["iteration"])] = e["seconds"]
    todo = [c for c in table_cells(cfg) if c not in done]
    per_method = {}
    for (m, _, _), sec in done.items():
        per_method.setdefault(m, []).append(sec)
    mean_all = float(np.mean(list(done.values())))
    left = sum(np.mean(per_method.get(m, [mean_all])) for m, _, _ in todo) / max(1, cfg.jobs)
    print(f"progress: {len(done)}/{len(done) + len(todo)} cells done (last: {method} seed {seed}"
          f"{'' if kind == 'stage0' else f' iteration {it}'}, {seconds:.0f} s); ETA {left / 3600:.1f} h "
          f"(~{time.strftime('%H:%M', time.gmtime(time.time() + left))} UTC)", flush=True)


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
        for column in LANGUAGE_COLUMNS:  # results from before these columns lack them
            final = np.array([r["curve"][-1][column] for r in rs if column in r["curve"][-1]])
            if len(final):
                row[column] = {"final": float(final.mean()), "final_std": float(final.std())}
        # robot-hours spent at the end (results from before robot time was counted lack it)
        hours = [r["curve"][-1]["robot_h"] for r in rs if "robot_h" in r["curve"][-1]]
        row["robot_h"] = float(np.mean(hours)) if hours else None
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
             f"Stage 0 → final; budget {cfg.budget} online episodes or extra demos; robot h = their executed "
             f"steps at the control period + {RESET_S_NOTE})", "",
             "| method | demo tasks | RL-only tasks | held-out tasks | demo tasks, held-out phrasing | "
             "demo tasks, another task's instruction | robot h | lowest (demo tasks) | RL s / round | "
             "RL updates / round | ms / RL update | SFT s / phase | train s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def sec(v):
        return "–" if v is None else f"{v:.1f}"

    for method, row in summary.items():
        cells = [f"{row[s]['start']:.2f} → **{row[s]['final']:.2f}** ± {row[s]['final_std']:.2f}" for s in SPLITS]
        cells += [f"{row[c]['final']:.2f} ± {row[c]['final_std']:.2f}" if c in row else "–" for c in LANGUAGE_COLUMNS]
        cells.append("–" if row.get("robot_h") is None else f"{row['robot_h']:.2f}")
        lines.append(f"| {METHODS[method].label} (`{method}`) | {' | '.join(cells)} | {row['demo']['lowest']:.2f} | "
                     f"{sec(row['rl_s_per_round'])} | {sec(row['rl_updates_per_round'])} | "
                     f"{sec(row['rl_ms_per_update'])} | {sec(row['sft_s_per_phase'])} | {row['train_s']:.0f} |")
    if cfg.backend == "metaworld":  # the paper's own MetaWorld figures, for comparison (not measured here)
        lines.append(f"| {PAPER_METAWORLD['method']} | {' | '.join(PAPER_METAWORLD[s] for s in SPLITS)} "
                     "| – | – | – | – | – | – | – | – | – |")
    online = {m: row["online"] for m, row in summary.items() if "online" in row}
    if online:
        lines += ["", "Online episodes per run (mean over seeds): successes / episodes sampled, per split",
                  "", "| method | demo tasks | RL-only tasks | mean steps per episode |", "|---|---|---|---|"]
        for method, o in online.items():
            cells = [f"{o[s]['successes']:.0f} / {o[s]['episodes']:.0f}" for s in ("demo", "rl")]
            lines.append(f"| `{method}` | {' | '.join(cells)} | {o['mean_steps']:.1f} |")
    return "\n".join(lines)


def partial_curves(cfg: LearningBenchConfig, out: Path) -> list[dict]:
    """The curves so far of the jobs with no result yet (saved at the end of each finished
    iteration), as result-like dicts: a running table's plot shows them too."""
    partial = []
    for m in cfg.methods:
        for s in cfg.seeds:
            saved = out / "runs" / f"{m}-s{s}" / _SAVED / "job.json"
            if not (out / "results" / f"{m}-s{s}.json").exists() and saved.exists():
                partial.append({"method": m, "seed": s, "curve": json.loads(saved.read_text())["curve"],
                                "partial": True})
    return partial


X_AXES = {"episodes": "online episodes (or extra demos) spent",
          "robot_h": "robot-hours spent (executed steps x control period + a reset per episode)"}


def plot(results: list[dict], cfg: LearningBenchConfig, path: Path, x_axis: str = "episodes") -> None:
    """Greedy success against `x_axis` (X_AXES: episodes or robot-hours) per split, one line per method: at each point the
    mean over the seeds that reached it (finished jobs and, in a running table, the finished
    iterations of the others), the band their min..max; the seed count is marked where it changes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(SPLITS), figsize=(5 * len(SPLITS), 4), sharey=True)
    titles = {"demo": "tasks with demos", "rl": "tasks trained online only", "held_out": "held-out tasks"}
    for method in cfg.methods:
        rs = [r for r in results if r["method"] == method and all(x_axis in p for p in r["curve"])]
        if not rs:
            continue
        # robot-hours differ between seeds (episode lengths do): a seed's i-th point is averaged with
        # the others' i-th points, at their mean x
        xs, groups = _curve_points(rs, x_axis)
        for ax, split in zip(axes, SPLITS, strict=True):
            at = [[p[split] for p in pts] for pts in groups]
            ys = np.array([np.mean(v) for v in at])
            line, = ax.plot(xs, ys, marker="o", ms=3, label=METHODS[method].label)
            ax.fill_between(xs, [min(v) for v in at], [max(v) for v in at], color=line.get_color(), alpha=0.15)
            counts = [len(v) for v in at]
            for i, (x, y, n) in enumerate(zip(xs, ys, counts, strict=True)):
                if i == 0 or n != counts[i - 1]:
                    ax.annotate(f"{n}s", (x, y), textcoords="offset points", xytext=(2, 4), fontsize=6,
                                color=line.get_color())
    running = any(r.get("partial") for r in results)
    finish_split_figure(fig, axes, [titles[s] for s in SPLITS], X_AXES[x_axis],
                        f"{cfg.backend} {cfg.task}: mean over the seeds at each point (Ns: N seeds from "
                        f"there on), band = min..max" + (" -- RUNNING: unfinished jobs included" if running else ""),
                        path)


def _curve_points(rs: list[dict], x: str) -> tuple[list[float], list[list[dict]]]:
    """(x of each point, the seeds' points there): by episodes, points at equal x; by robot-hours, each
    seed's i-th point (they differ in hours, not in phase), at their mean x."""
    if x == "episodes":
        xs = sorted({p["episodes"] for r in rs for p in r["curve"]})
        return xs, [[p for r in rs for p in r["curve"] if p["episodes"] == v] for v in xs]
    n = max(len(r["curve"]) for r in rs)
    groups = [[r["curve"][i] for r in rs if i < len(r["curve"])] for i in range(n)]
    return [float(np.mean([p[x] for p in g])) for g in groups], groups


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
# Fields that choose which cells a run computes, or how many at once, but not what any cell holds
# (a cell is one method and seed, its Stage 0 its seed's): a table resumes with a method or seed
# added -- RECAP joining the MetaWorld table -- or on more workers.
SELECTION_FIELDS = frozenset({"methods", "seeds", "jobs"})


def _config_differences(saved: dict, cfg: LearningBenchConfig) -> list[str]:
    """The fields in which a table's saved configuration and `cfg` differ, other than
    SELECTION_FIELDS. A field the saved one does not have (added to the bench since) counts only if
    `cfg` sets it away from its default, so a table started before a new option resumes under the
    code that has it."""
    now = json.loads(json.dumps(dataclasses.asdict(cfg)))
    defaults = json.loads(json.dumps(dataclasses.asdict(LearningBenchConfig())))
    return sorted(k for k in (set(saved) | set(now)) - SELECTION_FIELDS
                  if (saved[k] != now.get(k) if k in saved else now[k] != defaults.get(k)))


DEFERRED = {"ppo_whole"}  # with --jobs 1, run after every other method's seeds


def _job_order(cfg: LearningBenchConfig) -> list[str]:
    """The methods in the order a seed runs them: the SFT-only control first either way (a table
    cut short has each seed's control next to its methods: it is the cheapest job), then with one
    worker the cheap methods first, with more the longest first (parallel workers finish together)."""
    cheap_first = ["sft_only", "irevla_ppo", "irevla_sac", "recap", "awr", "sft_extra_demos", "rl_only",
                   "ppo_whole"]
    longest_first = ["sft_only", "irevla_sac", "ppo_whole", "recap", "awr", "irevla_ppo", "sft_extra_demos",
                     "rl_only"]
    order = cheap_first if cfg.jobs == 1 else longest_first
    return sorted(cfg.methods, key=lambda m: order.index(m) if m in order else len(order))


def run(cfg: LearningBenchConfig, out: Path, fresh: bool = False) -> dict:
    if cfg.evaluate_at not in ("round", "phase", "iteration"):
        raise ValueError(f"evaluate_at {cfg.evaluate_at!r}: one of round, phase, iteration")
    unknown = set(cfg.methods) - set(METHODS)
    if unknown:
        raise ValueError(f"unknown method(s) {sorted(unknown)}; choose from {list(METHODS)}")
    # one run per OUT at a time (a second would redo and overwrite the first's jobs); the lock sits
    # beside OUT so that --fresh cannot delete it, and is held (flock) until this run ends, however
    out.parent.mkdir(parents=True, exist_ok=True)
    lock_path = out.parent / f".{out.name}.lock"
    with open(lock_path, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise SystemExit(f"{out} is in use by another bench.learning run (it holds {lock_path})") from None
        return _run(cfg, out, fresh)


def _run(cfg: LearningBenchConfig, out: Path, fresh: bool) -> dict:
    if fresh:
        shutil.rmtree(out, ignore_errors=True)
    (out / "results").mkdir(parents=True, exist_ok=True)
    saved = out / "config.json"
    if saved.exists():
        differ = _config_differences(json.loads(saved.read_text()), cfg)
        if differ:
            raise SystemExit(f"{out} holds results of another configuration ({saved}: {', '.join(differ)} differ); "
                             "use --fresh or another --out")
    saved.write_text(json.dumps(dataclasses.asdict(cfg), indent=1))
    t0 = time.time()
    ctx = multiprocessing.get_context("spawn")
    todo = [(cfg, out, m, s) for s in cfg.seeds for m in _job_order(cfg)
            if not (out / "results" / f"{m}-s{s}.json").exists()]
    if cfg.jobs == 1:
        # seed by seed (Stage 0, then its jobs): a run cut short has its methods on its first seeds
        # and no Stage 0 it did not use; whole-model PPO (which may run on fewer seeds) last of all
        last = [j for j in todo if j[2] in DEFERRED]
        phases = [([s], [j for j in todo if j[3] == s and j not in last]) for s in cfg.seeds] + [([], last)]
    else:  # every Stage 0 first, then the jobs longest first, so parallel workers finish together
        phases = [(list(cfg.seeds), todo)]
    done = 0
    print(f"{len(todo)} job(s) to run or finish; progress lines count cells (a Stage 0, or one iteration of "
          f"a method and seed): {len(table_cells(cfg))} in all", flush=True)
    with ProcessPoolExecutor(max_workers=cfg.jobs, mp_context=ctx) as pool:
        for seeds, jobs in phases:
            for f in as_completed([pool.submit(stage0, cfg, out, s) for s in seeds]):
                f.result()
            if seeds:
                print(f"stage 0 ready for seeds {seeds} ({time.time() - t0:.0f} s)", flush=True)
            for f in as_completed([pool.submit(_job, job) for job in jobs]):
                r, done = f.result(), done + 1
                final = ", ".join(f"{s} {r['curve'][-1][s]:.2f}" for s in SPLITS)
                print(f"done {done}/{len(todo)}: {r['method']} seed {r['seed']} in {r['wall_s']:.0f} s "
                      f"(final {final}; {time.time() - t0:.0f} s this session)", flush=True)
    return report(cfg, out, t0)


def format_per_seed(cfg: LearningBenchConfig, out: Path) -> str:
    """Per (method, seed) with a result or a finished iteration: its curve (Stage 0 → each
    evaluation), the online successes its SFT phases trained on, its wall time; the jobs still
    running are marked, so a table cut short shows its partial results next to the finished ones."""
    rows = []
    for m in cfg.methods:
        for s in cfg.seeds:
            result, saved = out / "results" / f"{m}-s{s}.json", out / "runs" / f"{m}-s{s}" / _SAVED / "job.json"
            if result.exists():
                job = json.loads(result.read_text())
                done, state = cfg.iterations, ""  # a result is written only after the last iteration
            elif saved.exists():
                job = json.loads(saved.read_text())
                done, state = job["iterations_done"], " (running)"
            else:
                continue
            curve = job["curve"]
            cells = [" → ".join(f"{p[split]:.2f}" for p in curve) for split in SPLITS]
            fed = [str(p.get("n_online_successes")) for p in curve if p.get("n_online_successes") is not None]
            rows.append(f"| `{m}` | {s} | {done} / {cfg.iterations}{state} | {curve[-1]['episodes']} | "
                        f"{' | '.join(cells)} | {', '.join(fed) or '–'} | {job['wall_s']:.0f} |")
    if not rows:
        return ""
    cells_done = sum(1 for _ in (out / "progress.jsonl").open()) if (out / "progress.jsonl").exists() else 0
    return "\n".join([f"Per seed ({cells_done} of {len(table_cells(cfg))} cells done; greedy success at Stage 0 "
                      f"and after each evaluation, {cfg.eval_n} episodes per split)", "",
                      "| method | seed | iterations | episodes (the x of the curves) | demo tasks | RL tasks | held-out tasks | "
                      "online successes in SFT | wall s |", "|---|---|---|---|---|---|---|---|---|", *rows])


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
    per_seed = format_per_seed(cfg, out)
    if per_seed:
        table += "\n\n" + per_seed
    (out / "table.md").write_text(table + "\n")
    total = None if t0 is None else time.time() - t0
    (out / "summary.json").write_text(json.dumps({"config": dataclasses.asdict(cfg), "methods": summary,
                                                  "total_s": total, "not_run": missing}, indent=1))
    plot(results + partial_curves(cfg, out), cfg, out / "learning_curves.png")
    plot(results + partial_curves(cfg, out), cfg, out / "learning_curves_robot_h.png", x_axis="robot_h")
    print("\n" + table)
    print(f"\ncurves: {out / 'learning_curves.png'}" + ("" if total is None else f"; total {total:.0f} s"))
    return summary


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.learning", description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/bench-learning")
    p.add_argument("--smoke", action="store_true", help="tiny sizes (one seed, a few episodes): a smoke test")
    p.add_argument("--metaworld", action="store_true",
                   help="the table on MetaWorld (task set `bench`, sizes for its longer episodes; docs/metaworld.md)")
    p.add_argument("--metaworld-long", action="store_true",
                   help="the long MetaWorld table (900 online episodes per method and seed; hours)")
    p.add_argument("--fresh", action="store_true", help="discard earlier results in --out")
    p.add_argument("--report", action="store_true", help="only the table and curves from the results in --out")
    p.add_argument("--methods", nargs="+", choices=list(METHODS), default=None)
    p.add_argument("--seeds", nargs="+", type=int, default=None)
    for f in dataclasses.fields(LearningBenchConfig):
        kind = {"int": int, "float": float, "str": str}.get(f.type)
        if kind is not None:
            p.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=kind, default=None)
    args = p.parse_args(argv)
    values = dict(METAWORLD_LONG) if args.metaworld_long else dict(METAWORLD) if args.metaworld else {}
    if args.smoke:
        values.update(SMOKE)
        if args.metaworld or args.metaworld_long:
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
