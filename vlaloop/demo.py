"""`vlaloop demo` (`make demo`): a robot learns a new task on the job, with an operator stepping in.

Starts a server, a learner and two mock robots as separate processes with real sockets. The
robots' episodes draw from the tasks with expert demos (reach the red or green block) and one new
task with no demos at all (reach the blue block: the mock's ``rl`` split). Stage 0 learns from the
demos only, so it never reaches the blue block. Then the iRe-VLA loop runs: head-only SAC rounds
on the robots' sampled episodes, LoRA SFT on demos + successes + the operator's segments, each
version hot-swapped into the server. A scripted operator inside each robot client (the mock's
expert, robot_client/scripted_operator.py) takes the arm when the policy leaves the expert's path,
within 10 % of steps and 2 takeovers per episode, through the same SafetyFilter as the policy; its
steps are stored as interventions, which SAC puts in the demo half of its batches.

The control runs in the same run, from the same Stage 0: the same SFT phases on the demos alone
(no online data, no operator). Every checkpoint is evaluated greedily on the same fixed seeds per
task. The report (report.md, report.json, success_curve.png in the run directory) shows greedy
success per task against robot episodes for the loop and the control, the operator's takeovers per
episode and seconds, and one headline line. Nothing here is hard-coded: every number printed is
what this run measured.

The learner's phases are counted in episodes, never cut by a clock: a slow or busy machine takes
longer and still completes every iteration. ``--timeout-min`` is only a safety net against a hung
run; hitting it is a failure (exit 1, the report marked incomplete), not a result.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

from deployment.config import DeploymentConfig
from deployment.learner import is_set, set_setting

# Learner settings of the demo where the config (YAML/env) does not set them (docs/demo.md): the
# short Stage 0 of bench/demo_tuning.py, and the sizes bench/interventions.py measured for SAC with
# a scripted operator on the new task (docs/interventions.md), scaled to what 2 robots collect in
# minutes: 2 iterations of 3 SAC rounds x 48 episodes + 200 SFT steps.
DEMO_LEARNER = {"bootstrap_steps": 60, "episodes_per_round": 48, "rl_rounds_per_phase": 3, "sft_steps": 200,
                "algorithm": "sac"}
DEMO_SPLIT = "demo"  # the tasks Stage 0 has demos of (sim/mock/tasks.py); the new task is split "rl"
ROBOT_SPLIT = "train"  # what the robots' episodes draw from: the demo tasks and the new task
EVAL_SEED = 10_000  # greedy evaluation seeds, the same for every checkpoint, the control and every run
TASK_SPLITS = {"demo": "tasks with demos", "rl": "new task (no demos)"}


def configure(parser) -> None:
    parser.add_argument("--robots", type=int, default=2, help="mock robots (separate processes)")
    parser.add_argument("--iterations", type=int, default=2, help="iRe-VLA iterations (RL phase + SFT phase)")
    parser.add_argument("--task", default="reach_slots", help="mock task (reach_slots: reach on a slot layout)")
    parser.add_argument("--bootstrap-steps", type=int, default=None,
                        help=f"Stage 0 steps (demo default {DEMO_LEARNER['bootstrap_steps']}, see docs/demo.md)")
    parser.add_argument("--episodes-per-round", type=int, default=None,
                        help=f"sampled episodes per RL round (demo default {DEMO_LEARNER['episodes_per_round']})")
    parser.add_argument("--demos", type=int, default=None, help="scripted demonstrations to record (demo tasks)")
    parser.add_argument("--rate-hz", type=float, default=None, help="control rate of the mock robots")
    parser.add_argument("--seed", type=int, default=0,
                        help="seeds the demos, the learner (Stage 0's, SAC's and SFT's sampling) and the robots' "
                             "episodes; the model's initial weights (model.seed) and the greedy evaluation seeds "
                             "stay fixed")
    parser.add_argument("--operator", choices=["scripted", "none"], default="scripted",
                        help="scripted: the mock's expert takes over when the policy goes wrong (<= 10 %% of "
                             "steps, <= 2 takeovers per episode); none: the loop without an operator")
    parser.add_argument("--eval-episodes", type=int, default=50,
                        help="greedy episodes per task and checkpoint (fixed seeds)")
    parser.add_argument("--timeout-min", type=float, default=120.0,
                        help="safety net against a hung run: stop and FAIL after this long (phases are "
                             "counted in episodes; a busy machine just takes longer)")
    parser.add_argument("--no-control", action="store_true",
                        help="skip the control (the same SFT phases on the demos alone; the report then cannot "
                             "say what the online data and the operator added)")
    parser.add_argument("--torch-threads", type=int, default=1,
                        help="intra-op threads per process unless OMP_NUM_THREADS is set (the demo runs a "
                             "learner, a server and robots at once; more threads spin against each other on "
                             "a shared machine, bench/torch_threads.py)")
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
    data["learner"].update(bind=f"tcp://127.0.0.1:{learner_port}", max_iterations=args.iterations, seed=args.seed)
    if args.demos:  # exactly the demos recorded here: the learner's own top-up would draw the new task too
        data["learner"]["bootstrap"]["demos"] = args.demos
    for key, value in DEMO_LEARNER.items():
        if getattr(args, key, None) is not None:
            set_setting(data["learner"], key, getattr(args, key))
        elif not is_set(config.learner, key):
            set_setting(data["learner"], key, value)
    data["robot"].update(server_url=f"http://127.0.0.1:{server_port}",
                         learner_addr=f"tcp://127.0.0.1:{learner_port}", task=args.task, split=ROBOT_SPLIT,
                         teleop="scripted" if args.operator == "scripted" else config.robot.teleop)
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


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def estimate_remaining_s(log: dict, status: dict, lc, iterations: int, after_loop_s: float,
                         control_phases: int = 0, now: float | None = None) -> float | None:
    """Seconds left, from the phases the learner recorded so far: the mean RL round and SFT phase
    (SFT before the first one ends: Stage 0's time per step x SFT steps), the open phase's elapsed
    time taken off, plus `after_loop_s` (final evaluation) and `control_phases` more SFT phases
    (the control). None until one RL round ended or the current one is a tenth done."""
    now = time.time() if now is None else now
    ended = [p for p in log["phases"] if p["ended"] is not None]
    open_phase = next((p for p in reversed(log["phases"]) if p["ended"] is None), None)
    rl_s = _mean([p["ended"] - p["started"] for p in ended if p["phase"] == "rl"])
    sft_s = _mean([p["ended"] - p["started"] for p in ended if p["phase"] == "sft"])
    boot = next((p for p in ended if p["phase"] == "bootstrap"), None)
    if sft_s is None and boot is not None:
        sft_s = (boot["ended"] - boot["started"]) / lc.bootstrap.steps * lc.sft.steps
    progress = status.get("progress") if status.get("phase") == "rl" else None
    first_round = open_phase is not None and open_phase["phase"] == "rl" and open_phase["round"] == 0
    if rl_s is None and first_round and (progress or 0) > 0.1 / lc.rl_rounds_per_phase:
        rl_s = (now - open_phase["started"]) / (progress * lc.rl_rounds_per_phase)
    if rl_s is None or sft_s is None:
        return None
    rl_left = iterations * lc.rl_rounds_per_phase - sum(p["phase"] == "rl" for p in ended)
    sft_left = iterations - sum(p["phase"] == "sft" for p in ended) + control_phases
    in_open = now - open_phase["started"] if open_phase is not None else 0.0
    typical_open = {"rl": rl_s, "sft": sft_s}.get(open_phase["phase"], 0.0) if open_phase else 0.0
    return max(0.0, rl_left * rl_s + sft_left * sft_s - min(in_open, typical_open)) + after_loop_s


def _eta(seconds: float | None) -> str:
    if seconds is None:
        return "ETA: measuring"
    return f"ETA ~{seconds / 60:.0f} min" if seconds >= 90 else f"ETA ~{seconds:.0f} s"


def _progress_line(status: dict, n_robot: int, elapsed: float, iterations: int, rounds: int,
                   eta_s: float | None) -> str:
    sr = status.get("success_rate", {})
    recent = sr.get("recent") if isinstance(sr, dict) else None
    rate = f"{recent:.0%}" if isinstance(recent, (int, float)) else "-"
    phase, it = status.get("phase", "?"), min(int(status.get("iteration", 0)) + 1, iterations)
    where = {"rl": f"RL round {min(int(status.get('round', 0)) + 1, rounds)}/{rounds}", "sft": "SFT"}.get(phase, phase)
    detail = status.get("detail", "")
    waiting = f" ({detail.split('(')[-1]}" if phase == "rl" and "waiting" in detail else ""
    return (f"[{elapsed:6.0f}s] iteration {it}/{iterations} {where}{waiting} policy=v{status.get('policy_version', '?')}"
            f" robot episodes={n_robot} recent success={rate} | {_eta(eta_s)}")


def evaluate_policy(policy, task: str, n: int) -> dict:
    """Greedy success of ``policy`` per task split on n seeded mock episodes each (the same seeds for
    every checkpoint, disjoint from the demo seeds)."""
    from learner.evaluate import success_rate

    return {"version": policy.version, "n": n,
            **{split: success_rate(policy, n=n, task=task, seed=EVAL_SEED, split=split) for split in TASK_SPLITS}}


def evaluate_version(registry_dir: Path, config: DeploymentConfig, version: int | None, task: str, n: int) -> dict:
    from vla.policy import Policy
    from vla.registry import CheckpointRegistry

    policy = Policy.load(CheckpointRegistry(registry_dir), version, device=config.model.device)
    return evaluate_policy(policy, task, n)


def sft_only_control(run_dir: Path, config: DeploymentConfig, stage0: int, phases: int, task: str, n: int) -> dict:
    """The control for the loop: from the same Stage 0 version, `phases` iterations of the sft_only
    recipe (learner/recipes/: the loop's SFT steps, seeds and settings) on the expert demos alone -- no RL round, no online episode, no
    operator -- each followed by greedy success per task on the same seeds. Runs in run_dir/control
    with a copy of the demos."""
    from episodes.store import EpisodeStore
    from learner.recipes.inprocess import InProcessRun
    from learner.recipes.registry import recipe_for
    from learner.trainer import Trainer
    from vla.registry import CheckpointRegistry, load_model, publish

    control_dir = run_dir / "control"
    shutil.rmtree(control_dir, ignore_errors=True)
    store, demos = EpisodeStore(run_dir / "episodes"), EpisodeStore(control_dir / "episodes")
    experts = store.list_episodes(source="expert")
    for m in experts:
        shutil.copytree(store.episode_dir(m["robot_id"], m["episode_id"]), demos.episode_dir(m["robot_id"],
                                                                                             m["episode_id"]))
    # Stage 0 re-published as the control registry's first version, so the Trainer resumes it as is
    model, norm, meta = load_model(CheckpointRegistry(run_dir / "checkpoints"), stage0, config.model.device)
    # with its trained backbone copied in: a registry loads a backbone only from inside itself or the
    # configured model dirs, never from another run's registry
    publish(CheckpointRegistry(control_dir / "checkpoints"), model, norm, kind="full", parent=stage0,
            phase="bootstrap", metrics=meta.get("metrics") or {}, save_backbone=meta.get("backbone_dir") == "backbone")
    trainer = Trainer(config.model_copy(update={"run_dir": str(control_dir)}), control_dir)
    trainer.resume()
    t0, curve = time.time(), []

    def evaluated(phase, entry, metrics, following) -> None:
        curve.append({"phase": len(curve) + 1, **evaluate_policy(trainer.policy, task, n)})
        print(f"      control SFT phase {len(curve)}/{phases} done ({config.learner.sft.steps} steps on "
              f"{len(experts)} demos): " + ", ".join(f"{TASK_SPLITS[k]} {curve[-1][k]:.0%}" for k in TASK_SPLITS),
              flush=True)

    control = InProcessRun(trainer, recipe_for(config.learner, "sft_only"), on_published=evaluated)
    for it in range(phases):
        control.iteration(it)
    return {"curve": curve, "n": n, "phases": phases, "sft_steps": config.learner.sft.steps, "demos": len(experts),
            "seconds": time.time() - t0}


class ControlRun:
    """The control in a thread of this process, while the online loop runs in the other processes
    (it needs only Stage 0 and the demos); ``result()`` waits for it."""

    def __init__(self, *args):
        self._result: dict | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=args, name="control", daemon=True)
        self._thread.start()

    def _run(self, *args) -> None:
        try:
            self._result = sft_only_control(*args)
        except BaseException as e:  # noqa: BLE001 - reported by result(), in the main thread
            self._error = e

    def result(self) -> dict:
        self._thread.join()
        if self._error is not None:
            raise RuntimeError(f"the control failed: {self._error}") from self._error
        return self._result


def _raise_on_sigterm(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def _start_online(group: ProcessGroup, cfg: list[str], robots: int, seed: int) -> None:
    group.start("server", [*cfg, "serve"])
    group.start("learner", [*cfg, "learn"])
    for i in range(robots):
        group.start(f"robot{i}", [*cfg, "robot", "--backend", "mock"],
                    env={"VLALOOP_ROBOT__ROBOT_ID": f"mock{i}",
                         "VLALOOP_ROBOT__SEED": str(100_000 * seed + 1000 * (i + 1))})


def _watch_online(group: ProcessGroup, run_dir: Path, args, lc, deadline: float, t0: float,
                  after_loop_s: float) -> str:
    """Progress every 5 s until the learner exits. Returns "done", "learner failed", "crashed" or
    "safety net" (the deadline passed first)."""
    from episodes.status import PHASE_LOG, read_phase_log

    last = 0.0
    while time.time() < deadline:
        if "learner" in group.dead():
            return "done" if group.procs["learner"].poll() == 0 else "learner failed"
        crashed = [n for n in group.dead() if n != "learner"]
        if crashed:
            print(f"process(es) {crashed} exited; see {run_dir / 'logs'}", file=sys.stderr)
            return "crashed"
        if time.time() - last > 5:
            status = _read_status(run_dir)  # the learner counts episodes; no rescan of the store
            per_source = status.get("episodes_per_source", {})
            n_robot = per_source.get("online", 0) + per_source.get("eval", 0)
            eta = estimate_remaining_s(read_phase_log(run_dir / PHASE_LOG), status, lc, args.iterations, after_loop_s)
            print(_progress_line(status, n_robot, time.time() - t0, args.iterations, lc.rl_rounds_per_phase, eta),
                  flush=True)
            last = time.time()
        time.sleep(0.5)
    return "safety net"


def run(args, config: DeploymentConfig) -> int:
    from episodes.store import EpisodeStore

    signal.signal(signal.SIGTERM, _raise_on_sigterm)  # `finally` below stops every child process
    os.environ.setdefault("OMP_NUM_THREADS", str(args.torch_threads))  # this process and every child
    import torch

    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))  # the control and the evaluations run here
    run_dir = Path(config.run_dir)
    if run_dir.exists() and not args.keep:
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    server_port, learner_port = _free_port(), _free_port()
    cfg_path = _write_config(run_dir, config, args, server_port, learner_port)
    demo_config = DeploymentConfig.model_validate(yaml.safe_load(cfg_path.read_text()))  # what the learner runs
    lc = demo_config.learner
    cfg = ["-c", str(cfg_path), "--log-file", "none"]  # the group keeps each child's output in logs/<name>.log
    store = EpisodeStore(run_dir / "episodes")
    group = ProcessGroup(run_dir / "logs")
    steps = 6
    print(f"vlaloop demo: run dir {run_dir}, config {cfg_path}, seed {args.seed}", flush=True)
    try:
        # 1. scripted demonstrations of the demo tasks only (the mock's expert), 2. Stage 0 bootstrap
        from sim.mock.demos import record_demos

        n_demos = lc.bootstrap.demos
        print(f"\n[1/{steps}] recording {n_demos} scripted '{args.task}' demonstrations of the tasks with demos "
              f"(none of the new task)", flush=True)
        record_demos(store, task=args.task, n=n_demos, seed=1000 * lc.seed, split=DEMO_SPLIT,
                     image_size=config.model.image_size, cameras=tuple(config.model.cameras), progress=True)
        print(f"\n[2/{steps}] Stage 0: bootstrapping the tiny model from the demonstrations", flush=True)
        rc = group.start("bootstrap", [*cfg, "learn", "--bootstrap"], to_terminal=True).wait()
        group.procs.pop("bootstrap")
        if rc != 0:
            print(f"bootstrap failed (exit {rc})", file=sys.stderr)
            return rc
        # 3. greedy evaluation of the bootstrapped policy (the seeds of every later evaluation)
        print(f"\n[3/{steps}] greedy evaluation of Stage 0 ({args.eval_episodes} episodes per task)", flush=True)
        t_eval = time.time()
        stage0 = evaluate_version(run_dir / "checkpoints", config, None, args.task, args.eval_episodes)
        eval_s = time.time() - t_eval
        print(f"      Stage 0 v{stage0['version']}: " + _rates(stage0), flush=True)
        # 4. the online loop: server, learner and robots as separate processes, until the learner is done;
        #    the control trains meanwhile in this process
        control = None if args.no_control else ControlRun(run_dir, demo_config, stage0["version"], args.iterations,
                                                          args.task, args.eval_episodes)
        who = "a scripted operator in each robot client" if args.operator == "scripted" else "no operator"
        print(f"\n[4/{steps}] online learning, {args.iterations} iterations of {lc.rl_rounds_per_phase} "
              f"{lc.algorithm.upper()} rounds x {lc.episodes_per_round} episodes + SFT ({lc.sft.steps} steps), "
              f"{who}: server :{server_port}, learner :{learner_port}, {args.robots} mock robots"
              + ("" if args.no_control else f"; the control ({args.iterations} SFT phases on the demos alone) "
                 "trains meanwhile") + f" -- operator page: http://127.0.0.1:{server_port}/", flush=True)
        _start_online(group, cfg, args.robots, args.seed)
        after_loop_s = eval_s * 2 * args.iterations  # the checkpoints evaluated after the loop
        outcome = _watch_online(group, run_dir, args, lc, t0 + args.timeout_min * 60, t0, after_loop_s)
        group.stop()
        if outcome == "crashed":
            return 1
        return _finish(run_dir, demo_config, args, stage0, control, outcome, t0, steps)
    except KeyboardInterrupt:
        print("\ninterrupted: stopping server, learner and robots", file=sys.stderr)
        return 130
    finally:
        group.stop()


def _rates(ev: dict) -> str:
    return ", ".join(f"{TASK_SPLITS[k]} {ev[k]:.0%}" for k in TASK_SPLITS)


def loop_checkpoints(run_dir: Path) -> list[dict]:
    """The loop's versions worth a greedy evaluation: the end of each RL phase and each SFT phase,
    with the sampled robot episodes the RL rounds had trained on by then (the learner's phase record)."""
    from episodes.status import PHASE_LOG, read_phase_log

    out, trained = [], 0
    phases = [p for p in read_phase_log(run_dir / PHASE_LOG)["phases"] if p["version"] is not None]
    for i, p in enumerate(phases):
        trained += len(p.get("trained_on") or []) if p["phase"] == "rl" else 0
        last_rl = p["phase"] == "rl" and (i + 1 == len(phases) or phases[i + 1]["phase"] != "rl")
        if p["phase"] == "sft" or last_rl:
            out.append({"version": int(p["version"]), "phase": p["phase"], "iteration": p["iteration"],
                        "episodes": trained})
    return out


def _finish(run_dir: Path, config: DeploymentConfig, args, stage0: dict, control: ControlRun | None, outcome: str,
            t0: float, steps: int) -> int:
    """Greedy evaluation of the loop's checkpoints, the control's result and the report. An
    unfinished loop is reported as a failure: what was done, no headline, exit 1."""
    from vlaloop.report import write_report

    complete = outcome == "done"
    if outcome == "safety net":
        print(f"\nFAILED: the learner had not finished its {args.iterations} iterations after {args.timeout_min:g} "
              f"min (--timeout-min, a safety net against a hung run); see {run_dir / 'logs'}", file=sys.stderr)
    elif outcome == "learner failed":
        print(f"\nFAILED: the learner exited with an error; see {run_dir / 'logs' / 'learner.log'}", file=sys.stderr)
    checkpoints = loop_checkpoints(run_dir)
    print(f"\n[5/{steps}] greedy evaluation of the loop's {len(checkpoints)} checkpoints "
          f"({args.eval_episodes} episodes per task, the same seeds as Stage 0)", flush=True)
    curve = [{"phase": "bootstrap", "iteration": None, "episodes": 0, **stage0}]
    for c in checkpoints:
        curve.append({**c, **evaluate_version(run_dir / "checkpoints", config, c["version"], args.task,
                                              args.eval_episodes)})
        print(f"      v{c['version']} ({c['phase'].upper()} of iteration {c['iteration'] + 1}, "
              f"{c['episodes']} sampled episodes trained on): {_rates(curve[-1])}", flush=True)
    control_result = None
    if control is not None:
        print(f"\n[6/{steps}] the control: {args.iterations} SFT phases on the demos alone from Stage 0", flush=True)
        control_result = control.result()
    print(f"\n[{steps}/{steps}] report", flush=True)
    note = f"The learner did not finish ({outcome}) after {time.time() - t0:.0f} s."
    period_s = 1.0 / config.robot.rate_hz
    report = write_report(run_dir, curve=curve, control=control_result, rl_rounds=config.learner.rl_rounds_per_phase,
                          new_task=_new_task_colours(args.task), period_s=period_s, operator=args.operator,
                          seed=args.seed, wall_s=time.time() - t0, complete=complete, note=note)
    print(report, flush=True)
    print(f"\ndemo {'finished' if complete else 'FAILED'} in {time.time() - t0:.0f} s; report: "
          f"{run_dir / 'report.md'}, curve: {run_dir / 'success_curve.png'}", flush=True)
    return 0 if complete else 1


def _new_task_colours(task: str) -> tuple[str, ...]:
    from sim.mock.tasks import LAYOUT_TASKS, split_colors

    return split_colors(LAYOUT_TASKS.get(task, task), "rl")
