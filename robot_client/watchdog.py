"""The watchdog: decides, every control tick, whether the arm may move at all.

The arm may move only while an action is *fresh*: the last fresh action arrived less than
``deadline_s`` ago and nobody tripped the watchdog. It is tripped at once (no waiting for the
deadline) when the server is known to be gone, e.g. a refused connection, so a dead server
leaves the arm holding within one control period. Only a new fresh action re-arms it.
"""

from __future__ import annotations

import threading
import time


class Watchdog:
    def __init__(self, deadline_s: float, clock=time.monotonic):
        if deadline_s <= 0:
            raise ValueError("watchdog deadline must be positive")
        self.deadline_s = float(deadline_s)
        self._clock = clock
        self._lock = threading.Lock()
        self._last_fresh: float | None = None  # never fed: not armed, the arm must not move
        self._tripped: str | None = None

    def feed(self, t: float | None = None) -> None:
        """A fresh action arrived (and passed the reply checks)."""
        with self._lock:
            self._last_fresh = self._clock() if t is None else t
            self._tripped = None

    def trip(self, reason: str) -> None:
        """Hold now, whatever the deadline says (server gone, link error)."""
        with self._lock:
            self._tripped = reason

    def reset(self) -> None:
        """Forget everything (new episode): not armed until the first fresh action."""
        with self._lock:
            self._last_fresh = None
            self._tripped = None

    def hold_reason(self, now: float | None = None) -> str | None:
        """None if the arm may move; otherwise why it must hold."""
        now = self._clock() if now is None else now
        with self._lock:
            if self._tripped is not None:
                return self._tripped
            if self._last_fresh is None:
                return "no action yet"
            if now - self._last_fresh > self.deadline_s:
                return f"no fresh action for {now - self._last_fresh:.3f}s (deadline {self.deadline_s:.3f}s)"
            return None

    @property
    def tripped(self) -> str | None:
        with self._lock:
            return self._tripped
