"""Ingest throughput: robots streaming steps (JPEG frames) over ZeroMQ into the durable store.

``python -m bench.learner_ingest [--seconds S] [--clients N] [--cameras C]`` prints a table: one
client (the baseline) and N concurrent clients, each keeping a window of unacked steps in flight
like the robot's outbox does. Every step is acked only after its frames and record are fsynced,
so the numbers include the durability cost. ``IngestClient`` is also what the tests use.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing
import struct
import tempfile
import time
from pathlib import Path

import numpy as np
import zmq

from protocol.images import encode_jpeg
from protocol.messages import Ack, EpisodeEnd, Hello, StepMsg, decode_message, encode_message

SEQ = struct.Struct("<Q")


class IngestClient:
    """A robot's side of the channel: DEALER, ``[seq, payload]`` out, ``[seq, Ack]`` back."""

    def __init__(self, endpoint: str, identity: bytes | None = None):
        self.sock = zmq.Context.instance().socket(zmq.DEALER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if identity:
            self.sock.setsockopt(zmq.ROUTING_ID, identity)
        self.sock.connect(endpoint)
        self.seq = 0

    def send_raw(self, frames: list[bytes]) -> None:
        self.sock.send_multipart(frames)

    def send(self, msg, seq: int | None = None) -> int:
        if seq is None:
            self.seq += 1
            seq = self.seq
        self.sock.send_multipart([SEQ.pack(seq), encode_message(msg)])
        return seq

    def recv_ack(self, timeout: float = 10.0) -> Ack:
        if not self.sock.poll(int(timeout * 1000), zmq.POLLIN):
            raise TimeoutError(f"no ack within {timeout} s")
        seq_frame, payload = self.sock.recv_multipart()
        ack = decode_message(payload)
        if not isinstance(ack, Ack):
            raise RuntimeError(f"expected an ack, got {type(ack).__name__}")
        if len(seq_frame) == SEQ.size and SEQ.unpack(seq_frame)[0] != ack.seq:
            raise RuntimeError("ack frame and Ack.seq disagree")
        return ack

    def request(self, msg, timeout: float = 10.0) -> Ack:
        seq = self.send(msg)
        ack = self.recv_ack(timeout)
        if ack.seq != seq:
            raise RuntimeError(f"ack for seq {ack.seq}, expected {seq}")
        return ack

    def close(self) -> None:
        self.sock.close(0)


def make_step(robot_id: str, episode_id: str, step: int, images: dict[str, bytes], version: int = 0) -> StepMsg:
    return StepMsg(robot_id=robot_id, episode_id=episode_id, step=step, images=images,
                   state=[0.5, 0.0, 0.2, 0.0, 0.0, 0.0, 1.0], action=[0.01 * (step % 5), 0, 0, 0, 0, 0, 1],
                   action_chunk=[[0.0] * 7] * 4, chunk_index=step % 4, log_prob=-3.0, value=0.1,
                   policy_version=version, instruction="reach the red block", t_capture=time.time(),
                   t_act=time.time(), safety={"clamped": step % 3 == 0})


def sample_frames(cameras: int, size: int = 96) -> dict[str, bytes]:
    """Textured frames so JPEG sizes are realistic (a flat image compresses to nothing)."""
    rng = np.random.default_rng(0)
    out = {}
    for i in range(cameras):
        img = (rng.random((size, size, 3)) * 64 + np.linspace(0, 160, size)[None, :, None]).astype(np.uint8)
        out["front" if i == 0 else f"cam{i}"] = encode_jpeg(img)
    return out


def _stream(endpoint: str, robot_id: str, config_hash: str, cameras: int, ready, go, seconds: float,
            window: int, episode_len: int, results) -> None:
    """One robot (its own process, so clients never share the learner's GIL): stream steps with up
    to ``window`` unacked, for ``seconds`` after ``go``."""
    images = sample_frames(cameras)
    client = IngestClient(endpoint)
    try:
        assert client.request(Hello(robot_id=robot_id, config_hash=config_hash)).ok
        ready.release()
        go.wait()
        sent_at: dict[int, float] = {}
        latencies: list[float] = []
        episode, step = 0, 0
        end = time.perf_counter() + seconds
        while time.perf_counter() < end or sent_at:
            while time.perf_counter() < end and len(sent_at) < window:
                if step == episode_len:
                    msg = EpisodeEnd(robot_id=robot_id, episode_id=f"e{episode}", outcome="success",
                                     label_source="auto", n_steps=episode_len, instruction="reach")
                    episode, step = episode + 1, 0
                else:
                    msg = make_step(robot_id, f"e{episode}", step, images)
                    step += 1
                sent_at[client.send(msg)] = time.perf_counter()
            ack = client.recv_ack(timeout=30)
            assert ack.ok, ack.error
            latencies.append(time.perf_counter() - sent_at.pop(ack.seq))
        results.put(latencies)
    finally:
        client.close()


def ingest_benchmark(n_clients: int = 4, cameras: int = 2, seconds: float = 5.0, window: int = 32,
                     episode_len: int = 50, root: str | Path | None = None, group_commit: bool = True) -> dict:
    """An in-process Ingest (real ROUTER on loopback TCP, real fsyncing store) against ``n_clients``
    robot processes streaming for ``seconds``; returns throughput and ack latency (send -> ack)."""
    from episodes.store import EpisodeStore
    from learner.ingest import Ingest

    mp = multiprocessing.get_context("spawn")
    with tempfile.TemporaryDirectory(dir=root) as tmp:
        ingest = Ingest(EpisodeStore(Path(tmp) / "episodes"), "bench", bind="tcp://127.0.0.1:0",
                        group_commit=group_commit)
        endpoint = ingest.start()
        ready, go, results = mp.Semaphore(0), mp.Event(), mp.Queue()
        procs = [mp.Process(target=_stream, args=(endpoint, f"bench{i}", "bench", cameras, ready, go, seconds,
                                                  window, episode_len, results)) for i in range(n_clients)]
        for p in procs:
            p.start()
        try:
            for _ in procs:
                if not ready.acquire(timeout=60):
                    raise RuntimeError("benchmark clients did not connect")
            before = ingest.counters.as_dict()
            t0 = time.perf_counter()
            go.set()
            lat = np.array([x for _ in procs for x in results.get(timeout=seconds + 60)]) * 1000
            elapsed = time.perf_counter() - t0
            after = ingest.counters.as_dict()
        finally:
            for p in procs:
                p.join(10)
                if p.is_alive():
                    p.kill()
            ingest.stop()
    steps = after["steps"] - before["steps"]
    frame_bytes = sum(len(b) for b in sample_frames(cameras).values())
    return {
        "clients": n_clients, "cameras": cameras, "seconds": round(elapsed, 2),
        "commit": "group" if group_commit else "per step",
        "steps": steps, "steps_per_s": steps / elapsed, "frames_per_s": steps * cameras / elapsed,
        "mb_per_s": (after["bytes"] - before["bytes"]) / elapsed / 1e6, "jpeg_bytes_per_step": frame_bytes,
        "ack_p50_ms": float(np.percentile(lat, 50)) if lat.size else float("nan"),
        "ack_p99_ms": float(np.percentile(lat, 99)) if lat.size else float("nan"),
        "refused": after["refused"], "duplicates": after["duplicates"],
    }


def format_table(rows: list[dict]) -> str:
    head = "| commit | clients | cameras | steps/s | frames/s | MB/s | ack p50 ms | ack p99 ms | steps |"
    lines = [head, "|" + "---|" * 9]
    for r in rows:
        lines.append(f"| {r['commit']} | {r['clients']} | {r['cameras']} | {r['steps_per_s']:.0f} | "
                     f"{r['frames_per_s']:.0f} | "
                     f"{r['mb_per_s']:.2f} | {r['ack_p50_ms']:.1f} | {r['ack_p99_ms']:.1f} | {r['steps']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.learner_ingest", description=__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=5.0)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--cameras", type=int, default=2)
    p.add_argument("--window", type=int, default=32, help="unacked steps in flight per client")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    rows = [  # baselines: fsync per step (no group commit); one robot
        ingest_benchmark(1, args.cameras, args.seconds, args.window, group_commit=False),
        ingest_benchmark(args.clients, args.cameras, args.seconds, args.window, group_commit=False),
        ingest_benchmark(1, args.cameras, args.seconds, args.window),
        ingest_benchmark(args.clients, args.cameras, args.seconds, args.window),
    ]
    print(f"ingest: {args.seconds:.0f} s per row, {rows[0]['jpeg_bytes_per_step']} JPEG bytes/step, "
          f"window {args.window}, every step fsynced before its ack")
    print(format_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
