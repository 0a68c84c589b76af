"""`vlaloop demo` (`make demo`): the main job on the embedded default.

Starts a server, a learner and several mock robots as separate processes with real sockets,
bootstraps the tiny model from scripted demos, runs a few iRe-VLA iterations (RL phase -> SFT
phase) with the mock's success predicate standing in for the operator, and ends with a
success-rate table per phase and a PNG curve in the run directory. Nothing here is hard-coded:
every number printed is what this run measured.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import yaml

from deployment.config import DeploymentConfig

# Learner settings of the demo where the config (YAML/env) does not set them (bench/demo_tuning.py,
# docs/demo.md): a short Stage 0 (on reach_slots 80+ steps already reach the ~60 % plateau that the
# loop ends at, so a longer one leaves nothing to show) and enough episodes per round for PPO.
DEMO_LEARNER = {"bootstrap_steps": 60, "episodes_per_round": 24}


def configure(parser) -> None:
    parser.add_argument("--robots", type=int, default=2, help="mock robots (separate processes)")
    parser.add_argument("--iterations", type=int, default=2, help="iRe-VLA iterations (RL phase + SFT phase)")
    parser.add_argument("--task", default="reach_slots", help="mock task (reach_slots: reach on a slot layout)")
    parser.add_argument("--bootstrap-steps", type=int, default=None,
                        help=f"Stage 0 steps (demo default {DEMO_LEARNER['bootstrap_steps']}, see docs/demo.md)")
    parser.add_argument("--episodes-per-round", type=int, default=None,
                        help=f"sampled episodes per RL round (demo default {DEMO_LEARNER['episodes_per_round']})")
    parser.add_argument("--demos", type=int, default=None, help="scripted demonstrations to record")
    parser.add_argument("--rate-hz", type=float, default=None, help="control rate of the mock robots")
    parser.add_argument("--eval-episodes", type=int, default=50, help="greedy episodes per before/after eval")
    parser.add_argument("--timeout-min", type=float, default=14.0, help="stop everything after this long")
    parser.add_argument("--keep", action="store_true", help="keep an existing run dir (default: start fresh)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ProcessGroup:
    """Child processes with their logs in run_dir/logs; all of them stopped on exit."""

    def __init__(self, log_dir: Path):
        self.log_dir = log_dir
        self.procs: dict[str, subprocess.Popen] = {}
        log_dir.mkdir(parents=True, exist_ok=True)

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None,
              to_terminal: bool = False) -> subprocess.Popen:
        """Start `vlaloop <argv>`; its output goes to logs/<name>.log (or to this terminal)."""
        out = None if to_terminal else open(self.log_dir / f"{name}.log", "ab")
        proc = subprocess.Popen([sys.executable, "-m", "vlaloop.cli", *argv], stdout=out,
                                stderr=None if to_terminal else subprocess.STDOUT,
                                env={**os.environ, **(env or {})}, start_new_session=True)
        self.procs[name] = proc
        return proc

    def dead(self) -> list[str]:
        return [n for n, p in self.procs.items() if p.poll() is not None]

    def stop(self, names: list[str] | None = None, timeout: float = 10.0) -> None:
        chosen = [n for n in (names or list(self.procs)) if n in self.procs]
        for n in chosen:
            if self.procs[n].poll() is None:
                self.procs[n].send_signal(signal.SIGTERM)
        deadline = time.time() + timeout
        for n in chosen:
            try:
                self.procs[n].wait(max(0.1, deadline - time.time()))
            except subprocess.TimeoutExpired:
                os.killpg(self.procs[n].pid, signal.SIGKILL)
                self.procs[n].wait()
            del self.procs[n]


def _write_config(run_dir: Path, config: DeploymentConfig, args, server_port: int, learner_port: int) -> Path:
    data = config.model_dump()
    data["run_dir"] = str(run_dir)
    data["server"].update(host="127.0.0.1", port=server_port, auto_label=True)
    data["learner"].update(bind=f"tcp://127.0.0.1:{learner_port}", max_iterations=args.iterations)
    for key, value in DEMO_LEARNER.items():
        if getattr(args, key) is not None:
            data["learner"][key] = getattr(args, key)
        elif key not in config.learner.model_fields_set:
            data["learner"][key] = value
    data["robot"].update(server_url=f"http://127.0.0.1:{server_port}",
                         learner_addr=f"tcp://127.0.0.1:{learner_port}", task=args.task)
    if args.rate_hz:
        data["robot"]["rate_hz"] = args.rate_hz
    path = run_dir / "demo.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _read_status(run_dir: Path) -> dict:
    try:
        return json.loads((run_dir / "status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _progress_line(status: dict, n_online: int, elapsed: float) -> str:
    sr = status.get("success_rate", {})
    recent = sr.get("recent") if isinstance(sr, dict) else None
    rate = f"{recent:.0%}" if isinstance(recent, (int, float)) else "-"
    prog = status.get("progress")
    prog_s = f" {prog:.0%}" if isinstance(prog, (int, float)) else ""
    return (f"[{elapsed:6.0f}s] phase={status.get('phase', '?')}{prog_s} iteration={status.get('iteration', 0)} "
            f"round={status.get('round', 0)} policy=v{status.get('policy_version', '?')} "
            f"episodes={n_online} recent success={rate}")


def evaluate_latest(run_dir: Path, config: DeploymentConfig, task: str, n: int) -> dict:
    """Greedy success of the registry's LATEST version on n seeded mock episodes (in-process, the
    same seeds every time, disjoint from the demo seeds)."""
    from learner.evaluate import success_rate
    from vla.policy import Policy
    from vla.registry import CheckpointRegistry

    policy = Policy.load(CheckpointRegistry(run_dir / "checkpoints"), None, device=config.model.device)
    return {"version": policy.version, "n": n, "success_rate": success_rate(policy, n=n, task=task)}


def _raise_on_sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def run(args, config: DeploymentConfig) -> int:
    from episodes.store import EpisodeStore

    signal.signal(signal.SIGTERM, _raise_on_sigterm)  # `finally` below stops every child process
    run_dir = Path(config.run_dir)
    if run_dir.exists() and not args.keep:
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    server_port, learner_port = _free_port(), _free_port()
    cfg_path = _write_config(run_dir, config, args, server_port, learner_port)
    cfg = ["-c", str(cfg_path)]
    store = EpisodeStore(run_dir / "episodes")
    group = ProcessGroup(run_dir / "logs")
    print(f"vlaloop demo: run dir {run_dir}, config {cfg_path}", flush=True)
    try:
        # 1. scripted demonstrations (the mock's expert), 2. Stage 0 bootstrap
        from sim.mock.demos import record_demos

        n_demos = args.demos or config.learner.bootstrap_demos
        print(f"\n[1/5] recording {n_demos} scripted '{args.task}' demonstrations", flush=True)
        record_demos(store, task=args.task, n=n_demos, seed=config.learner.seed,
                     image_size=config.model.image_size, cameras=tuple(config.model.cameras), progress=True)
        print("\n[2/5] Stage 0: bootstrapping the tiny model from the demonstrations", flush=True)
        rc = group.start("bootstrap", [*cfg, "learn", "--bootstrap"], to_terminal=True).wait()
        group.procs.pop("bootstrap")
        if rc != 0:
            print(f"bootstrap failed (exit {rc})", file=sys.stderr)
            return rc
        # 3. greedy evaluation of the bootstrapped policy (same seeds as the final evaluation)
        print(f"\n[3/5] greedy evaluation of the bootstrapped policy ({args.eval_episodes} episodes)", flush=True)
        before = evaluate_latest(run_dir, config, args.task, args.eval_episodes)
        print(f"      bootstrapped policy v{before['version']}: {before['success_rate']:.0%} success", flush=True)
        # 4. the online loop: server, learner and robots as separate processes
        print(f"\n[4/5] online learning: server :{server_port}, learner :{learner_port}, {args.robots} mock robots"
              f" -- operator page: http://127.0.0.1:{server_port}/", flush=True)
        group.start("server", [*cfg, "serve"])
        group.start("learner", [*cfg, "learn"])
        for i in range(args.robots):
            group.start(f"robot{i}", [*cfg, "robot", "--backend", "mock"],
                        env={"VLALOOP_ROBOT__ROBOT_ID": f"mock{i}", "VLALOOP_ROBOT__SEED": str(1000 * (i + 1))})
        deadline = t0 + args.timeout_min * 60
        last = 0.0
        while time.time() < deadline:
            if "learner" in group.dead():
                break
            crashed = [n for n in group.dead() if n != "learner"]
            if crashed:
                print(f"process(es) {crashed} exited; see {run_dir / 'logs'}", file=sys.stderr)
                return 1
            if time.time() - last > 5:
                status = _read_status(run_dir)  # the learner counts episodes; no rescan of the store
                per_source = status.get("episodes_per_source", {})
                n_robot = per_source.get("online", 0) + per_source.get("eval", 0)
                print(_progress_line(status, n_robot, time.time() - t0), flush=True)
                last = time.time()
            time.sleep(0.5)
        learner_rc = group.procs["learner"].poll()
        if learner_rc is None:
            print("demo timed out before the learner finished its iterations; reporting what was measured",
                  flush=True)
        elif learner_rc != 0:
            print(f"learner exited with {learner_rc}; see {run_dir / 'logs' / 'learner.log'}", file=sys.stderr)
        group.stop()
        # 5. final greedy evaluation and the report
        print(f"\n[5/5] greedy evaluation of the final policy ({args.eval_episodes} episodes)", flush=True)
        after = evaluate_latest(run_dir, config, args.task, args.eval_episodes)
        from vlaloop.report import write_report

        report = write_report(run_dir, before=before, after=after)
        print(report, flush=True)
        print(f"\ndemo finished in {time.time() - t0:.0f} s; curve: {run_dir / 'success_curve.png'}", flush=True)
        return 0
    except KeyboardInterrupt:
        print("\ninterrupted: stopping server, learner and robots", file=sys.stderr)
        return 130
    finally:
        group.stop()
