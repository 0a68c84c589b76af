"""ZeroMQ ingestion: robots' DEALERs -> this ROUTER -> the durable episode store.

Framing (docs/architecture.md, "Wire protocol"): a robot sends ``[seq, payload]`` (``seq`` = 8-byte
little-endian unsigned, ``payload`` = ``protocol.messages.encode_message``). The learner answers
``[seq, Ack]`` only after the message is durable in the store (or was a duplicate), so a robot that
keeps unacked messages in its outbox and resends them loses nothing and duplicates nothing.

Rules, per connection (keyed by the ZeroMQ routing identity):
* the first message must be a ``Hello`` with our schema, our config hash and (if configured) our
  token; anything else first is refused with ``"hello first"``;
* a refused message gets ``Ack(ok=False, error=<reason>)``, the reason is logged, and ingestion
  goes on (one bad robot never stops the others);
* steps are appended (frames + record fsynced by the store) THEN acked; a step already stored is
  acked with ``duplicate=True``; ``EpisodeEnd`` writes meta.json last.

Everything runs in one thread that owns the socket (ZeroMQ sockets are not thread-safe) and never
waits for training: the phase loop runs in another thread and reads the store.
"""

from __future__ import annotations

import hmac
import logging
import struct
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import zmq

from episodes.status import StatusBoard
from episodes.store import EpisodeStore, StoreError
from learner.inbox import Inbox
from protocol.codec import CodecError
from protocol.messages import (
    SCHEMA_VERSION,
    Ack,
    EpisodeEnd,
    Hello,
    Relabel,
    StepMsg,
    decode_message,
    encode_message,
)

log = logging.getLogger("learner.ingest")

SEQ = struct.Struct("<Q")
POLL_MS = 100
INBOX_EVERY_S = 0.5
LOG_EVERY_S = 30.0
DRAIN_MAX = 256  # messages handled per wake-up before housekeeping (inbox, counters) runs
# step fields that become the record in steps.log (frames are files; ids are the path)
_NOT_IN_RECORD = {"images", "type", "schema_version", "robot_id", "episode_id", "step"}


class Refused(Exception):
    """A message we answer with ok=False; the text is the reason the robot sees."""


@dataclass
class Connection:
    robot_id: str
    since: float


class IngestCounters:
    """Totals plus a steps/s rate over the last few seconds."""

    def __init__(self, window_s: float = 5.0):
        self.totals: Counter[str] = Counter()
        self.last_refusal = ""
        self._samples: deque[tuple[float, int]] = deque()
        self._window_s = window_s

    def sample(self) -> None:
        now = time.time()
        self._samples.append((now, self.totals["steps"]))
        while len(self._samples) > 2 and now - self._samples[0][0] > self._window_s:
            self._samples.popleft()

    def steps_per_s(self) -> float:
        if len(self._samples) < 2:
            return 0.0
        (t0, n0), (t1, n1) = self._samples[0], self._samples[-1]
        return (n1 - n0) / (t1 - t0) if t1 > t0 else 0.0

    def as_dict(self) -> dict:
        keys = ("steps", "duplicates", "refused", "episodes", "relabels", "hellos", "bytes", "messages")
        return {**{k: int(self.totals[k]) for k in keys}, "steps_per_s": round(self.steps_per_s(), 2),
                "last_refusal": self.last_refusal}


