"""Demonstrations recorded by teleop on MetaWorld train a Stage 0 that comes off zero.

    python -m bench.teleop_demos_metaworld --run-dir runs/mw-teleop [--task door-close] [--demos 12]
        [--steps 250] [--eval-n 5]

The recording path a lab uses, on the MetaWorld backend: the real server (uvicorn in a thread) with
no checkpoint (it serves teleop only), the real learner ingest (ZeroMQ ROUTER -> EpisodeStore), the
real robot client with `robot.record_demos` (record mode: the policy is never asked, only the
operator's steps are stored). The operator at the device is a stand-in: an intervention source that
drives the scene's scripted expert action every tick, through the client's SafetyFilter and teleop
deadline like a gamepad or a SpaceMouse would; the server's auto-label (the env's success check)
stands in for the operator's S. Stage 0 then trains on the stored demos alone
(`learner.bootstrap.min_demos`, nothing scripted recorded by the learner) and the greedy success of
the published v1 is measured on fresh seeds, next to uniform random actions on the same seeds.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

import sim.metaworld  # noqa: F401  (MUJOCO_GL before mujoco)

EVAL_SEED = 10_000


class ExpertAtTheDevice:
    """Stand-in for a person driving a device at the robot: the scene's expert action, fresh every tick."""

    name = "expert"

    def __init__(self, expert):
        self.expert = expert

    def command(self, state, proposed=None):
        from interface.teleop import TeleopAction

        return TeleopAction(np.asarray(self.expert(0.0), dtype=np.float64), self.name, time.monotonic())


def record(run_dir: Path, task: str, demos: int, rate_hz: float) -> list[dict]:
    """``demos`` successful demonstrations through the server, the robot client and the ingest."""
    from bench.harness import ServerThread
    from calibration.schema import metaworld_calibration
    from deployment.config import DeploymentConfig
    from deployment.robot import RobotConfig
    from deployment.server import ServerConfig
    from episodes.store import EpisodeStore
    from learner.ingest import Ingest
    from robot_client.cli import RobotClient, build_rig

    config = DeploymentConfig(run_dir=str(run_dir), server=ServerConfig(auto_label=True))
    store = EpisodeStore(run_dir / "episodes")
    ingest = Ingest(store, config.config_hash(), bind="tcp://127.0.0.1:0")
    endpoint = ingest.start()
    cfg = RobotConfig(robot_id="mw0", backend="metaworld", task=task, learner_addr=endpoint,
                      outbox_dir=str(run_dir / "outbox"), rate_hz=rate_hz, max_steps=500, record_demos=demos,
                      scene_reset="auto", realtime_priority=0, operator="expert stand-in")
    cal = metaworld_calibration()
    with ServerThread(config) as server:
        cfg = cfg.model_copy(update={"server_url": server.url})
        rig = build_rig(cfg, config.model.cameras, config.model.image_size, cal)
        client = RobotClient(cfg, rig, cal, cfg.outbox_dir, config.config_hash(), [ExpertAtTheDevice(rig.expert)])

        def stop_when_recorded() -> None:
            while client.runner.demos_recorded < demos and not client.runner.stopped:
                time.sleep(0.2)
            client.stop()

        threading.Thread(target=stop_when_recorded, daemon=True).start()
        # the control loop in this thread: MuJoCo's EGL context stays with the thread that evaluates later
        client.run()
        client.close(30)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and len(_demos(store)) < demos:
        time.sleep(0.2)
    ingest.stop()
    return _demos(store)


def _demos(store) -> list[dict]:
    return [m for m in store.list_episodes(source="expert") if m.get("purpose") == "demo" and m["outcome"] == "success"]


def random_success(task: str, seeds: list[int]) -> float:
    from sim.metaworld.vec import MetaWorldVec

    rng = np.random.default_rng(0)
    with MetaWorldVec(len(seeds), seeds=seeds, task=task) as vec:
        while not vec.done.all():
            a = rng.uniform(-0.01, 0.01, (vec.n, 7))
            a[:, 3:6] = 0
            a[:, 6] = rng.uniform(0, 1, vec.n)
            vec.step(a)
        return float(vec.succeeded.mean())


def main(argv: list[str] | None = None) -> int:
    import torch

    from deployment.config import load_config
    from learner.evaluate import success_rate
    from learner.trainer import Trainer

    p = argparse.ArgumentParser(prog="bench.teleop_demos_metaworld", description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", default=None, help="default: a temporary directory")
    p.add_argument("--task", default="door-close")
    p.add_argument("--demos", type=int, default=12)
    p.add_argument("--steps", type=int, default=250, help="Stage 0 SFT steps")
    p.add_argument("--eval-n", type=int, default=5)
    p.add_argument("--rate", type=float, default=30.0, help="the robot client's control rate, Hz")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    run_dir = Path(args.run_dir or tempfile.mkdtemp(prefix="mw-teleop-"))
    t0 = time.time()
    demos = record(run_dir, args.task, args.demos, args.rate)
    steps = sum(m["n_steps"] for m in demos)
    drivers = sorted({d for m in demos for d in m["extra"]["demo"]["devices"]})
    print(f"{len(demos)} teleop demos recorded ({steps} operator steps, devices {drivers}) [{time.time() - t0:.0f} s]",
          flush=True)
    config = load_config(None, environ={}, run_dir=str(run_dir))
    config.robot.backend, config.robot.task = "metaworld", args.task
    config.learner.bootstrap.steps, config.learner.bootstrap.min_demos = args.steps, args.demos
    trainer = Trainer(config, run_dir)
    assert trainer.has_demos()
    trainer.bootstrap(progress=False)
    print(f"Stage 0 trained ({args.steps} steps) [{time.time() - t0:.0f} s]", flush=True)
    seeds = list(range(EVAL_SEED, EVAL_SEED + args.eval_n))
    row = {"task": args.task, "demos": len(demos), "operator_steps": steps, "sft_steps": args.steps,
           "stage0_greedy": success_rate(trainer.policy, args.eval_n, args.task, EVAL_SEED, backend="metaworld"),
           "random": random_success(args.task, seeds), "seconds": round(time.time() - t0)}
    print(json.dumps(row), flush=True)
    (run_dir / "teleop_demos_metaworld.json").write_text(json.dumps(row, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
