"""Real stand-ins for the robot client's tests: a uvicorn server whose replies can be scripted
to misbehave (actions far outside the workspace, NaN, late replies) and a ZeroMQ ROUTER that acks
only after writing to the real EpisodeStore. Both run as real subprocesses:

    python tests/standins.py server --port-file F [--far N] [--nan N] [--late N ...]
    python tests/standins.py learner --port-file F --store DIR

The healthy paths are also tested against the real `vlaloop serve` / `vlaloop learn`
(tests/robot_client/test_robot_client.py); the stand-ins exist for the faults the real ones never produce.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import asyncio  # noqa: E402

import numpy as np  # noqa: E402
from fastapi import FastAPI, Request, Response  # noqa: E402

from protocol.codec import packb, unpackb  # noqa: E402
from protocol.messages import ActRequest, ActResponse, Timing  # noqa: E402

PY = str(ROOT / ".venv" / "bin" / "python") if (ROOT / ".venv" / "bin" / "python").exists() else sys.executable


# ------------------------------------------------------------------ the scripted server
def make_server_app(args):  # noqa: C901 -- one scripted route per fault mode, over the limit until split
    app = FastAPI()
    app.state.n = 0
    app.state.log = []  # (request_index, request_id, fault)
    app.state.command = "run"
    app.state.awaiting = {}
    app.state.statuses = []

    def chunk_for(req: ActRequest, fault: str, i: int) -> list[list[float]]:
        # a harmless policy: creep toward +y by 5 mm per step, gripper open
        a = np.tile(np.array([0.0, 0.005, 0.0, 0.0, 0.0, 0.0, 1.0]), (args.chunk, 1))
        if fault == "far":
            a[:, 0] = 5.0  # 5 m in one step: far outside the workspace and the step limit
            a[:, 6] = 3.0
        elif fault == "nan":
            a[:, 1] = float("nan")
        elif fault == "late":
            a[:, 2] = -0.0042  # a marker: the test checks this chunk is never executed
        if args.mark:  # which request produced a chunk, readable from any executed action
            a[:, 3] = 1e-4 * (i + 1)
        return a.tolist()

    @app.post("/v1/act")
    async def act(request: Request):
        req = ActRequest.model_validate(unpackb(await request.body()))
        i = app.state.n
        app.state.n += 1
        fault = ("far" if i in args.far else "nan" if i in args.nan else "late" if i in args.late else "")
        app.state.log.append([i, req.request_id, fault, req.episode_id, req.step, req.state])
        if fault == "late":
            await asyncio.sleep(args.late_s)
        elif args.delay_s:  # every reply later than the robot's reply budget, within its deadline
            await asyncio.sleep(args.delay_s)
        resp = ActResponse(request_id=req.request_id, actions=chunk_for(req, fault, i), log_prob=-1.0, value=0.5,
                           policy_version=7, timing=Timing(decode_ms=0, queue_ms=0, infer_ms=0, total_ms=0),
                           command=app.state.command)
        return Response(packb(resp.to_wire()), media_type="application/msgpack")

    @app.get("/healthz")
    async def healthz():
        if args.slow_healthz_s:  # a machine so busy that liveness probes answer late
            await asyncio.sleep(args.slow_healthz_s)
        return {"ok": True}

    @app.get("/readyz")
    async def readyz():
        return {"ok": True}

    @app.post("/v1/robots/{robot_id}/status")
    async def status(robot_id: str, request: Request):
        app.state.statuses.append(await request.json())
        return {"ok": True}

    @app.post("/v1/robots/{robot_id}/episodes/{episode_id}/awaiting")
    async def awaiting(robot_id: str, episode_id: str, request: Request):
        app.state.awaiting[episode_id] = (await request.json()).get("auto_outcome")
        return {"ok": True}

    @app.get("/v1/robots/{robot_id}/label")
    async def label(robot_id: str, episode_id: str, timeout_s: float = 1.0):
        outcome = app.state.awaiting.get(episode_id)
        if outcome is None:
            await asyncio.sleep(min(timeout_s, 0.2))
            return Response(status_code=204)
        return {"episode_id": episode_id, "outcome": outcome, "label_source": "auto"}

    @app.post("/v1/robots/{robot_id}/command")
    async def command(robot_id: str, request: Request):
        cmd = (await request.json())["command"]
        app.state.command = "run" if cmd == "resume" else cmd
        return {"ok": True}

    @app.get("/_test/log")
    async def test_log():
        return {"act": app.state.log, "statuses": app.state.statuses}

    return app


def serve(args) -> None:
    import uvicorn

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", args.port))
    Path(args.port_file).write_text(str(sock.getsockname()[1]))
    uvicorn.Server(uvicorn.Config(make_server_app(args), log_level="warning")).run(sockets=[sock])


# ------------------------------------------------------------------ the acking learner
def learn(args) -> None:
    import zmq

    from episodes.store import EpisodeStore
    from protocol.messages import Ack, EpisodeEnd, Hello, StepMsg, decode_message, encode_message

    store = EpisodeStore(args.store)
    sock = zmq.Context.instance().socket(zmq.ROUTER)
    sock.setsockopt(zmq.LINGER, 0)
    if args.port:
        sock.bind(f"tcp://127.0.0.1:{args.port}")
        port = args.port
    else:
        port = sock.bind_to_random_port("tcp://127.0.0.1")
    Path(args.port_file).write_text(str(port))
    hello_from: set[bytes] = set()
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(0))
    while True:
        ident, seq_b, payload = sock.recv_multipart()
        seq = struct.unpack("<Q", seq_b)[0]
        msg = decode_message(payload)
        if isinstance(msg, Hello):
            hello_from.add(ident)
            ack = Ack(seq=seq)
        elif ident not in hello_from:
            ack = Ack(seq=seq, ok=False, error="hello first")
        elif isinstance(msg, StepMsg):
            record = msg.model_dump(exclude={"images", "type", "schema_version", "robot_id", "episode_id"})
            new = store.append_step(msg.robot_id, msg.episode_id, msg.step, record, msg.images)
            ack = Ack(seq=seq, duplicate=not new)
        elif isinstance(msg, EpisodeEnd):
            new = store.finish(msg.robot_id, msg.episode_id, {
                "source": "online", "outcome": msg.outcome, "label_source": msg.label_source,
                "n_steps": msg.n_steps, "instruction": msg.instruction, "task": msg.task, **msg.extra})
            ack = Ack(seq=seq, duplicate=not new)
        else:
            ack = Ack(seq=seq, ok=False, error="unexpected")
        sock.send_multipart([ident, seq_b, encode_message(ack)])


# ------------------------------------------------------------------ helpers for the tests
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(pred, timeout: float, what: str, interval: float = 0.1):
    """``pred()``'s first truthy value, polled every ``interval`` s; AssertionError after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