def episode_meta(store: EpisodeStore, msg: EpisodeEnd, learner_phase: str) -> dict:
    """meta.json for an ended robot episode. Per-episode facts (policy versions, safety totals) are
    computed from the durable steps, not from memory, so they survive a learner restart."""
    steps = store.load(msg.robot_id, msg.episode_id).steps
    versions = Counter(int(s.get("policy_version", -1)) for s in steps)
    safety: Counter[str] = Counter()
    for s in steps:
        safety.update({k: int(v) for k, v in (s.get("safety") or {}).items()})
    extra = dict(msg.extra)
    calibration = extra.pop("calibration", None)
    purpose = str(extra.get("purpose", "train"))
    meta = {
        # an operator's recorded demonstration (robot.record_demos) is an expert demo like `vlaloop demos`'
        "source": {"eval": "eval", "demo": "expert"}.get(purpose, "online"),
        "outcome": msg.outcome,
        "label_source": msg.label_source,
        "n_steps": msg.n_steps,
        "instruction": msg.instruction,
        "task": msg.task,
        "policy_versions": sorted(versions),
        # the version that produced most of the episode's steps (a hot-swap may land mid-episode)
        "policy_version": versions.most_common(1)[0][0] if versions else None,
        # the version that served its first step: the policy (and learner phase) it was started under
        "first_policy_version": int(steps[0].get("policy_version", -1)) if steps else None,
        "safety": dict(sorted(safety.items())),
        "purpose": purpose,
        "mode": extra.get("mode"),
        "learner_phase": learner_phase,
        "missing_steps": max(0, msg.n_steps - len(steps)),
        # steps an operator (or the scripted intervener) drove: their segments are demonstrations
        "intervention_steps": sum(1 for s in steps if s.get("intervention")),
        "extra": extra,
    }
    if extra.get("dry_run"):  # the arm held: never labelled, never trained on (episode_rules)
        meta["dry_run"] = True
    if calibration is not None:
        meta["calibration"] = calibration
    return meta


