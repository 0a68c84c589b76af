"""Gated promotion end to end with real processes: a good version serves two mock robots
(`vlaloop robot`, subprocesses) through a real server (uvicorn, gate on, auto labels from the mock's
success check) while the learner's ingest (`vlaloop learn --no-train`) stores every episode. Then a
valid checkpoint that behaves badly is published: v1's files with the action head's bias edited to
drive the arm up and back, away from every block. The gate serves it to its canary share only,
rolls it back within the cap, marks it refused in the registry, and the fleet's success recovers.

The good version needs no training: its head is a proportional controller from the state to the
blue block's home slot (task `reach_slots`, split `rl`: every episode is "reach the blue block"),
so it succeeds whenever the block's jitter leaves it within reach tolerance of the slot (44 % of
seeds). The robots act greedily, so every outcome is a function of the episode's seed: the test
checks each episode's label against the outcome the seed's layout implies (`expected_outcome`),
not a success rate over a dozen episodes (which failed by chance about one run in five).
The measured numbers are printed (`pytest -s`) and quoted in docs/promotion.md.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from standins import free_port, wait_for

REPO = Path(__file__).resolve().parents[2]
ROBOT_TOKEN, OPERATOR = "robot-token-e2e", "operator-token-e2e"
BLUE_SLOT = (0.60, 0.12, 0.02)  # the mock's reach_slots home of the blue block (tasks.COLOR_SLOTS), low
OFFSET = 5.0  # GELU(x) = x * Phi(x) equals x to 1e-6 for x > 4.5: the controller's hidden units ride on it
Z_GAIN = 1 / 3  # the controller's descent, relative to its x-y gain
BEFORE, AFTER = 12, 12  # episodes measured before the bad version and after its rollback
# a block this close to the edge of the reach tolerance could go either way (the hand may still be a
# few mm from the slot when it comes down to reach height): such seeds are not checked
BOUNDARY_MARGIN = 0.004
MIN_MOVES = 24  # of the 30 steps, the arm executed at least this many actions (else the server was late)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]


@torch.no_grad()
def set_reach_controller(model, target, log_std: float = -6.0) -> None:
    """Make the action head a proportional controller to ``target`` from the state alone (the
    image is ignored): every action of a chunk moves 1/H of the way from the observed end effector
    to the target in x and y, 1/(3H) in z, gripper open. With the identity normalizer the head works
    in robot units. The slow descent lands the hand on the slot from above: x and y converge
    several times faster than z, so the hand is within reach height only over the slot, and an
    episode's outcome depends on the block's distance to the slot alone, not on where the straight
    path from home happened to pass (which depends on when each chunk arrived)."""
    first, second, last = model.heads.mean[0], model.heads.mean[2], model.heads.mean[4]
    features = first.in_features - model.config.state_dim  # the head's input: [features, state]
    chunk, dims = model.config.chunk, model.config.action_dim
    for layer in (first, second, last):
        layer.weight.zero_()
        layer.bias.zero_()
    for axis in range(3):  # hidden unit = OFFSET + (target - ee) on this axis, through both layers
        first.weight[axis, features + axis] = -1.0
        first.bias[axis] = OFFSET + target[axis]
        second.weight[axis, axis] = 1.0
        gain = Z_GAIN if axis == 2 else 1.0
        for k in range(chunk):
            last.weight[k * dims + axis, axis] = gain / chunk
            last.bias[k * dims + axis] = -gain * OFFSET / chunk
    for k in range(chunk):
        last.bias[k * dims + dims - 1] = 1.0  # gripper open
    model.heads.log_std.fill_(log_std)


def drive_away(head: dict[str, torch.Tensor], chunk: int, dims: int) -> dict[str, torch.Tensor]:
    """The bad head: the last mean layer ignores its input and moves the arm 3 cm per step back
    (-x) and up (+z), away from every block."""
    weight, bias = head["mean.4.weight"].clone(), head["mean.4.bias"].clone()
    for k in range(chunk):
        weight[k * dims: k * dims + 3] = 0.0
        bias[k * dims: k * dims + 3] = torch.tensor([-0.03, 0.0, 0.03])
    return {**head, "mean.4.weight": weight, "mean.4.bias": bias}


def publish_edited_head(registry, source: int, edit) -> int:
    """A complete, checksummed version made from ``source``'s files with an edited head, published
    the way a learner publishes (rename into place, then LATEST)."""
    version = max(registry.versions()) + 1
    tmp = registry.root / f".tmp-v{version:06d}-{os.getpid()}-edit"
    shutil.copytree(registry.path(source), tmp)
    meta = json.loads((tmp / "meta.json").read_text())
    save_file(edit(load_file(str(tmp / "head.safetensors"))), str(tmp / "head.safetensors"))
    data = (tmp / "head.safetensors").read_bytes()
    meta["files"]["head.safetensors"] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    meta.update(version=version, parent=source, phase="rl", base_version=version)
    (tmp / "meta.json").write_text(json.dumps(meta))
    os.rename(tmp, registry.path(version))
    registry._write_latest(version)
    return version


class Procs:
    def __init__(self, env: dict, logs: Path) -> None:
        self.env, self.logs, self.procs = env, logs, []

    def start(self, name: str, *args: str) -> None:
        log = open(self.logs / f"{name}.log", "w")
        p = subprocess.Popen([sys.executable, "-m", "vlaloop.cli", "--log-level", "WARNING", *args], cwd=REPO,
                             env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append((name, p, log))

    def check_alive(self) -> None:
        for name, p, _ in self.procs:
            assert p.poll() is None, f"{name} exited {p.returncode}:\n{(self.logs / f'{name}.log').read_text()[-3000:]}"

    def stop(self) -> None:
        for _, p, log in reversed(self.procs):  # robots first: they flush their outbox to the ingest
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=5)
            log.close()


def episodes(store) -> list[dict]:
    """Labelled online episodes, in the order they finished."""
    metas = [m for m in store.list_episodes() if m.get("outcome") in ("success", "failure")]
    return sorted(metas, key=lambda m: m.get("finished", 0))


def started_after(store, t: float) -> list[dict]:
    """Labelled episodes whose first observation was captured after time ``t`` (so every request
    of theirs reached the server after ``t``; the first action's execution time is not enough: on a
    loaded machine a reply asked for before a rollback can be executed seconds after it)."""
    out = []
    for m in episodes(store):
        steps = store.load(m["robot_id"], m["episode_id"]).steps
        if steps and steps[0].get("t_capture", 0) > t:
            out.append(m)
    return out


def rate(metas: list[dict]) -> float:
    return sum(m["outcome"] == "success" for m in metas) / max(1, len(metas))


def expected_outcome(seed: int) -> str | None:
    """What the good controller's episode of ``seed`` ends as: it parks the hand on the blue slot,
    so success iff the seed's jitter left the blue block within reach tolerance of the slot. None
    for a block within BOUNDARY_MARGIN of the tolerance (either outcome is right)."""
    from sim.mock.tasks import REACH_XY_TOL, sample_episode

    episode = sample_episode(seed, "reach_slots", "rl")
    block = episode.state.blocks[episode.task.target]
    distance = float(np.hypot(block[0] - BLUE_SLOT[0], block[1] - BLUE_SLOT[1]))
    if abs(distance - REACH_XY_TOL) < BOUNDARY_MARGIN:
        return None
    return "success" if distance <= REACH_XY_TOL else "failure"


def mislabelled(metas: list[dict]) -> list[tuple]:
    """Episodes of the good version whose outcome is not the one their seed implies (a failure the
    server starved of actions, fewer than MIN_MOVES executed, is not judged: the hand never got
    down; a success ends the episode early, at about 15 steps, and is always judged)."""
    wrong = []
    for m in metas:
        extra = m.get("extra", {})
        holds = sum(v for k, v in extra.get("counters", {}).items() if k.startswith("hold"))
        expected = expected_outcome(int(extra["seed"]))
        starved = m["outcome"] == "failure" and m["n_steps"] - holds < MIN_MOVES
        if expected is not None and not starved and m["outcome"] != expected:
            wrong.append((extra["seed"], m["outcome"], expected, m["n_steps"], holds))
    return wrong


def test_a_bad_version_is_rolled_back_and_the_fleets_success_recovers(tmp_path):
    from bench.harness import ServerThread
    from deployment.config import load_config
    from deployment.model import ModelConfig
    from deployment.promotion import PromotionConfig
    from episodes.store import EpisodeStore
    from vla.model import build_model
    from vla.normalization import Normalizer
    from vla.registry import CheckpointRegistry, publish

    torch.set_num_threads(1)
    run_dir = tmp_path / "run"
    registry = CheckpointRegistry(run_dir / "checkpoints")
    model = build_model(ModelConfig())
    set_reach_controller(model, BLUE_SLOT)
    good = publish(registry, model, Normalizer.identity(), kind="full", phase="test")
    chunk, dims = model.config.chunk, model.config.action_dim

    gate = PromotionConfig(enabled=True, canary_fraction=0.5, min_episodes=6, max_canary_episodes=20,
                           margin=0.1, promote_confidence=0.8, rollback_confidence=0.9)
    config = load_config(environ={}, run_dir=str(run_dir))
    config.server.robot_token, config.server.operator_token = ROBOT_TOKEN, OPERATOR
    config.server.auto_label, config.server.watch_interval_s, config.server.promotion = True, 0.2, gate
    learner_addr = f"tcp://127.0.0.1:{free_port()}"
    store = EpisodeStore(run_dir / "episodes")
    with ServerThread(config) as server:
        assert server.wait_ready(60) == good
        env = {**os.environ, "VLALOOP_RUN_DIR": str(run_dir), "OMP_NUM_THREADS": "1",
               "VLALOOP_LEARNER__BIND": learner_addr, "VLALOOP_ROBOT__LEARNER_ADDR": learner_addr,
               "VLALOOP_ROBOT__SERVER_URL": server.url, "VLALOOP_ROBOT__TOKEN": ROBOT_TOKEN,
               "VLALOOP_ROBOT__SPLIT": "rl", "VLALOOP_ROBOT__PROBE_INTERVAL_S": "0.5",
               "VLALOOP_ROBOT__STARVE_ABORT_S": "10"}
        procs = Procs(env, tmp_path)
        try:
            procs.start("ingest", "learn", "--no-train")
            for i in range(2):
                procs.start(f"robot{i}", "robot", "--backend", "mock", "--robot-id", f"mock{i}", "--task",
                            "reach_slots", "--rate", "10", "--max-steps", "30", "--mode", "greedy",
                            "--seed", str(10 + i))
            wait_for(lambda: procs.check_alive() or len(episodes(store)) >= BEFORE, 180, f"{BEFORE} episodes of v1")
            before = episodes(store)

            bad = publish_edited_head(registry, good, lambda head: drive_away(head, chunk, dims))
            t_bad = time.time()
            wait_for(lambda: procs.check_alive() or registry.is_refused(bad), 240, f"v{bad} rolled back")
            t_refused = time.time()
            during = [m for m in episodes(store) if m not in before]
            wait_for(lambda: procs.check_alive() or len(started_after(store, t_refused)) >= AFTER, 180,
                     f"{AFTER} episodes after the rollback")
            after = started_after(store, t_refused)
            info = httpx.get(server.url + "/v1/policy", headers={"authorization": f"Bearer {OPERATOR}"}).json()
        finally:
            procs.stop()

    by_bad = [m for m in during if bad in m["policy_versions"]]
    record = registry.refused()[bad]
    summary = {"before": (len(before), rate(before)), "canary episodes": len(by_bad),
               "canary successes": sum(m["outcome"] == "success" for m in by_bad),
               "control during canary": (record["promoted"]["successes"], record["promoted"]["failures"]),
               "decision": record["reason"], "seconds to rollback": round(t_refused - t_bad, 1),
               "after": (len(after), rate(after)),
               "checked": [(m["extra"]["seed"], m["outcome"], expected_outcome(int(m["extra"]["seed"])),
                            m["n_steps"], sum(v for k, v in m["extra"]["counters"].items() if k.startswith("hold")))
                           for m in before + after]}
    print("\nPROMOTION E2E", json.dumps(summary))
    assert all(m["policy_versions"] == [good] for m in before)
    assert mislabelled(before) == []                             # the good version works
    assert sum(expected_outcome(int(m["extra"]["seed"])) == "success" for m in before) >= 2  # seeds 13-15
    assert 1 <= len(by_bad) <= gate.max_canary_episodes + 2     # the cap (+ episodes in flight at the decision)
    assert all(m["outcome"] == "failure" for m in by_bad)        # the bad one really is bad
    assert record["canary"]["failures"] >= gate.min_episodes and record["canary"]["successes"] == 0
    assert all(bad not in m["policy_versions"] for m in after)   # never served again
    assert mislabelled(after) == []                              # the fleet's success recovers
    assert bad in info["refused_versions"] and info["promotion"]["promoted"] == good
    assert info["promotion"]["decisions"][-1]["action"] == "rollback"
