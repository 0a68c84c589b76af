"""The on-disk outbox: every robot->learner message is durable here BEFORE it is sent, and stays
until the learner acks it (docs/architecture.md, "Wire protocol").

Layout of the outbox directory:
  ``<seq:020d>.msg``  one message each: ``[u32 length][u32 crc32][payload]``, written to a temp
                      file, fsynced, renamed, directory fsynced. A crash mid-write leaves only a
                      ``.tmp`` file, removed on the next start.
  ``seq.lease``       a high-water mark for sequence numbers, persisted in blocks of
                      ``SEQ_LEASE`` so seq stays unique and increasing across restarts even when
                      every message was acked (and deleted) without an fsync per message for it.

Disk use is bounded by ``max_bytes``: above ``warn_fraction`` of it ``near_full`` turns on (the
streamer logs loudly and reports it in the robot status); at the bound ``append`` refuses step
messages (``OutboxFull``) while small control messages (hello, episode_end) still fit in a
reserved slack, so an episode can always be closed.
"""

from __future__ import annotations

import logging
import os
import struct
import threading
import zlib
from pathlib import Path

from episodes.durable import write_atomic

log = logging.getLogger(__name__)

_HEADER = struct.Struct("<II")
SEQ_LEASE = 1000
CONTROL_SLACK_BYTES = 1024 * 1024  # reserved beyond max_bytes for hello / episode_end


class OutboxFull(RuntimeError):
    pass





class Outbox:
    """Thread-safe. ``append`` -> durable; ``pending`` -> unacked, in seq order; ``ack`` -> gone."""

    def __init__(self, root: str | os.PathLike, max_bytes: int = 2 * 1024**3, warn_fraction: float = 0.8):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.max_bytes = int(max_bytes)
        self.warn_fraction = float(warn_fraction)
        self._lock = threading.Lock()
        self._sizes: dict[int, int] = {}  # seq -> bytes on disk, for every unacked message
        self.refused = 0  # step messages refused because the outbox was full
        for tmp in self.root.glob("*.tmp"):  # a crash mid-write: the message was never appended
            tmp.unlink()
        highest = -1
        for p in self.root.glob("*.msg"):
            try:
                seq = int(p.stem)
            except ValueError:
                continue
            self._sizes[seq] = p.stat().st_size
            highest = max(highest, seq)
        lease = self._read_lease()
        self._next_seq = max(highest + 1, lease)
        self._lease_until = self._next_seq  # force a new lease on the first append
        self._warned = False

    # ---------------------------------------------------------------- sequence numbers
    def _read_lease(self) -> int:
        try:
            return int((self.root / "seq.lease").read_text().strip())
        except (FileNotFoundError, ValueError):
            return 1

    def _take_seq(self) -> int:
        seq = self._next_seq
        if seq >= self._lease_until:  # persist a new block before handing out its first number
            self._lease_until = seq + SEQ_LEASE
            write_atomic(self.root / "seq.lease", str(self._lease_until).encode())
        self._next_seq += 1
        return seq

    # ---------------------------------------------------------------- appending
    @property
    def bytes_used(self) -> int:
        with self._lock:
            return sum(self._sizes.values())

    @property
    def near_full(self) -> bool:
        return self.bytes_used >= self.warn_fraction * self.max_bytes

    def append(self, payload: bytes, control: bool = False) -> int:
        """Make one message durable and return its seq. ``control`` messages (hello, episode_end)
        may use the reserved slack above ``max_bytes``. Raises OutboxFull."""
        size = _HEADER.size + len(payload)
        with self._lock:
            used = sum(self._sizes.values())
            limit = self.max_bytes + (CONTROL_SLACK_BYTES if control else 0)
            if used + size > limit:
                self.refused += 1
                raise OutboxFull(f"outbox {self.root} holds {used} bytes unacked (limit {self.max_bytes}); "
                                 f"the learner is not acking - message refused")
            seq = self._take_seq()
            write_atomic(self.root / f"{seq:020d}.msg",
                           _HEADER.pack(len(payload), zlib.crc32(payload)) + payload)
            self._sizes[seq] = size
            used += size
        if used >= self.warn_fraction * self.max_bytes and not self._warned:
            self._warned = True
            log.warning("OUTBOX NEAR FULL: %d of %d bytes unacked in %s - is the learner running?",
                        used, self.max_bytes, self.root)
        elif used < 0.5 * self.warn_fraction * self.max_bytes:
            self._warned = False
        return seq

    # ---------------------------------------------------------------- reading / acking
    def seqs(self) -> list[int]:
        with self._lock:
            return sorted(self._sizes)

    def read(self, seq: int) -> bytes | None:
        """The payload of an unacked message; None if it was acked meanwhile or is corrupt."""
        try:
            data = (self.root / f"{seq:020d}.msg").read_bytes()
        except FileNotFoundError:
            return None
        if len(data) < _HEADER.size:
            return None
        length, crc = _HEADER.unpack_from(data)
        body = data[_HEADER.size:]
        if len(body) != length or zlib.crc32(body) != crc:
            log.error("outbox message %d is corrupt on disk; dropping it", seq)
            self.ack(seq)
            return None
        return body

    def pending(self) -> list[tuple[int, bytes]]:
        out = []
        for seq in self.seqs():
            body = self.read(seq)
            if body is not None:
                out.append((seq, body))
        return out

    def ack(self, seq: int) -> bool:
        """Forget a message the learner made durable. False if it was not (or no longer) pending."""
        with self._lock:
            if self._sizes.pop(seq, None) is None:
                return False
            try:
                (self.root / f"{seq:020d}.msg").unlink()
            except FileNotFoundError:
                pass
            return True

    def __len__(self) -> int:
        with self._lock:
            return len(self._sizes)
