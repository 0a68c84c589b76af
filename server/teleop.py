"""Keyboard teleop from the operator page: take over a robot mid-episode, drive it, hand it back.

The page posts its commands to ``server.teleop_routes`` (operator token); the server keeps the latest per robot with the
time it arrived, and the robot's next ``/v1/act`` reply carries it (``ActResponse.teleop``). While
the operator drives, the robot asks every tick, so a command waits at most one round trip; it
executes the command through its SafetyFilter and holds the arm when the command is older than its
teleop deadline (a closed page, a dead link). docs/teleop.md.

The routes (``server/teleop_routes.py``):

* ``POST /v1/robots/{id}/teleop/take_over``  the operator drives from the next reply on (409: no
  episode running; 404: unknown robot)
* ``POST /v1/robots/{id}/teleop``            ``TeleopIn``: one command (seq, t_sent, intent); 409
  unless taken over; an older seq than the latest is ignored (``accepted: false``)
* ``POST /v1/robots/{id}/teleop/hand_back``  the policy drives again (idempotent)

A take-over belongs to the episode it was pressed in: when the robot starts another episode, the
server hands it back by itself (a new episode never starts under an old command).

One operator holds a robot at a time. Each request names its operator in the ``X-Operator`` header
(the page sends the name its user typed; without the header the name is ``operator``). While one
operator holds a robot, another's take-over, commands and hand-back are refused (409, naming the
holder) until the holder hands back, the episode ends, or the holder has sent nothing for
``server.teleop_lock_s`` (default 10 s: a closed page, a lost laptop): then the next take-over wins. The operator token
is shared, so the name is what the operators say they are, not an authentication.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from pydantic import BaseModel, ConfigDict, Field, field_validator

from protocol.messages import TeleopAck, TeleopCommand, intent_axes

# Robot states in which an episode runs and can be taken over.
DRIVABLE_STATES = ("running", "paused", "teleop")


# A holder silent this long (no command, no take-over) no longer blocks another operator's take-over
# (the default of ServerConfig.teleop_lock_s).
TELEOP_LOCK_S = 10.0
OPERATOR_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9 ._@-]{0,63}$"
DEFAULT_OPERATOR = "operator"


class TeleopRefused(Exception):
    """The request cannot be honoured now (HTTP 409), with the reason."""


class TeleopIn(BaseModel):
    """One teleop command from the page: a velocity intent, each axis in [-1, 1] (a held key is ±1)."""

    model_config = ConfigDict(extra="forbid")
    seq: int = Field(ge=0, description="increasing per page; an older seq than the latest is ignored")
    t_sent: float = Field(description="the page's clock when sent, unix s (shown back for latency)")
    translation: list[float] = Field(description="x, y, z intent in the robot base frame, each in [-1, 1]")
    rotation: list[float] = Field(default_factory=lambda: [0.0, 0.0, 0.0],
                                  description="rotation intent about base x, y, z, each in [-1, 1]")
    gripper: float | None = Field(default=None, ge=0, le=1, description="0 close .. 1 open; null: keep")

    @field_validator("t_sent")
    @classmethod
    def _finite_time(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("t_sent must be a finite number")
        return v

    @field_validator("translation", "rotation", mode="before")
    @classmethod
    def _axes(cls, v, info) -> list[float]:
        # the same check the robot applies to the command it receives (protocol TeleopCommand)
        return intent_axes(v, info.field_name)


class TeleopAccepted(BaseModel):
    seq: int
    accepted: bool = Field(description="false: an older seq than the latest, ignored")
    received: float = Field(description="server clock, unix s")


class TeleopView(BaseModel):
    """The operator drives this robot from the page (RobotView.teleop; null while the policy drives)."""

    episode_id: str
    operator: str = Field(description="who holds the robot (X-Operator of the take-over)")
    since: float = Field(description="unix s of the take-over")
    seq: int | None = Field(description="latest command's seq (null: none yet)")
    command_age_s: float | None = Field(description="seconds since the latest command arrived")
    translation: list[float]
    rotation: list[float]
    gripper: float | None
    executed_seq: int | None = Field(description="latest command the robot reports executed")
    server_to_exec_ms: float | None = Field(description="server received that command -> the arm was told "
                                            "to move (the robot's estimate)")
    commands: int = Field(description="commands received since the take-over")


@dataclass
class TeleopLive:
    """A take-over in progress (``RobotLive.teleop``)."""

    episode_id: str
    since: float  # unix s
    received: float  # monotonic s when the latest command (or the take-over) arrived
    operator: str = DEFAULT_OPERATOR  # who holds the robot
    command: TeleopIn | None = None
    executed_seq: int | None = None
    server_to_exec_ms: float | None = None
    commands: int = 0

    def check_holder(self, operator: str, robot_id: str, lock_s: float = TELEOP_LOCK_S) -> None:
        """Refuse an operator who does not hold the robot (the holder is named)."""
        if operator != self.operator:
            raise TeleopRefused(f"robot {robot_id!r} is held by {self.operator!r} (last command "
                                f"{self.silent_s():.0f} s ago); wait until they hand it back, or until "
                                f"{lock_s:g} s without a command from them, then take over")

    def silent_s(self) -> float:
        return time.monotonic() - self.received

    def accept(self, body: TeleopIn) -> bool:
        if self.command is not None and body.seq <= self.command.seq:
            return False  # out of order (or repeated): the newer command stands
        self.command, self.received = body, time.monotonic()
        self.commands += 1
        return True

    def note_ack(self, ack: TeleopAck | None) -> None:
        if ack is not None and (self.executed_seq is None or ack.seq >= self.executed_seq):
            self.executed_seq, self.server_to_exec_ms = ack.seq, ack.server_to_exec_ms

    def for_reply(self) -> TeleopCommand:
        """What the robot gets: the latest command (a zero intent before the first one) and its age."""
        c = self.command
        return TeleopCommand(seq=-1 if c is None else c.seq,
                             translation=[0.0, 0.0, 0.0] if c is None else c.translation,
                             rotation=[0.0, 0.0, 0.0] if c is None else c.rotation,
                             gripper=None if c is None else c.gripper,
                             age_s=max(0.0, time.monotonic() - self.received), source="page")

    def view(self) -> TeleopView:
        c = self.command
        return TeleopView(episode_id=self.episode_id, operator=self.operator, since=self.since, seq=None if c is None else c.seq,
                          command_age_s=None if c is None else time.monotonic() - self.received,
                          translation=[0.0, 0.0, 0.0] if c is None else c.translation,
                          rotation=[0.0, 0.0, 0.0] if c is None else c.rotation,
                          gripper=None if c is None else c.gripper, executed_seq=self.executed_seq,
                          server_to_exec_ms=self.server_to_exec_ms, commands=self.commands)
