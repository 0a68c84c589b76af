"""Operator vs policy: who drives the arm this tick (docs/teleop.md, docs/robot_client.md "Interventions").

Every tick the intervention sources are asked in order: devices at the robot first (the person next
to the arm wins), then the operator page through the server's replies. The first that answers
drives; none: the policy. The ``Arbiter`` keeps that order and the rules that go with an operator:
a command older than ``teleop_deadline_s`` is not executed, a page take-over that the replies have
not confirmed yet stops the policy's chunk, and the first execution of each page command is
acknowledged with its latency. One episode's side of it is an ``OperatorState``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from deployment.robot import RobotConfig
from interface.robot import ArmState
from interface.teleop import InterventionSource, TeleopAction
from protocol.messages import TeleopAck
from robot_client.teleop import PageTeleop, TakeoverWatch, TeleopSpeeds

log = logging.getLogger(__name__)

TELEOP_ERROR = "teleop_error"  # an intervention source raised: held like a stale command


@dataclass
class OperatorState:
    """One episode's operator side."""
    driving: str | None = None  # the source that drives now (None: the policy)
    takeover_pending_since: float | None = None  # holding for a page take-over's first command
    stale_since: float | None = None  # monotonic start of a hold on a stale command
    error: str = ""  # why an intervention source last failed
    ack: TeleopAck | None = None  # the last page command executed, for the next query
    ack_seq: int | None = None
    latency_ms: list[float] = field(default_factory=list)  # per page command: server received -> executed
    drivers: dict[str, set[str]] = field(default_factory=dict)  # intervention source -> who drove with it


class Arbiter:
    """The intervention sources, asked in order every tick, and the operator's rules."""

    def __init__(self, cfg: RobotConfig, period: float, interventions: list[InterventionSource] | None = None):
        self.cfg = cfg
        self.page_teleop = PageTeleop(TeleopSpeeds(period, cfg.teleop_linear_speed, cfg.teleop_angular_speed))
        self.sources: list[InterventionSource] = [*(interventions or []), self.page_teleop]
        # set by the client: a page take-over pre-empts an open-loop chunk within one period
        self.takeover_watch: TakeoverWatch | None = None

    def start_episode(self, episode_id: str, mode: str) -> None:
        self.page_teleop.reset()
        if self.takeover_watch is not None:
            self.takeover_watch.episode_id = episode_id
        for source in self.sources:  # a scripted operator judges sampled episodes only
            start = getattr(source, "start_episode", None)
            if start is not None:
                start(episode_id, mode)

    def poll(self, op: OperatorState, state: ArmState, proposed: np.ndarray | None,
             count: Callable[[str], None]) -> TeleopAction | None:
        """The first source's command this tick, or None (the policy drives). A source that raises
        gives a command that is never fresh: the arm holds, the loop goes on."""
        for source in self.sources:
            try:
                teleop = source.command(state, proposed)
            except Exception as e:  # noqa: BLE001 - a broken source must hold the arm, not crash the loop
                name = str(getattr(source, "name", "unknown"))
                if not op.error:  # once per episode, not at the control rate
                    log.exception("intervention source %s failed; holding the arm", name)
                count(TELEOP_ERROR)
                op.error = f"intervention source {name}: {type(e).__name__}: {e}"
                teleop = TeleopAction(np.zeros(7), name, -math.inf)
            if teleop is not None:
                return teleop
        return None

    def takeover_pending(self, op: OperatorState, episode_id: str) -> bool:
        """The page took this episode over, and no reply has brought its command yet."""
        watch = self.takeover_watch
        return (op.driving is None and watch is not None and watch.pending(episode_id)
                and not self.page_teleop.driving)

    def operator_involved(self, op: OperatorState, episode_id: str, recording: bool) -> bool:
        """An operator drives, is taking over, or is awaited (a demonstration): the loop asks every
        tick, so the page's commands ride on the replies and the policy's proposal stays current."""
        return op.driving is not None or self.takeover_pending(op, episode_id) or recording

    def command_rides_on_reply(self, op: OperatorState, episode_id: str, recording: bool) -> bool:
        """This tick's command comes with the reply to this tick's query: worth waiting for (within the
        reply budget), it executes a page command up to a period earlier than the last reply's."""
        if self.takeover_pending(op, episode_id) or recording:
            return True
        return op.driving == self.page_teleop.name and self.cfg.teleop_wait_reply

    def is_fresh(self, op: OperatorState, teleop: TeleopAction, t_start: float) -> bool:
        """May this command move the arm? Not once it is older than ``teleop_deadline_s``."""
        age = time.monotonic() - teleop.t_command
        if age <= self.cfg.teleop_deadline_s:
            op.stale_since = None
            return True
        if op.stale_since is None:
            op.stale_since = t_start
            log.warning("operator command (%s) %.2f s old: holding", teleop.source, age)
        return False

    def lost(self, since: float | None, t_start: float) -> bool:
        """Held for an operator longer than ``teleop_lost_abort_s``: the episode is aborted."""
        return since is not None and t_start - since > self.cfg.teleop_lost_abort_s

    def executed(self, op: OperatorState, teleop: TeleopAction | None, t_issued: float) -> None:
        """The first execution of a page command: its latency goes back to the page with the next query."""
        t = teleop
        if t is not None and t.source == self.page_teleop.name and t.seq >= 0 and t.seq != op.ack_seq:
            latency_ms = max(0.0, (t_issued - t.t_command) * 1e3)
            op.ack, op.ack_seq = TeleopAck(seq=t.seq, server_to_exec_ms=latency_ms), t.seq
            op.latency_ms.append(latency_ms)

    def note_driver(self, op: OperatorState, source: str) -> None:
        """Who drove a recorded step with ``source`` (the page's operator, or this robot's)."""
        who = self.page_teleop.operator if source == self.page_teleop.name else self.cfg.operator
        op.drivers.setdefault(source, set()).add(who or "operator")
