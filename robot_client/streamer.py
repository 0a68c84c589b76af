"""Streams Hello / StepMsg / EpisodeEnd to the learner over ZeroMQ, at least once, in order.

One thread owns the DEALER socket (ZeroMQ sockets are not thread-safe). The control loop only
calls ``submit`` (a non-blocking queue put). The thread then, for each message:

1. appends it durably to the ``Outbox`` (fsync) -- before any send;
2. sends ``[seq (u64 LE), payload]`` once a Hello on the current connection has been acked;
3. deletes it from the outbox when the learner's Ack for that seq arrives.

Reconnect: a disconnect (socket monitor), an ack timeout or an ``Ack(error="hello first")``
throws the socket away (dropping whatever ZeroMQ had queued), opens a fresh one, sends a fresh
Hello first and, once it is acked, resends every unacked message in seq order. The learner drops
duplicates by (robot_id, episode_id, step), so at-least-once becomes exactly-once in the store.
"""

from __future__ import annotations

import logging
import queue
import struct
import threading
import time
from collections.abc import Callable

import zmq
import zmq.utils.monitor

from protocol.codec import CodecError
from protocol.messages import Ack, Hello, decode_message, encode_message
from robot_client.outbox import Outbox, OutboxFull

log = logging.getLogger(__name__)

_SEQ = struct.Struct("<Q")
LEARNER_TOKEN_REFUSAL = "bad token"  # how learner/ingest.py's refusal of a hello's token starts


def learner_refusal(error: str) -> str | None:
    """The one-line message for a refused hello that retrying cannot fix (a wrong token), else None."""
    if not error.startswith(LEARNER_TOKEN_REFUSAL):
        return None
    return (f"the learner refused the robot's token ({error}): set robot.token (VLALOOP_ROBOT__TOKEN) to "
            "the learner's learner.token")