class Proc:
    """A subprocess that is ready when ``ready()`` says so (default: it wrote its port to
    ``port_file``); killed and reaped by ``stop``/``kill``."""

    def __init__(self, argv: list[str], log_file: Path, port_file: Path | None = None, port: int | None = None,
                 ready=None, env: dict | None = None, ready_timeout: float = 120.0):
        self.argv, self.log_file = argv, Path(log_file)
        self.port_file = Path(port_file) if port_file else None
        self.port = port
        self.ready = ready
        self.env = {**os.environ, "PYTHONPATH": str(ROOT), **(env or {})}
        self.ready_timeout = ready_timeout
        self.proc: subprocess.Popen | None = None

    def _is_ready(self) -> bool:
        if self.port_file is not None:
            if not (self.port_file.exists() and self.port_file.read_text().strip()):
                return False
            self.port = int(self.port_file.read_text())
        return self.ready() if self.ready is not None else True

    def start(self) -> Proc:
        if self.port_file is not None:
            self.port_file.unlink(missing_ok=True)
        self._log = open(self.log_file, "ab")
        self.proc = subprocess.Popen(self.argv, cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.argv} exited {self.proc.returncode}: {self.log_file.read_text()[-3000:]}")
            if self._is_ready():
                return self
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.argv} not ready in {self.ready_timeout}s: {self.log_file.read_text()[-3000:]}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if hasattr(self, "_log"):
            self._log.close()


