"""Hostile-input benchmark: what 4 hostile clients cost a 10 Hz robot, and whether the server's
memory stays flat when clients make up robot and episode ids.

    python -m bench.hostile              # or: vlaloop bench hostile   (~1.5 min on 2 cores)
    python -m bench.hostile --quick      # shorter phases

Part 1 (one run, real ``vlaloop serve`` subprocesses, the tiny policy): a robot sends one /v1/act
every 100 ms and records each reply's round trip while 4 other clients send requests back to back:
normal 96x96 JPEGs, or 631-byte JPEGs whose header claims 4096x4096 pixels. The hostile phase runs
against the default server (the image limit is the robot cameras' size, checked from the header
before decoding) and against one started with ``server.max_image_side=4096``, which lets such an
image through to the decoder as every server did before the header check.

Part 2: server RSS while 10 000 distinct robot ids (each with its frame) and 10 000 distinct episode
ids on the label long-poll arrive, sampled every 2 000.

Prints markdown tables.
"""

from __future__ import annotations

import argparse
import http.client
import json
import socket
import struct
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np

from bench.serving import INSTRUCTION, STATE, Subprocess, _env

TOKEN = "bench-robot-token"
AUTH = {"authorization": f"Bearer {TOKEN}", "content-type": "application/msgpack"}


def jpeg_claiming(side: int) -> bytes:
    """A 96x96 JPEG's bytes cut to its first 600 with the SOF header claiming side x side pixels."""
    from protocol.images import encode_jpeg

    data = bytearray(encode_jpeg(np.zeros((8, 8, 3), np.uint8), quality=50))
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, side, side)
    return bytes(data)


def act_body(robot_id: str, image: bytes, episode_id: str = "bench", step: int = 0) -> bytes:
    from protocol.codec import packb
    from protocol.messages import ActRequest

    return packb(ActRequest(request_id=f"{robot_id}-{step}", robot_id=robot_id, episode_id=episode_id, step=step,
                            t_capture=time.time(), instruction=INSTRUCTION, images={"front": image},
                            state=STATE).to_wire())


def connect(url: str) -> http.client.HTTPConnection:
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=60)
    conn.connect()
    conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def post(conn: http.client.HTTPConnection, path: str, body: bytes, headers: dict | None = None) -> int:
    conn.request("POST", path, body=body, headers=headers or AUTH)
    r = conn.getresponse()
    r.read()
    return r.status


def start(run_dir: str, **server: object) -> Subprocess:
    import sys

    srv = Subprocess([sys.executable, "-m", "vlaloop.cli", "--run-dir", run_dir, "serve", "--port", "0"],
                     _env(1, robot_token=TOKEN, operator_token="bench-operator-token", **server))
    srv.wait_ready("/readyz")
    return srv


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


# ---------------------------------------------------------------- part 1: a 10 Hz robot under load


