"""Fault injection on the real processes: `python -m bench.faults --cycles 20`.

A server (`vlaloop serve`, tiny model, auto-label), a learner (`vlaloop learn --no-train`, or the
full learner with `--full-learner`) and 2-3 mock robots (`vlaloop robot --backend mock`) run as
separate processes on one run dir. Between the robots and the others sit two proxies that this
script owns:

* an HTTP proxy in front of the server: it logs every /v1/act request and reply (robot, episode,
  request_id, the observation's t_capture, the action chunk, when the reply left for the robot)
  and can delay replies past the robot's deadline ("slow server");
* a TCP proxy in front of the learner's ZeroMQ port: it can cut the link ("partition": close
  every connection and refuse new ones) or black-hole it (connections stay open, bytes vanish).

Each cycle picks one fault at a random point: kill -9 + restart of the server, the learner or a
robot; a partition or black hole of the ZeroMQ link; a slow server. Optionally the episode store
sits on a 2 MB tmpfs that fills up and is grown again (`--disk-full`).

Afterwards everything heals, the robots stop gracefully (SIGTERM: they hold, close the episode
and flush their outbox) and the store is audited:

* started: episodes seen in /v1/act; stored: complete in the store (meta.json); lost = started
  - stored (a robot killed mid-episode closes it as aborted on restart, so it must be stored too);
* duplicated: a step stored twice in one episode; step gaps: a missing step inside an episode;
* moved on a stale or missing action: every stored step that moved the arm is traced back to the
  /v1/act reply that carried its chunk (by the chunk's exact values). A step whose chunk no reply
  carried moved on a missing action; a step whose reply left the proxy later than the robot's
  reply deadline after capture (the robot must drop it), or that executes an action past the
  chunk's end, or whose action differs from the chunk's action without a safety clamp recorded,
  moved on a stale action. All must be 0.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import numpy as np
import yaml

ROOT = Path(__file__).resolve().parents[1]
FAULTS = ("kill_server", "kill_learner", "kill_robot", "partition", "blackhole", "slow_server")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------ the HTTP proxy (server side)
class HttpProxy:
    """Forwards every request to the server; logs /v1/act; can delay /v1/act replies."""

    def __init__(self, upstream_port: int):
        self.port = free_port()
        self.upstream = f"http://127.0.0.1:{upstream_port}"
        self.delay_s = 0.0
        self.act_log: list[dict] = []
        self.lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True, name="http-proxy")
        self._server = None

    def _app(self):
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import Response
        from starlette.routing import Route

        from protocol.codec import CodecError, unpackb

        client = httpx.AsyncClient(base_url=self.upstream, timeout=httpx.Timeout(90.0, connect=0.5),
                                   limits=httpx.Limits(max_connections=64))

        async def forward(request: Request) -> Response:
            body = await request.body()
            headers = {k: v for k, v in request.headers.items() if k.lower() in
                       ("content-type", "accept", "authorization")}
            try:
                r = await client.request(request.method, request.url.path, params=request.query_params,
                                         content=body, headers=headers)
            except httpx.HTTPError as e:  # the server is gone: the robot sees a 502, i.e. "down"
                return Response(f"proxy: upstream unreachable: {type(e).__name__}", status_code=502)
            if request.url.path == "/v1/act":
                if self.delay_s > 0:
                    await asyncio.sleep(self.delay_s)
                try:
                    req, resp = unpackb(body), unpackb(r.content) if r.status_code == 200 else {}
                    entry = {"robot_id": req.get("robot_id"), "episode_id": req.get("episode_id"),
                             "request_id": req.get("request_id"), "step": req.get("step"),
                             "t_capture": float(req.get("t_capture", 0.0)), "status": r.status_code,
                             "actions": resp.get("actions"), "t_reply": time.time(), "delay_s": self.delay_s}
                    with self.lock:
                        self.act_log.append(entry)
                except (CodecError, AttributeError, TypeError, ValueError):
                    pass
            return Response(r.content, status_code=r.status_code,
                            headers={k: v for k, v in r.headers.items() if k.lower() == "content-type"})

        methods = ["GET", "POST", "PUT", "DELETE"]
        return Starlette(routes=[Route("/{path:path}", forward, methods=methods)])

    def _run(self) -> None:
        import uvicorn

        self._server = uvicorn.Server(uvicorn.Config(self._app(), host="127.0.0.1", port=self.port,
                                                     log_level="error", access_log=False))
        self._server.run()

    def start(self) -> HttpProxy:
        self._thread.start()
        deadline = time.time() + 20
        while time.time() < deadline:
            if self._server is not None and self._server.started:
                return self
            time.sleep(0.02)
        raise RuntimeError("http proxy did not start")

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        self._thread.join(5)


# ------------------------------------------------------------------ the TCP proxy (learner side)
class TcpProxy:
    """A byte pipe to the learner's ZeroMQ port. ``mode``: "pass", "partition" (every connection
    closed, new ones refused), "blackhole" (connections accepted and kept, bytes dropped)."""

    def __init__(self, upstream_port: int):
        self.port = free_port()
        self.upstream_port = upstream_port
        self.mode = "pass"
        self.loop = asyncio.new_event_loop()
        self._server = None
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="tcp-proxy")

    async def _pipe(self, reader, writer, tag: list) -> None:
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                if tag[0] == "blackhole":
                    continue
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError, asyncio.CancelledError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _handle(self, r_client, w_client) -> None:
        if self.mode == "partition":
            w_client.close()
            return
        tag = [self.mode]
        try:
            r_up, w_up = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            w_client.close()
            return
        key = id(tag)
        self._pairs[key] = (w_client, w_up, tag)
        try:
            await asyncio.gather(self._pipe(r_client, w_up, tag), self._pipe(r_up, w_client, tag))
        finally:
            self._pairs.pop(key, None)

    async def _start(self) -> None:
        self._pairs: dict[int, tuple] = {}
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, reuse_address=True)

    def start(self) -> TcpProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(10)
        return self

    def _set(self, mode: str) -> None:
        self.mode = mode
        for w_client, w_up, tag in list(self._pairs.values()):
            if mode == "blackhole":
                tag[0] = "blackhole"
            else:  # partition, or healing a black hole: the old streams are garbage, reset them
                if mode == "partition" or tag[0] == "blackhole":
                    w_client.close()
                    w_up.close()

    def set_mode(self, mode: str) -> None:
        self.loop.call_soon_threadsafe(self._set, mode)

    def stop(self) -> None:
        async def _close():
            self._server.close()
            self._set("partition")

        if not self.loop.is_running():
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(_close(), self.loop).result(5)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


# ------------------------------------------------------------------ the processes
class Proc:
    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path):
        self.name, self.argv, self.env, self.log_dir = name, argv, env, log_dir
        self.p: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> None:
        log = open(self.log_dir / f"{self.name}.log", "ab")
        self.p = subprocess.Popen([sys.executable, "-m", "vlaloop.cli", *self.argv], cwd=ROOT, stdout=log,
                                  stderr=subprocess.STDOUT, env={**os.environ, **self.env},
                                  start_new_session=True)
        log.close()
        self.starts += 1

    def alive(self) -> bool:
        return self.p is not None and self.p.poll() is None

    def kill9(self) -> None:
        if self.alive():
            os.killpg(self.p.pid, signal.SIGKILL)
            self.p.wait(10)

    def term(self, timeout: float = 20.0) -> int | None:
        if self.p is None:
            return None
        if self.p.poll() is None:
            self.p.send_signal(signal.SIGTERM)
            try:
                self.p.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait(10)
        return self.p.returncode


@dataclass
class Options:
    cycles: int = 20
    robots: int = 3
    seed: int = 0
    rate_hz: float = 10.0
    max_steps: int = 30
    reply_deadline_s: float = 1.0
    fault_s: tuple[float, float] = (2.0, 5.0)  # how long a fault lasts
    gap_s: tuple[float, float] = (2.0, 6.0)  # healthy time before the next fault
    full_learner_cycles: int = 0  # the last N cycles run the full learner (training) instead of --no-train
    disk_full: bool = False
    faults: tuple[str, ...] = FAULTS
    sequential: bool = False  # cycle through `faults` in order instead of at random
    healthy_end_s: float = 6.0
    run_dir: Path = field(default_factory=lambda: ROOT / "runs" / "faults")


class Rig:
    """Server, learner, robots and the two proxies on one run dir."""

    def __init__(self, opt: Options):
        self.opt = opt
        self.run_dir = opt.run_dir
        self.logs = self.run_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.server_port, self.learner_port = free_port(), free_port()
        self.http = HttpProxy(self.server_port)
        self.tcp = TcpProxy(self.learner_port)
        self.events: list[dict] = []  # (t, what)
        self.t0 = time.time()
        self.cfg_path = self._write_config()
        base = {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
        cfg = ["-c", str(self.cfg_path), "--log-file", "none"]  # this harness keeps each output in logs/<name>.log
        self.server = Proc("server", [*cfg, "serve"], base, self.logs)
        self.learner = Proc("learner", [*cfg, "learn", "--no-train"], base, self.logs)
        self.robots = [Proc(f"robot{i}", [*cfg, "robot", "--backend", "mock"],
                            {**base, "VLALOOP_ROBOT__ROBOT_ID": f"mock{i}",
                             "VLALOOP_ROBOT__SEED": str(1000 * (i + 1))}, self.logs)
                       for i in range(opt.robots)]

    def _write_config(self) -> Path:
        from deployment.config import DeploymentConfig

        data = DeploymentConfig().model_dump()
        data["run_dir"] = str(self.run_dir)
        data["server"].update(host="127.0.0.1", port=self.server_port, auto_label=True)
        data["learner"].update(bind=f"tcp://127.0.0.1:{self.learner_port}", status_interval_s=0.5,
                               # the full learner: small rounds, so a few cycles see training
                               episodes_per_round=2, rl_rounds_per_phase=2, critic_warmup_rounds=0,
                               max_iterations=0)
        data["learner"]["sft"]["steps"], data["learner"]["ppo"]["update_epochs"] = 6, 1
        data["robot"].update(server_url=f"http://127.0.0.1:{self.http.port}",
                             learner_addr=f"tcp://127.0.0.1:{self.tcp.port}", rate_hz=self.opt.rate_hz,
                             max_steps=self.opt.max_steps, reply_deadline_s=self.opt.reply_deadline_s,
                             label_timeout_s=20.0, ack_timeout_s=2.0, realtime_priority=0, mode="sample")
        path = self.run_dir / "faults.yaml"
        path.write_text(yaml.safe_dump(data, sort_keys=False))
        return path

    def note(self, what: str, **info) -> None:
        self.events.append({"t": time.time(), "what": what, **info})
        print(f"[{time.time() - self.t0:6.1f}s] {what} {info if info else ''}", flush=True)

    def wait_server_ready(self, timeout: float = 120.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://127.0.0.1:{self.server_port}/readyz", timeout=1).status_code == 200:
                    return
            if not self.server.alive():
                raise RuntimeError(f"server exited; see {self.logs / 'server.log'}")
            time.sleep(0.1)
        raise RuntimeError("server not ready")

    def wait_learner_bound(self, timeout: float = 60.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.learner_port)) == 0:
                    return
            if not self.learner.alive():
                raise RuntimeError(f"learner exited; see {self.logs / 'learner.log'}")
            time.sleep(0.1)
        raise RuntimeError("learner not bound")

    def start(self) -> None:
        from bench.harness import publish_tiny

        if not (self.run_dir / "checkpoints" / "LATEST").exists():
            publish_tiny(self.run_dir)
        self.http.start()
        self.tcp.start()
        self.server.start()
        self.learner.start()
        self.wait_server_ready()
        self.wait_learner_bound()
        for r in self.robots:
            r.start()
        self.note("started", robots=len(self.robots))

    def revive(self) -> list[str]:
        """Restart any process that exited on its own (what a supervisor, e.g. docker's restart
        policy, does); each one is noted and counted."""
        died = []
        for p in [self.server, self.learner, *self.robots]:
            if p.p is not None and not p.alive():
                self.note(f"{p.name} exited on its own (rc {p.p.returncode}); restarting", unexpected=True)
                died.append(p.name)
                p.start()
        if "server" in died:
            self.wait_server_ready()
        if "learner" in died:
            self.wait_learner_bound()
        return died

    def use_full_learner(self) -> None:
        self.learner.argv = [a for a in self.learner.argv if a != "--no-train"]

    # ---------------------------------------------------------------- one fault
    def inject(self, fault: str, rng: random.Random) -> None:
        hold = rng.uniform(*self.opt.fault_s)
        if fault == "kill_server":
            self.server.kill9()
            self.note("kill -9 server")
            time.sleep(hold)
            self.note("server starting")  # from here a new process may answer
            self.server.start()
            self.wait_server_ready()
            self.note("server restarted")
        elif fault == "kill_learner":
            self.learner.kill9()
            self.note("kill -9 learner", full=("--no-train" not in self.learner.argv))
            time.sleep(hold)
            self.learner.start()
            self.wait_learner_bound()
            self.note("learner restarted")
        elif fault == "kill_robot":
            r = rng.choice(self.robots)
            r.kill9()
            self.note(f"kill -9 {r.name}")
            time.sleep(min(hold, 1.0))
            r.start()
            self.note(f"{r.name} restarted")
        elif fault in ("partition", "blackhole"):
            self.tcp.set_mode(fault)
            self.note(f"zmq {fault}")
            time.sleep(hold)
            self.tcp.set_mode("pass")
            self.note("zmq healed")
        elif fault == "slow_server":
            self.http.delay_s = rng.uniform(self.opt.reply_deadline_s * 0.9, self.opt.reply_deadline_s * 1.6)
            self.note("slow server", delay_s=round(self.http.delay_s, 2))
            time.sleep(hold)
            self.http.delay_s = 0.0
            self.note("server fast again")
        else:
            raise ValueError(fault)

    def stop(self) -> tuple[dict[str, int | None], int]:
        rcs = {r.name: r.term(30) for r in self.robots}  # hold, close the episode, flush the outbox
        leftovers = self.drain_outboxes()
        rcs["learner"] = self.learner.term(20)
        rcs["server"] = self.server.term(20)
        self.http.stop()
        self.tcp.stop()
        return rcs, leftovers

    def drain_outboxes(self) -> int:
        """A robot stopped by SIGTERM flushes for 3 s only; what it could not send stays in its outbox
        and goes out on its next start. Do that start's streaming part here (the real Streamer on
        the real outbox), so the audit sees everything. Returns how many messages were pending."""
        from deployment.config import load_config
        from robot_client.outbox import Outbox
        from robot_client.streamer import Streamer

        config_hash = load_config(self.cfg_path, environ={}).config_hash()
        pending = 0
        if not self.learner.alive():
            self.revive()
        for d in sorted((self.run_dir / "outbox").glob("*")):
            ob = Outbox(d, 2 * 1024**3, 0.8)
            if len(ob) == 0:
                continue
            pending += len(ob)
            st = Streamer(ob, f"tcp://127.0.0.1:{self.learner_port}", d.name, config_hash)
            st.start()
            if not st.flush(60):
                print(f"outbox of {d.name} not drained: {len(ob)} left", flush=True)
            st.stop()
        return pending

    def kill_all(self) -> None:
        for p in [*self.robots, self.learner, self.server]:
            with contextlib.suppress(Exception):
                p.kill9()


# ------------------------------------------------------------------ disk full
def mount_small_tmpfs(path: Path, size: str = "2m") -> bool:
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                       capture_output=True, text=True)
    return r.returncode == 0


def grow_tmpfs(path: Path, size: str = "512m") -> None:
    subprocess.run(["mount", "-o", f"remount,size={size}", str(path)], check=True)


def disk_used_fraction(path: Path) -> float:
    st = os.statvfs(path)
    return 1.0 - st.f_bavail / max(1, st.f_blocks)


# ------------------------------------------------------------------ the audit
def audit(run_dir: Path, act_log: list[dict], opt: Options, events: list[dict]) -> dict:
    from episodes.store import STEPS, EpisodeStore, _read_records

    store = EpisodeStore(run_dir / "episodes")
    replies: dict[tuple, dict] = {}
    started: set[tuple[str, str]] = set()
    for e in act_log:
        started.add((e["robot_id"], e["episode_id"]))
        if e["actions"]:
            key = (e["robot_id"], e["episode_id"], tuple(tuple(a) for a in e["actions"]))
            replies.setdefault(key, e)
    complete = {(m["robot_id"], m["episode_id"]): m for m in store.list_episodes(complete_only=True)}
    out = Counter()
    ages = []
    dead_moves: list[dict] = []
    server_down = _down_windows(events)
    for robot_dir in sorted(p for p in (run_dir / "episodes").iterdir() if p.is_dir()):
        for ep_dir in sorted(p for p in robot_dir.iterdir() if p.is_dir()):
            meta = complete.get((robot_dir.name, ep_dir.name))
            if meta is not None and meta.get("source") == "expert":
                continue  # scripted demonstrations, no robot moved
            raw, _ = _read_records(ep_dir / STEPS)
            steps = [int(r["step"]) for r in raw]
            out["steps_stored"] += len(steps)
            out["duplicated_steps"] += len(steps) - len(set(steps))
            if steps and sorted(set(steps)) != list(range(max(steps) + 1)):
                out["step_gaps"] += max(steps) + 1 - len(set(steps))
            if meta is not None and _end_reason(meta) != "client_crashed" and meta.get("n_steps") != len(steps):
                out["episodes_short"] += 1
            if meta is not None:
                out["executed_not_stored"] += executed_not_stored(meta, len(set(steps)))
            chunk, chunk_reply = None, None
            for r in raw:
                if r.get("action_chunk") is not None:  # first use of a chunk: find the reply that carried it
                    chunk = np.asarray(r["action_chunk"])
                    chunk_reply = replies.get((robot_dir.name, ep_dir.name,
                                               tuple(tuple(a) for a in r["action_chunk"])))
                action = np.asarray(r["action"])
                moved = bool(np.any(action[:6] != 0))
                if not moved:
                    continue
                out["moves"] += 1
                if chunk is None or chunk_reply is None:
                    out["moved_on_missing"] += 1
                    continue
                i = int(r["chunk_index"])
                clamped = any(k.startswith("clamp") and v for k, v in r.get("safety", {}).items())
                age_at_reply = chunk_reply["t_reply"] - chunk_reply["t_capture"]
                age_at_move = float(r["t_act"]) - chunk_reply["t_capture"]
                ages.append(age_at_move)
                stale = (age_at_reply > opt.reply_deadline_s + 0.02 or i >= len(chunk)
                         or (not clamped and not np.allclose(action, chunk[i], atol=1e-9)))
                out["moved_on_stale"] += int(stale)
                for a, b in server_down:
                    if a < float(r["t_act"]) - 0.2 < b:
                        out["moves_while_server_dead"] += 1
                        dead_moves.append({"robot": robot_dir.name, "episode": ep_dir.name, "step": r["step"],
                                           "after_kill_s": round(float(r["t_act"]) - a, 3),
                                           "chunk_index": i, "reply_after_kill_s": round(chunk_reply["t_reply"] - a, 3)})
    lost = started - set(complete)
    by_reason = Counter(_end_reason(m) for m in complete.values() if m.get("source") != "expert")
    return {
        "episodes_started": len(started), "episodes_stored": len(started & set(complete)),
        "episodes_lost": len(lost), "lost": sorted("/".join(k) for k in lost)[:20],
        "duplicated_steps": out["duplicated_steps"], "step_gaps": out["step_gaps"],
        "episodes_short": out["episodes_short"], "steps_stored": out["steps_stored"], "moves": out["moves"],
        "moved_on_stale": out["moved_on_stale"], "moved_on_missing": out["moved_on_missing"],
        "executed_not_stored": out["executed_not_stored"],
        "moves_while_server_dead": out["moves_while_server_dead"], "moves_while_server_dead_detail": dead_moves,
        "chunk_age_at_move_p99_s": float(np.percentile(ages, 99)) if ages else None,
        "chunk_age_at_move_max_s": float(max(ages)) if ages else None,
        "end_reasons": dict(by_reason), "act_requests": len(act_log),
        "act_replies_delayed": sum(1 for e in act_log if e["delay_s"] > 0),
    }


def executed_not_stored(meta: dict, n_stored: int) -> int:
    """Steps a robot executed but never stored: a client killed mid-episode reports, on its next
    start, how many steps its execution journal counted (``executed_steps``); the stored ones are
    subtracted. The journal is written before each move, so it may count one step too many."""
    extra = meta.get("extra") or {}
    executed = extra.get("executed_steps", meta.get("executed_steps"))
    return max(0, int(executed) - n_stored) if executed is not None else 0


def _end_reason(meta: dict) -> str:
    return str(meta.get("extra", {}).get("end_reason") or meta.get("end_reason") or "?")


def _down_windows(events: list[dict]) -> list[tuple[float, float]]:
    """Times no server process existed (kill -9 .. the new one is started)."""
    out, start = [], None
    for e in events:
        if e["what"] == "kill -9 server":
            start = e["t"]
        elif e["what"] == "server starting" and start is not None:
            out.append((start, e["t"]))
            start = None
    return out


# ------------------------------------------------------------------ the run
def run(opt: Options) -> dict:
    import shutil

    if opt.run_dir.exists():
        subprocess.run(["umount", "-l", str(opt.run_dir / "episodes")], capture_output=True)
        shutil.rmtree(opt.run_dir)
    opt.run_dir.mkdir(parents=True)
    rng = random.Random(opt.seed)
    tmpfs = None
    if opt.disk_full:
        tmpfs = opt.run_dir / "episodes"
        if not mount_small_tmpfs(tmpfs):
            print("cannot mount a tmpfs (not root?): disk-full phase skipped", flush=True)
            tmpfs = None
    if opt.full_learner_cycles:  # SFT needs expert demos (the demo records them the same way)
        from deployment.model import ModelConfig
        from episodes.store import EpisodeStore
        from sim.mock.demos import record_demos

        m = ModelConfig()
        record_demos(EpisodeStore(opt.run_dir / "episodes"), task="reach", n=4, seed=0, image_size=m.image_size,
                     cameras=tuple(m.cameras), progress=False)
    rig = Rig(opt)
    cycles: list[dict] = []
    disk = {}
    try:
        rig.start()
        time.sleep(3.0)
        if tmpfs is not None:
            t = time.time()
            disk = _disk_full_phase(rig, tmpfs)
            cycles.append({"cycle": -1, "fault": "disk_full", "t": t - rig.t0, "duration_s": time.time() - t,
                           "learner": "no-train"})
        for c in range(opt.cycles):
            if opt.full_learner_cycles and c == opt.cycles - opt.full_learner_cycles:
                rig.learner.kill9()
                rig.use_full_learner()
                rig.learner.start()
                rig.wait_learner_bound()
                rig.note("switched to the full learner (training)")
            time.sleep(rng.uniform(*opt.gap_s))
            rig.revive()
            fault = opt.faults[c % len(opt.faults)] if opt.sequential else rng.choice(opt.faults)
            t = time.time()
            rig.inject(fault, rng)
            cycles.append({"cycle": c, "fault": fault, "t": t - rig.t0, "duration_s": time.time() - t,
                           "learner": "full" if "--no-train" not in rig.learner.argv else "no-train"})
        rig.note("all faults done; running healthy")
        time.sleep(opt.healthy_end_s)
        rig.revive()
        rcs, leftovers = rig.stop()
        rig.note("stopped", exit_codes=rcs, outbox_pending_at_stop=leftovers)
        with rig.http.lock:
            act_log = list(rig.http.act_log)
        (opt.run_dir / "act_log.json").write_text(json.dumps(act_log))
        (opt.run_dir / "events.json").write_text(json.dumps(rig.events))
        result = audit(opt.run_dir, act_log, opt, rig.events)
        unexpected = [e["what"].split()[0] for e in rig.events if e.get("unexpected")]
        result.update(cycles=cycles, unexpected_exits=unexpected, exit_codes=rcs, outbox_leftovers=leftovers, disk_full=disk,
                      faults=dict(Counter(c["fault"] for c in cycles)))
        return result
    finally:
        rig.kill_all()
        rig.http.stop()
        rig.tcp.stop()
        if tmpfs is not None:  # keep the store for a later look: copy it off the tmpfs
            import shutil

            saved = opt.run_dir / "episodes.saved"
            shutil.copytree(tmpfs, saved, dirs_exist_ok=True)
            subprocess.run(["umount", "-l", str(tmpfs)], capture_output=True)
            shutil.rmtree(tmpfs, ignore_errors=True)
            saved.rename(tmpfs)


def _disk_full_phase(rig: Rig, tmpfs: Path) -> dict:
    """Let the 2 MB store fill up, keep the robots running on a full disk, then grow it."""
    t0 = time.time()
    log = rig.logs / "learner.log"
    while time.time() - t0 < 120:  # full = the learner failed a write with ENOSPC
        if "No space left" in log.read_text(errors="replace"):
            break
        time.sleep(0.5)
    t_full = time.time()
    rig.note("episode store full", used=round(disk_used_fraction(tmpfs), 3))
    time.sleep(10.0)  # robots keep working; the learner cannot store
    grow_tmpfs(tmpfs)
    rig.note("episode store grown (operator freed space)")
    enospc = log.read_text(errors="replace").count("No space left")
    return {"filled_after_s": round(t_full - t0, 1), "full_for_s": 10.0, "enospc_log_lines": enospc}


# ------------------------------------------------------------------ report
def table(result: dict) -> str:
    rows = [("episodes started", result["episodes_started"]), ("episodes stored", result["episodes_stored"]),
            ("episodes lost (must be 0)", result["episodes_lost"]),
            ("steps stored", result["steps_stored"]),
            ("duplicated steps (must be 0)", result["duplicated_steps"]),
            ("missing steps inside an episode", result["step_gaps"]),
            ("arm moves (stored steps with a motion)", result["moves"]),
            ("moves on a stale action (must be 0)", result["moved_on_stale"]),
            ("moves on a missing action (must be 0)", result["moved_on_missing"]),
            ("moves > 0.2 s after the server was killed", result["moves_while_server_dead"]),
            ("chunk age at move p99 / max (s)",
             f"{result['chunk_age_at_move_p99_s']:.2f} / {result['chunk_age_at_move_max_s']:.2f}"
             if result["chunk_age_at_move_p99_s"] is not None else "-"),
            ("/v1/act replies delayed (slow server)", result["act_replies_delayed"]),
            ("messages left in outboxes at stop (then sent)", result["outbox_leftovers"]),
            ("processes that exited on their own", len(result["unexpected_exits"]))]
    w = max(len(k) for k, _ in rows)
    lines = [f"| {'measure'.ljust(w)} | value |", f"|{'-' * (w + 2)}|-------|"]
    lines += [f"| {k.ljust(w)} | {v} |" for k, v in rows]
    lines.append("")
    lines.append("faults injected: " + ", ".join(f"{k} x{v}" for k, v in sorted(result["faults"].items())))
    lines.append("episode end reasons: " + ", ".join(f"{k} {v}" for k, v in sorted(result["end_reasons"].items())))
    return "\n".join(lines)


def figure(result: dict, events: list[dict] | None, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.8), gridspec_kw={"width_ratios": [2, 1]})
    colors = {f: c for f, c in zip(FAULTS, ["tab:red", "tab:orange", "tab:purple", "tab:blue", "tab:cyan",
                                             "tab:green"], strict=True)} | {"disk_full": "tab:brown"}
    for c in result["cycles"]:
        a1.barh(c["fault"], c["duration_s"], left=c["t"], color=colors.get(c["fault"], "gray"),
                hatch="//" if c["learner"] == "full" else None)
    a1.set_xlabel("time (s); hatched: full learner (training)")
    a1.set_title(f"{sum(c['cycle'] >= 0 for c in result['cycles'])} fault cycles"
                 + (" after a full episode store" if any(c["fault"] == "disk_full" for c in result["cycles"]) else ""))
    names = ["started", "stored", "lost", "dup. steps", "stale moves", "missing moves"]
    vals = [result["episodes_started"], result["episodes_stored"], result["episodes_lost"],
            result["duplicated_steps"], result["moved_on_stale"], result["moved_on_missing"]]
    bars = a2.bar(names, vals, color=["gray", "tab:green", "tab:red", "tab:red", "tab:red", "tab:red"])
    for b, v in zip(bars, vals, strict=True):
        a2.text(b.get_x() + b.get_width() / 2, b.get_height(), str(v), ha="center", va="bottom")
    a2.set_title("episodes and safety audit")
    a2.tick_params(axis="x", rotation=35)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--cycles", type=int, default=20)
    p.add_argument("--robots", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--full-learner-cycles", type=int, default=4, help="last N cycles with the training learner")
    p.add_argument("--disk-full", action="store_true", help="episode store on a 2 MB tmpfs that fills up first")
    p.add_argument("--run-dir", default=str(ROOT / "runs" / "faults"))
    p.add_argument("--json", default=None, help="write the result here")
    p.add_argument("--figure", default=str(ROOT / "docs" / "img" / "reliability_faults.png"))
    a = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # run the cleanup (kill children, unmount)
    opt = Options(cycles=a.cycles, robots=a.robots, seed=a.seed, full_learner_cycles=a.full_learner_cycles,
                  disk_full=a.disk_full, run_dir=Path(a.run_dir))
    t0 = time.time()
    result = run(opt)
    print(table(result))
    print(f"wall time {time.time() - t0:.0f} s")
    if a.json:
        Path(a.json).write_text(json.dumps(result, indent=1))
    if a.figure:
        figure(result, None, Path(a.figure))
    ok = result["episodes_lost"] == 0 and result["duplicated_steps"] == 0 and result["moved_on_stale"] == 0 \
        and result["moved_on_missing"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
