"""`python -m bench.lerobot_roundtrip`: does Stage 0 learn as well from demos that went through
LeRobot's format as from the originals?

For each learner seed: record the mock's scripted demos (seeds 0..n-1) into run A, export A as a
LeRobot dataset (`lerobot_format.exporter`, AV1 video as LeRobot writes it), import the dataset into
an empty run B (`lerobot_format.importer`); then Stage 0 (`Trainer.bootstrap`, same config and seed)
on A and on B, and greedy success of each on the same held-out episode seeds (10000..). Prints one
row per seed and run, the frames' round-trip error, and the mean of each run's success.

    python -m bench.lerobot_roundtrip --task reach_slots --seeds 0 1 2 --demos 40 --steps 80 --eval-n 100
    python -m bench.lerobot_roundtrip --frames-only --cameras front,wrist --seeds 0 --demos 20
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from deployment.config import load_config
from episodes.store import EpisodeStore
from learner.evaluate import success_rate
from learner.trainer import Trainer
from lerobot_format.exporter import ExportConfig, export_run
from lerobot_format.importer import ImportConfig, import_dataset
from sim.mock.demos import record_demos


def config_for(run_dir: Path, seed: int, demos: int, steps: int, task: str, cameras: list[str]):
    cfg = load_config(None, environ={}, run_dir=str(run_dir))
    cfg.robot.task, cfg.model.cameras = task, cameras
    cfg.learner.seed, cfg.learner.bootstrap.demos, cfg.learner.bootstrap.steps = seed, demos, steps
    return cfg


def frame_error(a: Path, b: Path) -> dict:
    """|original - imported| per camera over every frame of every demo (grey levels): the mean, the
    worst frame's mean, the worst frame's 99th percentile, the largest single difference."""
    sa, sb = EpisodeStore(a / "episodes"), EpisodeStore(b / "episodes")
    errs: dict[str, list] = {}
    for ma, mb in zip(sa.list_episodes(), sb.list_episodes(), strict=True):
        ea, eb = sa.load(ma["robot_id"], ma["episode_id"]), sb.load(mb["robot_id"], mb["episode_id"])
        for s, t in zip(ea.steps, eb.steps, strict=True):
            for cam in ea.cameras:
                e = np.abs(ea.frame(s["step"], cam).astype(int) - eb.frame(t["step"], cam).astype(int))
                errs.setdefault(cam, []).append((e.mean(), np.percentile(e, 99), e.max()))
    return {cam: {"frames": len(v), "mean": round(float(np.mean([x[0] for x in v])), 2),
                  "worst_mean": round(float(max(x[0] for x in v)), 2), "worst_p99": float(max(x[1] for x in v)),
                  "max": int(max(x[2] for x in v))} for cam, v in errs.items()}


def stage0(run_dir: Path, cfg, eval_n: int, task: str) -> dict:
    t = time.time()
    trainer = Trainer(cfg, run_dir)
    trainer.bootstrap(progress=False)
    meta = trainer.registry.read_meta(trainer.version)
    train_s = time.time() - t
    rate = success_rate(trainer.policy, n=eval_n, task=task)
    return {"greedy": rate, "loss_train": meta["metrics"].get("loss_train"),
            "loss_eval": meta["metrics"].get("loss_eval"), "train_s": round(train_s, 1)}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.lerobot_roundtrip", description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="learner seeds")
    p.add_argument("--demos", type=int, default=40, help="scripted demos (the default learner.bootstrap.demos)")
    p.add_argument("--steps", type=int, default=400, help="Stage 0 steps (the default learner.bootstrap.steps)")
    p.add_argument("--eval-n", type=int, default=50, help="greedy evaluation episodes (seeds 10000..)")
    p.add_argument("--task", default="reach")
    p.add_argument("--cameras", default="front", help="comma-separated mock cameras (front,wrist)")
    p.add_argument("--frames-only", action="store_true", help="only the round trip's frame error, no Stage 0")
    p.add_argument("--work-dir", default=None, help="keep the runs and the dataset here (default: a temp dir)")
    p.add_argument("--vcodec", default="libsvtav1", help="export video codec (libsvtav1: LeRobot's default)")
    p.add_argument("--crf", type=int, default=30, help="export video quality (30: LeRobot's default)")
    p.add_argument("--pix-fmt", default="yuv420p", help="export colour sampling (yuv420p: LeRobot's default)")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    work = Path(args.work_dir or tempfile.mkdtemp(prefix="lerobot-roundtrip-"))
    shutil.rmtree(work, ignore_errors=True)
    rows = []
    for seed in args.seeds:
        a, b, ds = work / f"s{seed}-original", work / f"s{seed}-imported", work / f"s{seed}-dataset"
        cams = args.cameras.split(",")
        cfg_a = config_for(a, seed, args.demos, args.steps, args.task, cams)
        record_demos(EpisodeStore(a / "episodes"), task=args.task, n=args.demos, seed=0,
                     image_size=cfg_a.model.image_size, cameras=tuple(cfg_a.model.cameras))
        export_run(a, ds, ExportConfig(filter="demos", vcodec=args.vcodec, crf=args.crf, pix_fmt=args.pix_fmt,
                                       progress=False))
        import_dataset(ds, b, ImportConfig(progress=False))
        err = frame_error(a, b)
        if args.frames_only:
            print(json.dumps({"seed": seed, "frame_error": err}), flush=True)
            continue
        for name, run_dir in (("original", a), ("imported", b)):
            cfg = config_for(run_dir, seed, args.demos, args.steps, args.task, cams)
            row = {"seed": seed, "run": name, **stage0(run_dir, cfg, args.eval_n, args.task)}
            if name == "imported":
                row["frame_error"] = err
            rows.append(row)
            print(json.dumps(row), flush=True)
    for name in ("original", "imported") if rows else ():
        rates = [r["greedy"] for r in rows if r["run"] == name]
        print(f"{name}: greedy success {np.mean(rates):.3f} (per seed {rates})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