def robot_under_load(url: str, attack_image: bytes, seconds: float) -> dict:
    """Reply times (ms) of a 10 Hz robot while 4 clients send `attack_image` back to back."""
    from protocol.images import encode_jpeg

    normal = encode_jpeg(np.random.default_rng(0).integers(0, 255, (96, 96, 3), dtype=np.uint8))
    stop = threading.Event()
    statuses: dict[int, int] = {}
    lock = threading.Lock()

    def attacker(i: int) -> None:
        conn, body = connect(url), act_body(f"attacker{i}", attack_image)
        while not stop.is_set():
            status = post(conn, "/v1/act", body)
            with lock:
                statuses[status] = statuses.get(status, 0) + 1
        conn.close()

    threads = [threading.Thread(target=attacker, args=(i,), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    conn, replies, step = connect(url), [], 0
    next_tick = time.monotonic()
    deadline = next_tick + seconds
    while next_tick < deadline:
        time.sleep(max(0.0, next_tick - time.monotonic()))
        t0 = time.perf_counter()
        status = post(conn, "/v1/act", act_body("robot10hz", normal, step=step))
        replies.append((time.perf_counter() - t0) * 1e3 if status == 200 else float("inf"))
        step += 1
        next_tick += 0.1
    stop.set()
    for t in threads:
        t.join(60)
    return {"replies": np.asarray(replies), "attacker_statuses": dict(sorted(statuses.items()))}


def part1(run_dir: str, seconds: float) -> list[str]:
    from protocol.images import encode_jpeg

    normal = encode_jpeg(np.random.default_rng(1).integers(0, 255, (96, 96, 3), dtype=np.uint8))
    hostile = jpeg_claiming(4096)
    rows = []
    for label, server, attack in (("default (camera size, header check)", {}, normal),
                                  ("default (camera size, header check)", {}, hostile),
                                  ("max_image_side=4096 (no effective limit)", {"max_image_side": 4096}, hostile)):
        srv = start(run_dir, **server)
        try:
            rss0 = rss_mb(srv.proc.pid)
            out = robot_under_load(srv.url, attack, seconds)
            rss1 = rss_mb(srv.proc.pid)
        finally:
            srv.stop()
        r = out["replies"]
        what = "normal 96x96 JPEGs" if attack is normal else f"{len(hostile)}-byte JPEGs claiming 4096x4096"
        rows.append(f"| {label} | {what} | {len(r)} | {np.percentile(r, 50):.0f} | {np.percentile(r, 99):.0f} | "
                    f"{r.max():.0f} | {int((r > 1000).sum())} | {out['attacker_statuses']} | {rss0:.0f} → {rss1:.0f} |")
    return ["| server | 4 clients send, back to back | robot replies | p50 ms | p99 ms | max ms | over 1 s "
            "| attackers' statuses | server RSS MB |", "|---|---|---|---|---|---|---|---|---|", *rows]


# ---------------------------------------------------------------- part 2: memory over many ids


def part2(run_dir: str, n: int, clients: int = 4) -> list[str]:
    from protocol.images import encode_jpeg

    frame = encode_jpeg(np.random.default_rng(2).integers(0, 255, (480, 640, 3), dtype=np.uint8), quality=90)
    srv = start(run_dir, robot_forget_s=2.0, max_robots=256)
    operator = {"authorization": "Bearer bench-operator-token"}
    rows, lock, sent = [f"| 0 | {rss_mb(srv.proc.pid):.0f} | - |"], threading.Lock(), [0]
    every = max(1, n // 5)

    def client(k: int) -> None:
        conn, label = connect(srv.url), connect(srv.url)
        for i in range(k, n, clients):
            assert post(conn, "/v1/act", act_body(f"r{i}", frame, episode_id=f"e{i}")) == 200
            # a label long-poll for a distinct episode id, answered at once (timeout 0)
            label.request("GET", f"/v1/robots/r{i}/label?episode_id=e{i}&timeout_s=0", headers=AUTH)
            label.getresponse().read()
            with lock:
                sent[0] += 1
                if sent[0] % every == 0:
                    conn.request("GET", "/v1/robots", headers=operator)
                    tracked = sum(not r["gone"] for r in json.loads(conn.getresponse().read()))
                    rows.append(f"| {sent[0]} | {rss_mb(srv.proc.pid):.0f} | {tracked} |")

    try:
        threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        srv.stop()
    return ["| distinct robot + episode ids sent | server RSS MB | robots tracked (/v1/robots) |",
            "|---|---|---|", *rows]


def main(argv: list[str] | None = None) -> int:
    import torch

    from bench.harness import publish_tiny

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="5 s phases, 2 000 ids")
    parser.add_argument("--seconds", type=float, default=12.0, help="length of each load phase")
    parser.add_argument("--ids", type=int, default=10_000, help="distinct robot/episode ids in part 2")
    parser.add_argument("--part", type=int, choices=[1, 2], default=None, help="run only part 1 or 2")
    args = parser.parse_args(argv)
    seconds, ids = (5.0, 2000) if args.quick else (args.seconds, args.ids)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        publish_tiny(tmp)
        if args.part in (None, 1):
            print(f"\n10 Hz robot's /v1/act round trip while 4 clients load the server ({seconds:.0f} s a phase)\n")
            print("\n".join(part1(tmp, seconds)), flush=True)
        if args.part in (None, 2):
            print(f"\nserver memory over {ids} distinct robot ids (a 640x480 frame each) and episode ids\n")
            print("\n".join(part2(tmp, ids)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
