"""Operator-page teleop latency: a page command sent -> the arm told to move by it (one wall clock).

The real server (uvicorn in a thread, the embedded tiny model) and the real robot client (mock arm,
in a thread) run in this process, so the command's send time and the arm's ``move_delta`` time are
read from the same clock. A stand-in "page" (HTTP, as the browser does) takes the robot over and
sends a command every ~200 ms (random phase), each with its own intent, so the executed action
names the command that produced it. Rows: the robot taking the newest command from the reply that
arrived before the tick (the baseline: ``teleop_wait_reply: false``) and waiting, within the reply
budget, for the reply to this tick's own query (the default). The last column is what the operator
page shows: half its POST round trip plus the robot's own estimate, to compare with the truth.

    python -m bench.teleop_latency [--seconds 10] [--rates 10 30]
"""

from __future__ import annotations

import argparse
import logging
import random
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np

from bench.harness import ServerThread, publish_tiny
from calibration.schema import default_mock_calibration
from deployment.config import DeploymentConfig
from deployment.robot import RobotConfig
from robot_client.cli import RobotClient
from robot_client.episode import Rig
from sim.mock import MockRobot

SPEED = 0.1  # m/s at full intent
INTENTS = [0.2, 0.4, 0.6, 0.8, 1.0]  # each command's |x intent|, cycled with alternating sign


class TimedArm:
    """The mock arm, logging (wall time, action) of every move."""

    def __init__(self, inner):
        self.inner, self.moves = inner, []

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def move_delta(self, action):
        self.moves.append((time.time(), np.array(action)))
        self.inner.move_delta(action)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(server: ServerThread, rate: float, wait_reply: bool, seconds: float, tmp: Path) -> dict:
    sim = MockRobot(task="reach", image_size=64, cameras=("front",))
    arm = TimedArm(sim.arm)
    cfg = RobotConfig(robot_id="bench0", server_url=server.url, rate_hz=rate, max_steps=1_000_000, mode="greedy",
                      realtime_priority=0, teleop_linear_speed=SPEED, teleop_wait_reply=wait_reply,
                      learner_addr=f"tcp://127.0.0.1:{_free_port()}",  # nobody listens: steps stay in the outbox
                      outbox_dir=str(tmp / f"outbox-{rate}-{wait_reply}"))
    rig = Rig(arm=arm, cameras=dict(sim.cameras), task="reach", new_episode=lambda seed: sim.new_episode(seed))
    client = RobotClient(cfg, rig, default_mock_calibration(), cfg.outbox_dir, DeploymentConfig().config_hash())
    results: list = []
    thread = threading.Thread(target=lambda: results.extend(client.run(1)), daemon=True)
    thread.start()
    http = httpx.Client(base_url=server.url, timeout=5)
    deadline = time.monotonic() + 60
    while not any(r.get("step") for r in http.get("/v1/robots").json()):
        if time.monotonic() > deadline:
            raise RuntimeError("the robot never started")
        time.sleep(0.1)
    http.post("/v1/robots/bench0/teleop/take_over").raise_for_status()
    sent: list[tuple[float, float]] = []  # (wall time sent, expected dx)
    rtts: list[float] = []
    rng = random.Random(0)
    end = time.monotonic() + seconds
    seq = 0
    while time.monotonic() < end:
        seq += 1
        intent = INTENTS[seq % len(INTENTS)] * (1 if seq % 2 else -1)
        t_sent = time.time()
        http.post("/v1/robots/bench0/teleop", json={"seq": seq, "t_sent": t_sent, "translation": [intent, 0, 0]}
                  ).raise_for_status()
        rtts.append(time.time() - t_sent)
        sent.append((t_sent, intent * SPEED / rate))
        time.sleep(0.2 + rng.uniform(0, 0.1))
    http.post("/v1/robots/bench0/teleop/hand_back")
    client.stop()
    thread.join(30)
    client.close(0.5)
    latencies = []
    for (t_sent, dx), nxt in zip(sent, [*sent[1:], (float("inf"), None)], strict=True):
        hit = next((t for t, a in arm.moves if t_sent <= t < nxt[0] + 1.0 and abs(a[0] - dx) < 1e-9), None)
        if hit is not None:
            latencies.append((hit - t_sent) * 1e3)
    (result, _), = results
    timing = result.timing_summary(1.0 / rate)
    lat = np.array(latencies)
    return {"commands": len(sent), "executed": len(lat), "p50": np.percentile(lat, 50), "p90": np.percentile(lat, 90),
            "p99": np.percentile(lat, 99), "max": lat.max(), "page_shows": np.median(rtts) * 1e3 / 2
            + timing.get("teleop_latency_p50_ms", float("nan"))}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.teleop_latency", description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=10.0, help="per row")
    p.add_argument("--rates", type=float, nargs="+", default=[10.0, 30.0])
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.ERROR)
    import torch

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        publish_tiny(Path(tmp) / "run")
        rows = []
        with ServerThread(DeploymentConfig(run_dir=str(Path(tmp) / "run"))) as server:
            server.wait_ready(60)
            for rate in args.rates:
                for wait in (False, True):
                    r = measure(server, rate, wait, args.seconds, Path(tmp))
                    rows.append((rate, wait, r))
                    print(f"  {rate:g} Hz wait_reply={wait}: p50 {r['p50']:.1f} ms", flush=True)
    print("\n| rate | command delivery | commands executed | p50 ms | p90 ms | p99 ms | max ms | page shows (p50) ms |")
    print("|---|---|---|---|---|---|---|---|")
    for rate, wait, r in rows:
        name = "wait for this tick's reply (default)" if wait else "newest reply at tick start [baseline]"
        print(f"| {rate:g} Hz | {name} | {r['executed']}/{r['commands']} | {r['p50']:.1f} | {r['p90']:.1f} | "
              f"{r['p99']:.1f} | {r['max']:.1f} | {r['page_shows']:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