class Ingest:
    """The ROUTER service. ``start()`` binds and runs the thread; ``handle()`` is the per-message
    logic (also used directly by tests)."""

    def __init__(self, store: EpisodeStore, config_hash: str, *, bind: str = "tcp://127.0.0.1:5555",
                 token: str = "", max_message_bytes: int = 32 * 1024 * 1024,
                 status: StatusBoard | None = None, inbox_dir: str | Path | None = None,
                 on_episode: Callable[[dict], None] | None = None, group_commit: bool = True):
        self.store = store
        self.group_commit = group_commit  # False: one message at a time (the benchmark's baseline)
        self.config_hash = config_hash
        self.bind = bind
        self.token = token
        self.max_message_bytes = max_message_bytes
        self.status = status
        self.on_episode = on_episode
        self.counters = IngestCounters()
        # Steps that reached us but could not be stored (disk full), per episode. Their EpisodeEnd is
        # not applied (nor acked) until they are stored: meta.json closes an episode, and a closed
        # episode drops late steps, so ending it with holes would lose the steps the robot resends.
        self._unstored: dict[tuple[str, str], set[int]] = {}
        self.connections: dict[bytes, Connection] = {}
        self.inbox = Inbox(inbox_dir, store, on_relabel=self._episode_changed) if inbox_dir else None
        self.endpoint: str | None = None
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._next_inbox = 0.0  # housekeeping schedule (see _housekeeping)
        self._next_log, self._logged_messages = 0.0, 0

    @classmethod
    def from_config(cls, config, run_dir: str | Path, store: EpisodeStore | None = None,
                    status: StatusBoard | None = None, **kw) -> Ingest:
        run_dir = Path(run_dir)
        lc = config.learner
        return cls(store or EpisodeStore(run_dir / "episodes"), config.config_hash(), bind=lc.bind,
                   token=lc.token, max_message_bytes=lc.max_message_bytes, status=status,
                   inbox_dir=run_dir / "inbox", **kw)

    # ------------------------------------------------------------------ message handling
    def _episode_changed(self, meta: dict) -> None:
        if self.status:
            self.status.record_episodes([meta])
        if self.on_episode:
            self.on_episode(meta)

    def _hello(self, identity: bytes, msg: Hello) -> Ack:
        self.connections.pop(identity, None)  # a failed re-hello also ends the old session
        if self.token and not hmac.compare_digest(msg.token.encode(), self.token.encode()):
            raise Refused(f"bad token for robot {msg.robot_id!r}: the hello token does not match the "
                          "learner's token (learner.token)")
        if msg.config_hash != self.config_hash:
            raise Refused(f"config hash mismatch: robot {msg.robot_id!r} sent {msg.config_hash}, learner has "
                          f"{self.config_hash} (model cameras/image_size/chunk/action_dim/state_dim must agree)")
        # a robot that reconnects gets a new identity: forget its old connections (bounded state)
        for old in [i for i, c in self.connections.items() if c.robot_id == msg.robot_id]:
            del self.connections[old]
        self.connections[identity] = Connection(robot_id=msg.robot_id, since=time.time())
        self.counters.totals["hellos"] += 1
        log.info("robot %s connected (identity %s)", msg.robot_id, identity.hex())
        return Ack(seq=0)

    def _mark_unstored(self, steps: list[StepMsg], failed: bool) -> None:
        for m in steps:
            key = (m.robot_id, m.episode_id)
            if failed:
                self._unstored.setdefault(key, set()).add(m.step)
            elif key in self._unstored:
                self._unstored[key].discard(m.step)
                if not self._unstored[key]:
                    del self._unstored[key]

    def _step(self, msg: StepMsg) -> Ack:
        record = msg.model_dump(exclude=_NOT_IN_RECORD)
        record["t_ingest"] = time.time()
        try:
            stored = self.store.append_step(msg.robot_id, msg.episode_id, msg.step, record, msg.images)
        except OSError:
            self._mark_unstored([msg], failed=True)
            raise
        self._mark_unstored([msg], failed=False)
        self.counters.totals["steps" if stored else "duplicates"] += 1
        return Ack(seq=0, duplicate=not stored)

    def _end(self, msg: EpisodeEnd) -> Ack:
        missing = self._unstored.get((msg.robot_id, msg.episode_id))
        if missing:  # not acked: the robot resends the steps, then this end (see _unstored)
            raise OSError(f"episode {msg.robot_id}/{msg.episode_id} still lacks {len(missing)} step(s) "
                          f"that could not be stored; not ending it yet")
        phase = self.status.phase if self.status else "idle"
        meta = episode_meta(self.store, msg, phase)
        if not self.store.finish(msg.robot_id, msg.episode_id, meta):
            self.counters.totals["duplicates"] += 1
            return Ack(seq=0, duplicate=True)
        self.counters.totals["episodes"] += 1
        full = self.store.read_meta(msg.robot_id, msg.episode_id)
        log.info("episode %s/%s ended: %s (%s, %d steps, source %s)", msg.robot_id, msg.episode_id,
                 msg.outcome, msg.label_source, msg.n_steps, meta["source"])
        self._episode_changed(full)
        return Ack(seq=0)

    def _relabel(self, msg: Relabel) -> Ack:
        meta = self.store.relabel(msg.robot_id, msg.episode_id, msg.outcome)
        self.counters.totals["relabels"] += 1
        log.info("relabelled %s/%s -> %s (message)", msg.robot_id, msg.episode_id, msg.outcome)
        self._episode_changed(meta)
        return Ack(seq=0)

    def _decode(self, identity: bytes, frames: list[bytes]):
        """Framing + decoding: returns (seq_frame, seq, message or None, refusal Ack or None)."""
        self.counters.totals["messages"] += 1
        self.counters.totals["bytes"] += sum(len(f) for f in frames)
        seq_frame = frames[0] if frames else b""
        seq = SEQ.unpack(seq_frame)[0] if len(seq_frame) == SEQ.size else -1
        try:
            if len(frames) != 2:
                raise Refused(f"expected 2 frames [seq, payload], got {len(frames)}")
            if seq < 0:
                raise Refused(f"seq frame must be 8 bytes (little-endian u64), got {len(seq_frame)}")
            try:
                return seq_frame, seq, decode_message(frames[1]), None
            except CodecError as e:  # SchemaError is a CodecError
                raise Refused(str(e)) from None
        except Refused as e:
            return seq_frame, seq, None, self._refuse(identity, seq, str(e))

    def _check_connection(self, identity: bytes, msg) -> None:
        conn = self.connections.get(identity)
        if conn is None:
            raise Refused("hello first")
        if getattr(msg, "robot_id", None) != conn.robot_id:
            raise Refused(f"robot_id {getattr(msg, 'robot_id', None)!r} does not match this connection's "
                          f"hello ({conn.robot_id!r})")

    def _dispatch(self, identity: bytes, seq: int, msg) -> Ack | None:
        """Apply one decoded message; returns its Ack once it is durable (or why it was refused), or
        None when storage failed (disk full): the message stays in the robot's outbox and is resent."""
        try:
            if isinstance(msg, Hello):
                ack = self._hello(identity, msg)
            else:
                self._check_connection(identity, msg)
                if isinstance(msg, StepMsg):
                    ack = self._step(msg)
                elif isinstance(msg, EpisodeEnd):
                    ack = self._end(msg)
                elif isinstance(msg, Relabel):
                    ack = self._relabel(msg)
                else:
                    raise Refused(f"unexpected message type {type(msg).__name__} "
                                  "(robots send hello/step/episode_end/relabel)")
            ack.seq = seq
            return ack
        except (Refused, StoreError) as e:
            return self._refuse(identity, seq, str(e))
        except OSError as e:  # disk full, I/O error: not durable, so no ack; the robot resends it later
            log.error("message seq %d not stored (%s); not acked, the robot will resend it", seq, e)
            return None
        except Exception as e:  # a bug: refuse this message, keep serving the others
            log.exception("internal error on message seq %d", seq)
            return self._refuse(identity, seq, f"internal error: {type(e).__name__}: {e}")

    def handle(self, identity: bytes, frames: list[bytes]) -> list[bytes] | None:
        """One inbound message -> the reply frames ``[seq, Ack]``. Returns only after the message is
        durable (or refused). An unparseable seq frame is echoed as is, with Ack.seq = -1."""
        seq_frame, seq, msg, ack = self._decode(identity, frames)
        if ack is None:
            ack = self._dispatch(identity, seq, msg)
        return None if ack is None else [seq_frame, encode_message(ack)]

    def handle_batch(self, messages: list[tuple[bytes, list[bytes]]]) -> list[tuple[bytes, list[bytes]]]:
        """Many inbound messages -> ``(identity, reply frames)`` in arrival order, with the same
        result as ``handle`` on each in turn. Runs of steps are group-committed (one concurrent
        fsync round per run instead of several fsyncs per step); any other message is applied
        only after the steps before it are durable, so an EpisodeEnd always sees its steps."""
        replies: list[tuple[bytes, list[bytes]]] = []
        run: list[tuple[bytes, bytes, int, StepMsg]] = []
        for identity, frames in messages:
            seq_frame, seq, msg, ack = self._decode(identity, frames)
            if ack is None and isinstance(msg, StepMsg):
                try:
                    self._check_connection(identity, msg)
                    run.append((identity, seq_frame, seq, msg))
                    continue
                except Refused as e:
                    ack = self._refuse(identity, seq, str(e))
            replies.extend(self._commit_steps(run))
            run = []
            if ack is None:
                ack = self._dispatch(identity, seq, msg)
            if ack is not None:
                replies.append((identity, [seq_frame, encode_message(ack)]))
        replies.extend(self._commit_steps(run))
        return replies

    def _commit_steps(self, run: list[tuple[bytes, bytes, int, StepMsg]]) -> list[tuple[bytes, list[bytes]]]:
        if not run:
            return []
        now = time.time()
        items = [(m.robot_id, m.episode_id, m.step, {**m.model_dump(exclude=_NOT_IN_RECORD), "t_ingest": now},
                  m.images) for _, _, _, m in run]
        try:
            stored = self.store.append_steps(items)
        except StoreError:  # one bad step (e.g. a camera name): apply them one by one, refuse only it
            acks = [(i, f, self._dispatch(i, seq, m)) for i, f, seq, m in run]
            return [(i, [f, encode_message(a)]) for i, f, a in acks if a is not None]
        except OSError as e:  # disk full: none of these is acked, the robots resend them later
            log.error("%d steps not stored (%s); not acked, the robots will resend them", len(run), e)
            self._mark_unstored([m for _, _, _, m in run], failed=True)
            return []
        except Exception as e:
            log.exception("internal error committing %d steps", len(run))
            return [(i, [f, encode_message(self._refuse(i, seq, f"internal error: {type(e).__name__}: {e}"))])
                    for i, f, seq, _ in run]
        self._mark_unstored([m for _, _, _, m in run], failed=False)
        out = []
        for (identity, seq_frame, seq, _), ok in zip(run, stored, strict=True):
            self.counters.totals["steps" if ok else "duplicates"] += 1
            out.append((identity, [seq_frame, encode_message(Ack(seq=seq, duplicate=not ok))]))
        return out

    def _refuse(self, identity: bytes, seq: int, reason: str) -> Ack:
        self.counters.totals["refused"] += 1
        self.counters.last_refusal = reason
        conn = self.connections.get(identity)
        who = conn.robot_id if conn else f"identity {identity.hex()}"
        log.warning("refused message seq %d from %s: %s", seq, who, reason)
        return Ack(seq=seq, ok=False, error=reason)

    # ------------------------------------------------------------------ the thread
    def start(self, timeout: float = 10.0) -> str:
        """Bind and start serving; returns the bound endpoint (useful with port 0)."""
        self._thread = threading.Thread(target=self._run, name="ingest", daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout):
            raise RuntimeError("ingest did not start")
        if self._error is not None:
            raise RuntimeError(f"ingest could not bind {self.bind}: {self._error}") from self._error
        return self.endpoint

    def stop(self, timeout: float = 10.0) -> None:
        """Stop after the message in progress is durable and acked."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        sock = self._bind()
        if sock is None:
            return
        self._next_log = time.time() + LOG_EVERY_S
        try:
            while not self._stop.is_set():
                if sock.poll(POLL_MS, zmq.POLLIN):
                    self._serve(sock)
                self._housekeeping()
        finally:
            sock.close()
            log.info("ingest stopped: %s", self.counters.as_dict())

    def _bind(self) -> zmq.Socket | None:
        """The ROUTER socket, bound; None (with `_error` set) if the address cannot be bound."""
        sock = zmq.Context.instance().socket(zmq.ROUTER)
        sock.setsockopt(zmq.LINGER, 1000)
        sock.setsockopt(zmq.MAXMSGSIZE, self.max_message_bytes)  # bigger inbound messages drop the peer
        sock.setsockopt(zmq.ROUTER_HANDOVER, 1)  # a robot reconnecting with the same identity takes over
        try:
            sock.bind(self.bind)
            self.endpoint = sock.getsockopt_string(zmq.LAST_ENDPOINT)
        except zmq.ZMQError as e:
            self._error = e
            sock.close(0)
            self._ready.set()
            return None
        log.info("ingest listening on %s (schema %d, config hash %s, token %s)", self.endpoint,
                 SCHEMA_VERSION, self.config_hash, "required" if self.token else "not required")
        self._ready.set()
        return sock

    def _serve(self, sock: zmq.Socket) -> None:
        """Whatever has arrived (up to DRAIN_MAX messages) is committed together, then acked."""
        batch = []
        for _ in range(DRAIN_MAX):
            try:
                identity, *frames = sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                break
            batch.append((identity, frames))
        if self.group_commit:
            replies = self.handle_batch(batch)
        else:
            replies = [(identity, self.handle(identity, frames)) for identity, frames in batch]
        for identity, reply in replies:
            if reply is not None:
                sock.send_multipart([identity, *reply])

    def _housekeeping(self) -> None:
        """Between wake-ups: operator relabels from the inbox, the steps/s rate, a log line, status.json."""
        now = time.time()
        if self.inbox is not None and now >= self._next_inbox:
            self._next_inbox = now + INBOX_EVERY_S
            try:
                self.inbox.scan()
            except Exception:
                log.exception("inbox scan failed")
        self.counters.sample()
        if now >= self._next_log and self.counters.totals["messages"] != self._logged_messages:
            self._next_log, self._logged_messages = now + LOG_EVERY_S, self.counters.totals["messages"]
            c = self.counters.as_dict()
            log.info("ingest: %d steps (%.1f/s), %d episodes, %d duplicates, %d refused, robots %s",
                     c["steps"], c["steps_per_s"], c["episodes"], c["duplicates"], c["refused"], self._robots())
        if self.status is not None:
            try:  # a status write failing (disk full) must not stop ingestion
                self.status.set_ingest({**self.counters.as_dict(), "endpoint": self.endpoint,
                                        "robots": self._robots(),
                                        "inbox_applied": self.inbox.applied if self.inbox else 0})
            except OSError:
                log.exception("status.json write failed")

    def _robots(self) -> list[str]:
        return sorted({c.robot_id for c in self.connections.values()})
