"""Can the tiny VLA learn MetaWorld tasks from pixels by SFT alone? (Stage 0 of the results bench.)

    python -m bench.metaworld_sft_probe --run-dir runs/mw-probe [--tasks ...] [--demos 20]
        [--steps 300] [--eval-n 10] [--held-out faucet-close handle-press]

Records ``--demos`` scripted demos per task where the run dir lacks them (``vlaloop demos
--backend metaworld`` does the same), trains Stage 0 on all of them (the full tiny model from its
random init, as ``vlaloop learn --bootstrap`` does), then prints the greedy success per task on
``--eval-n`` fresh seeds (10000..), next to the scripted expert's on the same seeds (the ceiling)
and a random policy's (the floor), all measured in this run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

import sim.metaworld  # noqa: F401  (MUJOCO_GL before mujoco)

EVAL_SEED = 10_000


def _baseline(task: str, seeds: list[int], expert: bool) -> float:
    from sim.metaworld.vec import MetaWorldVec

    rng = np.random.default_rng(0)
    with MetaWorldVec(len(seeds), seeds=seeds, task=task) as vec:
        while not vec.done.all():
            if expert:
                vec.step(vec.expert_actions(noise=0.0))
            else:
                a = rng.uniform(-0.01, 0.01, (vec.n, 7))
                a[:, 3:6] = 0
                a[:, 6] = rng.uniform(0, 1, vec.n)
                vec.step(a)
        return float(vec.succeeded.mean())


def main(argv: list[str] | None = None) -> int:
    import torch

    from deployment.config import load_config
    from episodes.store import EpisodeStore
    from learner.evaluate import success_rate
    from learner.trainer import Trainer
    from sim.metaworld.demos import record_demos
    from sim.metaworld.tasks import TASK_SETS

    p = argparse.ArgumentParser(prog="bench.metaworld_sft_probe", description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", required=True)
    p.add_argument("--tasks", nargs="+", default=list(TASK_SETS["bench"]["demo"]))
    p.add_argument("--held-out", nargs="*", default=["faucet-close", "handle-press"])
    p.add_argument("--demos", type=int, default=20, help="per task")
    p.add_argument("--steps", type=int, default=300, help="Stage 0 SFT steps")
    p.add_argument("--eval-n", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    run_dir = Path(args.run_dir)
    config = load_config(None, environ={}, run_dir=str(run_dir))
    config.robot.backend, config.robot.task = "metaworld", args.tasks[0]
    lc = config.learner
    lc.seed, lc.bootstrap.steps = args.seed, args.steps
    t0 = time.time()
    store = EpisodeStore(run_dir / "episodes")
    for task in args.tasks:
        record_demos(store, task, args.demos, image_size=config.model.image_size,
                     cameras=tuple(config.model.cameras))
    lc.bootstrap.demos = len(store.list_episodes(source="expert"))
    print(f"{lc.bootstrap.demos} demos ready [{time.time() - t0:.0f} s]", flush=True)
    trainer = Trainer(config, run_dir)
    if trainer.resume() is None:
        trainer.bootstrap(progress=False)
    print(f"stage 0 trained ({args.steps} steps) [{time.time() - t0:.0f} s]", flush=True)
    seeds = list(range(EVAL_SEED, EVAL_SEED + args.eval_n))
    rows = []
    for task in [*args.tasks, *args.held_out]:
        sft = success_rate(trainer.policy, args.eval_n, task, EVAL_SEED, backend="metaworld")
        rows.append({"task": task, "trained": task in args.tasks, "sft": sft,
                     "expert": _baseline(task, seeds, True), "random": _baseline(task, seeds, False)})
        print(json.dumps(rows[-1]), f"[{time.time() - t0:.0f} s]", flush=True)
    print(f"\nStage 0 on MetaWorld: {len(args.tasks)} tasks x {args.demos} demos, {args.steps} SFT steps, "
          f"seed {args.seed}; greedy success on {args.eval_n} seeds per task\n")
    print("| task | trained on | tiny VLA after SFT | scripted expert | random |\n|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['task']} | {'demos' if r['trained'] else 'never'} | {r['sft']:.2f} | {r['expert']:.2f} | "
              f"{r['random']:.2f} |")
    (run_dir / "probe.json").write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