def http_ok(url: str) -> bool:
    import httpx

    try:
        return httpx.get(url, timeout=1.0).status_code == 200
    except httpx.HTTPError:
        return False


def wait_http(url: str, timeout: float = 60.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1.0).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.05)
    raise RuntimeError(f"{url} not up in {timeout}s")


def standin_server(tmp: Path, port: int = 0, **faults) -> Proc:
    argv = [PY, str(Path(__file__).resolve()), "server", "--port", str(port), "--port-file", str(tmp / "server.port")]
    for key, values in faults.items():
        if key in ("late_s", "delay_s", "slow_healthz_s"):
            argv += [f"--{key.replace('_', '-')}", str(values)]
        elif key == "mark":
            argv += ["--mark"] if values else []
        else:
            argv += [f"--{key}", *[str(v) for v in values]]
    p = Proc(argv, tmp / "server.log", port_file=tmp / "server.port").start()
    wait_http(f"http://127.0.0.1:{p.port}/healthz")
    return p


def standin_learner(tmp: Path, store: Path, port: int = 0) -> Proc:
    argv = [PY, str(Path(__file__).resolve()), "learner", "--port", str(port), "--port-file",
            str(tmp / "learner.port"), "--store", str(store)]
    return Proc(argv, tmp / "learner.log", port_file=tmp / "learner.port").start()


# ------------------------------------------------------------------ the real processes
def real_server(run_dir: Path, port: int, log: Path) -> Proc:
    """`vlaloop serve` (auto-label on: the mock's success predicate stands in for the operator),
    ready once a policy is loaded (/readyz)."""
    argv = [PY, "-m", "vlaloop.cli", "--run-dir", str(run_dir), "serve", "--port", str(port), "--auto-label"]
    return Proc(argv, log, port=port, ready=lambda: http_ok(f"http://127.0.0.1:{port}/readyz"),
                env={"OMP_NUM_THREADS": "1"}).start()


def real_learner(run_dir: Path, port: int, log: Path) -> Proc:
    """`vlaloop learn --no-train`: the real ingest (ZeroMQ ROUTER -> EpisodeStore), ready once bound."""
    argv = [PY, "-m", "vlaloop.cli", "--run-dir", str(run_dir), "learn", "--no-train"]

    def bound() -> bool:
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0

    return Proc(argv, log, port=port, ready=bound,
                env={"OMP_NUM_THREADS": "1", "VLALOOP_LEARNER__BIND": f"tcp://127.0.0.1:{port}"}).start()


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("what", choices=["server", "learner"])
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--port-file", required=True)
    p.add_argument("--store", default=None)
    p.add_argument("--chunk", type=int, default=4)
    p.add_argument("--far", type=int, nargs="*", default=[])
    p.add_argument("--nan", type=int, nargs="*", default=[])
    p.add_argument("--late", type=int, nargs="*", default=[])
    p.add_argument("--late-s", type=float, default=1.5)
    p.add_argument("--delay-s", type=float, default=0.0, help="delay every /v1/act reply this long")
    p.add_argument("--slow-healthz-s", type=float, default=0.0, help="delay every /healthz answer this long")
    p.add_argument("--mark", action="store_true", help="droll of every action = 1e-4 x (request index + 1)")
    args = p.parse_args(argv)
    args.far, args.nan, args.late = set(args.far), set(args.nan), set(args.late)
    serve(args) if args.what == "server" else learn(args)


if __name__ == "__main__":
    main()