class Streamer:
    def __init__(self, outbox: Outbox, learner_addr: str, robot_id: str, config_hash: str,
                 token: str = "", ack_timeout_s: float = 3.0, window: int = 64,
                 hello_retry_s: float = 1.0, on_refused: Callable[[str], None] | None = None):
        self.outbox = outbox
        self.learner_addr = learner_addr
        self.robot_id = robot_id
        self.config_hash = config_hash
        self.token = token
        self.ack_timeout_s = ack_timeout_s
        self.window = window
        self.hello_retry_s = hello_retry_s
        self.on_refused = on_refused  # called with the one-line reason when the learner refuses the token
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="learner-streamer", daemon=True)
        self._hello_seqs: set[int] = set()
        for seq, payload in outbox.pending():  # Hellos are per connection: old ones are obsolete
            try:
                if isinstance(decode_message(payload), Hello):
                    self._hello_seqs.add(seq)
            except CodecError:
                pass
        # observable state (read by the status reporter and the tests)
        self.ready = False  # a Hello on the current connection was acked
        self.connections = 0
        self.sent = 0
        self.resent = 0
        self.acked = 0
        self.rejected = 0  # acks with ok=False other than "hello first": the learner refused it
        self.dropped_full = 0  # messages refused by a full outbox
        self.last_error = ""
        self._submitted = 0
        self._processed = 0
        self._sent_before: set[int] = set()  # seqs sent at least once and not acked yet

    # ---------------------------------------------------------------- API for the control loop
    def start(self) -> Streamer:
        self._thread.start()
        return self

    def submit(self, msg) -> None:
        """Hand a message to the streamer; never blocks."""
        self._submitted += 1
        self._queue.put(msg)

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)

    def idle(self) -> bool:
        """Everything submitted so far is durable in the learner (acked)."""
        return self._submitted == self._processed and len(self.outbox) == 0

    def persisted(self, timeout: float) -> bool:
        """Wait until every message submitted so far is in the outbox on disk (not necessarily
        acked: the outbox resends it after a crash). False if that took longer than ``timeout``."""
        target, deadline = self._submitted, time.monotonic() + timeout
        while self._processed < target:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.002)
        return True

    def flush(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.idle():
                return True
            time.sleep(0.01)
        return self.idle()

    @property
    def near_full(self) -> bool:
        return self.outbox.near_full

    # ---------------------------------------------------------------- the thread

    def _run(self) -> None:
        ctx = zmq.Context.instance()
        sock = monitor = None
        inflight: dict[int, float] = {}  # seq -> monotonic send time
        hello_seq: int | None = None
        hello_sent = 0.0
        poller = zmq.Poller()
        try:
            while not self._stop.is_set():
                if sock is None:
                    sock, monitor = self._connect(ctx)
                    poller = zmq.Poller()
                    poller.register(sock, zmq.POLLIN)
                    poller.register(monitor, zmq.POLLIN)
                    inflight.clear()
                    self.ready = False
                    hello_seq, hello_sent = self._send_hello(sock), time.monotonic()

                self._drain_submissions()

                if self.ready:
                    self._send_window(sock, inflight)

                events = dict(poller.poll(timeout=20))
                reconnect = ""
                if monitor in events:
                    reconnect = self._check_monitor(monitor)
                if sock in events:
                    reconnect = self._read_acks(sock, inflight, hello_seq) or reconnect
                now = time.monotonic()
                if not self.ready and now - hello_sent > self.ack_timeout_s:
                    reconnect = reconnect or "no ack for hello"
                elif self.ready and inflight and now - min(inflight.values()) > self.ack_timeout_s:
                    reconnect = reconnect or f"no ack for {len(inflight)} messages in {self.ack_timeout_s}s"
                if reconnect:
                    log.warning("learner link: %s; reconnecting to %s", reconnect, self.learner_addr)
                    self.last_error = reconnect
                    self._close(sock, monitor)
                    sock = monitor = None
        finally:
            if sock is not None:
                self._close(sock, monitor)

    def _connect(self, ctx: zmq.Context):
        sock = ctx.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        sock.setsockopt(zmq.SNDHWM, 10_000)
        monitor = sock.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        sock.connect(self.learner_addr)
        self.connections += 1
        return sock, monitor

    @staticmethod
    def _close(sock, monitor) -> None:
        try:
            sock.disable_monitor()
        except zmq.ZMQError:
            pass
        monitor.close(linger=0)
        sock.close(linger=0)

    def _send_hello(self, sock) -> int:
        for seq in list(self._hello_seqs):  # a Hello of an earlier connection is meaningless now
            self.outbox.ack(seq)
        self._hello_seqs.clear()
        payload = encode_message(Hello(robot_id=self.robot_id, config_hash=self.config_hash, token=self.token))
        seq = self.outbox.append(payload, control=True)
        self._hello_seqs.add(seq)
        self._send(sock, seq, payload)
        return seq

    def _send(self, sock, seq: int, payload: bytes) -> None:
        try:
            sock.send_multipart([_SEQ.pack(seq), payload], flags=zmq.NOBLOCK, copy=False)
        except zmq.Again:  # HWM reached: the ack timeout will resend it
            pass

    def _drain_submissions(self) -> None:
        while True:
            try:
                msg = self._queue.get_nowait()
            except queue.Empty:
                return
            control = not hasattr(msg, "images")  # only steps carry frames
            try:
                self.outbox.append(encode_message(msg), control=control)
            except OutboxFull as e:
                self.dropped_full += 1
                self.last_error = str(e)
                log.error("%s", e)
            finally:
                self._processed += 1

    def _send_window(self, sock, inflight: dict[int, float]) -> None:
        if len(inflight) >= self.window:
            return
        for seq in self.outbox.seqs():
            if seq in inflight or seq in self._hello_seqs:
                continue
            payload = self.outbox.read(seq)
            if payload is None:
                continue
            self._send(sock, seq, payload)
            inflight[seq] = time.monotonic()
            self.sent += 1
            if seq in self._sent_before:
                self.resent += 1
            self._sent_before.add(seq)
            if len(inflight) >= self.window:
                return

    def _check_monitor(self, monitor) -> str:
        reason = ""
        while True:
            try:
                evt = zmq.utils.monitor.recv_monitor_message(monitor, flags=zmq.NOBLOCK)
            except zmq.Again:
                return reason
            if evt["event"] == zmq.EVENT_DISCONNECTED:
                reason = "learner disconnected"

    def _read_acks(self, sock, inflight: dict[int, float], hello_seq: int | None) -> str:
        while True:
            try:
                frames = sock.recv_multipart(flags=zmq.NOBLOCK)
            except zmq.Again:
                return ""
            try:
                ack = decode_message(frames[-1])
                if not isinstance(ack, Ack):
                    raise CodecError(f"expected an ack, got {type(ack).__name__}")
            except (CodecError, IndexError) as e:
                log.error("learner sent something that is not an ack: %s", e)
                continue
            if ack.seq == hello_seq:
                if ack.ok:
                    self.ready = True
                    self._hello_seqs.discard(ack.seq)
                    self.outbox.ack(ack.seq)
                    continue
                self.last_error = f"learner refused hello: {ack.error}"
                refusal = learner_refusal(ack.error)
                if refusal and self.on_refused is not None:
                    self.on_refused(refusal)
                log.error("%s (retrying in %.1fs)", self.last_error, self.hello_retry_s)
                self._stop.wait(self.hello_retry_s)
                return self.last_error
            inflight.pop(ack.seq, None)
            if not ack.ok and "hello" in ack.error:
                return f"learner wants a hello first ({ack.error})"
            if not ack.ok:
                self.rejected += 1
                self.last_error = f"learner refused message {ack.seq}: {ack.error}"
                log.error("%s", self.last_error)
            self._sent_before.discard(ack.seq)
            if self.outbox.ack(ack.seq):
                self.acked += 1
