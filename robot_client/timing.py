"""The control loop's clock: absolute tick deadlines, the sleep that meets them, realtime scheduling,
and what each tick's timing was (docs/robot_client.md, "The control loop")."""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class TickTiming:
    tick: int
    jitter_ms: float  # actual start - scheduled start
    work_ms: float  # start of tick -> action issued
    latency_ms: float | None  # round trip of a reply adopted in this tick
    started: float = 0.0  # time.monotonic() at the tick's start: the loop's own clock, for tests and logs


class TickSchedule:
    """Tick ``k`` starts at ``t0 + k * period`` (never ``sleep(period)``, which drifts by the work
    time every period); a tick that overran whole periods skips the missed slots."""

    def __init__(self, period: float, t0: float):
        self.period = period
        self.t0 = t0
        self.tick = 0

    @property
    def deadline(self) -> float:
        """When the current tick is due to start."""
        return self.t0 + self.tick * self.period

    def advance(self, now: float) -> int:
        """On to the next tick; returns how many slots were skipped because the last tick overran."""
        self.tick += 1
        late = (now - self.deadline) / self.period
        skipped = int(math.floor(late)) if late >= 1 else 0
        self.tick += skipped
        return skipped


def summarize_timings(timings: list[TickTiming], period_s: float, teleop_ms: list[float] | None = None) -> dict:
    if not timings:
        return {}
    jit = np.array([abs(t.jitter_ms) for t in timings])
    work = np.array([t.work_ms for t in timings])
    lat = np.array([t.latency_ms for t in timings if t.latency_ms is not None])
    teleop = {}
    if teleop_ms:
        teleop = {"teleop_commands": len(teleop_ms), "teleop_latency_p50_ms": float(np.percentile(teleop_ms, 50)),
                  "teleop_latency_p99_ms": float(np.percentile(teleop_ms, 99))}
    return {**teleop,
        "ticks": len(timings), "period_ms": period_s * 1e3,
        "jitter_p50_ms": float(np.percentile(jit, 50)), "jitter_p99_ms": float(np.percentile(jit, 99)),
        "jitter_max_ms": float(jit.max()), "work_p50_ms": float(np.percentile(work, 50)),
        "work_p99_ms": float(np.percentile(work, 99)),
        "latency_p50_ms": float(np.percentile(lat, 50)) if len(lat) else None,
        "latency_p99_ms": float(np.percentile(lat, 99)) if len(lat) else None,
    }


def set_realtime(priority: int) -> str:
    """Put the calling thread under SCHED_FIFO at ``priority`` (Linux; needs root or CAP_SYS_NICE,
    e.g. docker ``--cap-add SYS_NICE`` / ``ulimit -r``). Returns what happened, for the log."""
    if priority <= 0:
        return "normal scheduling"
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
        return f"SCHED_FIFO priority {priority}"
    except (AttributeError, PermissionError, OSError) as e:
        log.warning("realtime priority %d refused (%s); running with normal scheduling", priority, e)
        return f"normal scheduling (SCHED_FIFO refused: {e})"


def sleep_until(deadline: float, wake: threading.Event | None = None, clock=time.monotonic) -> bool:
    """Sleep to an absolute monotonic deadline: coarse sleep, then a short yielding spin for the last
    millisecond (a plain sleep overshoots by up to ~1 ms under load). Returns True early if ``wake``
    is set meanwhile (the caller has something urgent to do, e.g. hold the arm)."""
    while True:
        remaining = deadline - clock()
        if remaining <= 0:
            return False
        if wake is not None and wake.is_set():
            return True
        if remaining > 0.0015:
            if wake is not None:
                if wake.wait(remaining - 0.001):
                    return True
            else:
                time.sleep(remaining - 0.001)
        else:
            time.sleep(0)
