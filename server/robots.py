"""The robot / operator channel: what every robot is doing, the operator's commands and labels.

``RobotRegistry`` (one per app, ``app.state.robots``) is the live picture the operator page reads:
it is fed by every /v1/act request (frames, step, episode, instruction, policy version) and by the
robots' status reports. It queues operator commands per robot and hands them out in the next
/v1/act response (``pause`` persists until ``resume``; ``end_episode`` is delivered once, and only
to the episode it was pressed for), keeps the episodes waiting for a label, and answers the
robots' label long-polls (a later correction goes through the operator page's relabel, which
drops a file in the learner's inbox: ``server.ui``). ``subscribe()`` gives the operator page a stream of change events.
With ``reward_model.mode`` on, an episode is scored as it ends and, in mode "auto", labelled at
once when the model is confident (``server.reward_scorer``).

Bounded, whatever ids clients make up: a robot not heard from for ``forget_s`` is forgotten (its
frames freed; ``/v1/robots`` lists it as ``state: "gone"`` among the last ``MAX_GONE`` forgotten); at
most ``max_robots`` are tracked (a new one evicts the least recently seen robot that holds nothing:
not paused, driven, awaiting a label or an end); a label long-poll's event is freed when its last
waiter leaves; labels, awaiting episodes and gone robots are capped.

All methods run on the server's event loop (the routes are ``async def``); nothing here blocks.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from fastapi import APIRouter, Body, Depends, HTTPException, Query, Request, Response
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field

from protocol.images import encode_jpeg
from protocol.messages import ID_PATTERN, Command, EpisodeId, TeleopAck, TeleopCommand
from server.auth import require_operator, require_robot
from server.reward_scorer import Score
from server.teleop import (
    DEFAULT_OPERATOR,
    DRIVABLE_STATES,
    TELEOP_LOCK_S,
    TeleopIn,
    TeleopLive,
    TeleopRefused,
    TeleopView,
)

log = logging.getLogger(__name__)

# "teleop": an operator drives the running episode (from the page or a device at the robot)
# "waiting_reset": the arm is home, the robot waits for the operator's ready (server/scene.py)
RobotState = Literal["running", "teleop", "waiting_label", "waiting_reset", "paused", "holding", "resetting",
                     "error"]
OperatorCommand = Literal["end_episode", "pause", "resume"]
LabelOutcome = Literal["success", "failure", "discard"]
MAX_KEPT_LABELS = 4096
MAX_AWAITING = 1024  # episodes waiting for the operator's label
MAX_GONE = 64  # forgotten robots still listed (as "gone") in /v1/robots
EVENT_QUEUE_SIZE = 256


# ---------------------------------------------------------------- API models


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StatusIn(_In):
    """What a robot reports it is doing (POST /v1/robots/{robot_id}/status)."""
    state: RobotState
    episode_id: EpisodeId | None = None
    step: int | None = Field(default=None, ge=0)
    instruction: str | None = Field(default=None, max_length=512)
    task: str | None = Field(default=None, max_length=128)
    loop_hz: float | None = Field(default=None, ge=0)
    detail: str = Field(default="", max_length=2048)


class CommandIn(_In):
    command: OperatorCommand


class LabelIn(_In):
    episode_id: EpisodeId
    outcome: LabelOutcome


class AwaitingIn(_In):
    auto_outcome: Literal["success", "failure"] | None = None
    n_steps: int = Field(default=0, ge=0)


class LabelOut(BaseModel):
    episode_id: str
    outcome: LabelOutcome
    label_source: Literal["operator", "auto", "reward_model"] = Field(
        description="operator; auto = the simulator's success predicate; reward_model = the learnt classifier")
    reward_model_p: float | None = Field(
        default=None, description="the reward model's P(success) for this episode, whoever labelled it")


class AwaitingView(BaseModel):
    robot_id: str
    episode_id: str
    auto_outcome: str | None
    reward_model_p: float | None = Field(default=None, description="the reward model's P(success), if scored")
    n_steps: int
    instruction: str
    task: str
    since: float


class RobotView(BaseModel):
    robot_id: str
    state: str
    episode_id: str | None
    step: int | None
    instruction: str
    task: str
    policy_version: int | None
    loop_hz: float | None = Field(description="control loop rate the robot reports")
    act_hz: float | None = Field(description="/v1/act request rate the server sees")
    detail: str
    last_seen: float = Field(description="unix time of the last request or status")
    seconds_since_seen: float
    stale: bool
    cameras: list[str] = Field(description="cameras with a latest frame at /v1/robots/{id}/frames/{cam}.jpg")
    paused: bool
    pending_command: str | None
    awaiting_label: list[str]
    teleop: TeleopView | None = Field(default=None, description="the operator drives it from the page; "
                                      "null while the policy (or a device at the robot) drives")
    gone: bool = Field(default=False, description="forgotten: not heard from for server.robot_forget_s (or "
                                                  "evicted beyond server.max_robots); state is \"gone\"")


# ---------------------------------------------------------------- state


@dataclass
class RobotLive:
    robot_id: str
    state: str = "running"
    episode_id: str | None = None
    step: int | None = None
    instruction: str = ""
    task: str = ""
    policy_version: int | None = None
    loop_hz: float | None = None
    act_hz: float | None = None
    detail: str = ""
    last_seen: float = 0.0
    last_act: float | None = None
    frames: dict[str, bytes | np.ndarray] = field(default_factory=dict)
    paused: bool = False
    end_requested_for: str | None = None   # episode the operator pressed "end episode" for
    end_requested: bool = False
    teleop: TeleopLive | None = None  # the operator drives it from the page (server.teleop)


@dataclass
class GoneRobot:
    """What is kept of a forgotten robot: enough to list it as gone and to keep its pause."""
    robot_id: str
    last_seen: float
    paused: bool
    why: str


class RobotRegistry:
    def __init__(self, auto_label: bool = False, stale_s: float = 10.0, teleop_lock_s: float = TELEOP_LOCK_S,
                 forget_s: float = 300.0, max_robots: int = 64) -> None:
        self.teleop_lock_s = teleop_lock_s
        self.auto_label = auto_label
        self.stale_s = stale_s
        self.forget_s = forget_s
        self.max_robots = max_robots
        self.robots: OrderedDict[str, RobotLive] = OrderedDict()  # least recently heard from first
        self.gone: OrderedDict[str, GoneRobot] = OrderedDict()
        self.awaiting: dict[tuple[str, str], AwaitingView] = {}
        self._labels: OrderedDict[tuple[str, str], LabelOut] = OrderedDict()
        self._delivered: set[tuple[str, str]] = set()
        self._label_events: dict[tuple[str, str], asyncio.Event] = {}
        self._label_waiters: dict[tuple[str, str], int] = {}
        self._subscribers: set[asyncio.Queue] = set()
        self._next_sweep = 0.0
        # called with (robot_id, episode_id, outcome) for every label (the promotion gate counts them)
        self.label_listeners: list[Callable[[str, str, str], None]] = []
        # called with robot_id when a robot is forgotten (the reward scorer drops its observations)
        self.forget_listeners: list[Callable[[str], None]] = []

    # ---- publisher for the operator page

    def subscribe(self) -> asyncio.Queue:
        """A queue of change events ``{"type": ..., "robot_id": ..., ...}``; slow readers lose the oldest."""
        q: asyncio.Queue = asyncio.Queue(maxsize=EVENT_QUEUE_SIZE)
        self._subscribers.add(q)
        return q

    def unsubscribe(self, q: asyncio.Queue) -> None:
        self._subscribers.discard(q)

    def _publish(self, event: dict) -> None:
        event.setdefault("t", time.time())
        for q in self._subscribers:
            if q.full():
                q.get_nowait()
            q.put_nowait(event)

    # ---- robot side

    def _robot(self, robot_id: str) -> RobotLive:
        """The robot's live record, heard from now. A robot beyond ``max_robots`` that cannot evict
        anyone gets a record that is not kept (its requests are still answered)."""
        now = time.time()
        self.sweep(now)
        r = self.robots.get(robot_id)
        if r is None:
            r = RobotLive(robot_id)
            gone = self.gone.pop(robot_id, None)
            r.paused = gone is not None and gone.paused  # an operator's pause outlives a restart
            if len(self.robots) < self.max_robots or self._evict_one():
                self.robots[robot_id] = r
        else:
            self.robots.move_to_end(robot_id)
        r.last_seen = now
        return r

    @staticmethod
    def _holds_something(r: RobotLive) -> bool:
        return r.paused or r.teleop is not None or r.end_requested

    def _evict_one(self) -> bool:
        awaiting = {rid for rid, _ in self.awaiting}
        for r in self.robots.values():  # least recently heard from first
            if not self._holds_something(r) and r.robot_id not in awaiting:
                self._forget(r, "evicted: too many robots (server.max_robots)")
                return True
        return False

    def sweep(self, now: float | None = None) -> None:
        """Forget robots not heard from for ``forget_s`` (at most once a second)."""
        now = time.time() if now is None else now
        if now < self._next_sweep:
            return
        self._next_sweep = now + 1.0
        while self.robots:
            oldest = next(iter(self.robots.values()))
            if now - oldest.last_seen <= self.forget_s:
                break
            self._forget(oldest, f"not heard from for {self.forget_s:.0f} s")

    def _forget(self, r: RobotLive, why: str) -> None:
        del self.robots[r.robot_id]
        for key in [k for k in self.awaiting if k[0] == r.robot_id]:
            del self.awaiting[key]
        self.gone[r.robot_id] = GoneRobot(r.robot_id, r.last_seen, r.paused, why)
        while len(self.gone) > MAX_GONE:
            self.gone.popitem(last=False)
        for listener in self.forget_listeners:
            listener(r.robot_id)
        self._publish({"type": "gone", "robot_id": r.robot_id, "why": why})

    def _new_episode(self, r: RobotLive, episode_id: str | None) -> None:
        if episode_id is None or episode_id == r.episode_id:
            return
        # The robot moved on: its old episode no longer waits for a label (it timed out or got one).
        for key in [k for k in self.awaiting if k[0] == r.robot_id and k[1] != episode_id]:
            del self.awaiting[key]
        r.episode_id = episode_id

    def observe_act(self, robot_id: str, episode_id: str, step: int, instruction: str,
                    frames: dict[str, bytes | np.ndarray], policy_version: int) -> None:
        r = self._robot(robot_id)
        now = r.last_seen
        if r.last_act is not None and now > r.last_act:
            rate = 1.0 / (now - r.last_act)
            r.act_hz = rate if r.act_hz is None else 0.8 * r.act_hz + 0.2 * rate
        r.last_act = now
        self._new_episode(r, episode_id)
        r.step, r.instruction, r.policy_version = step, instruction, policy_version
        r.frames.update(frames)
        self._publish({"type": "act", "robot_id": robot_id, "episode_id": episode_id, "step": step,
                       "policy_version": policy_version})

    def update_status(self, robot_id: str, status: StatusIn) -> None:
        r = self._robot(robot_id)
        self._new_episode(r, status.episode_id)
        r.state, r.detail = status.state, status.detail
        for name in ("step", "instruction", "task", "loop_hz"):
            value = getattr(status, name)
            if value is not None:
                setattr(r, name, value)
        self._publish({"type": "status", "robot_id": robot_id, **status.model_dump()})

    def command_for(self, robot_id: str, episode_id: str) -> Command:
        """The command to put in this /v1/act response. ``end_episode`` is consumed here."""
        r = self.robots.get(robot_id)
        if r is None:
            return "run"
        if r.end_requested:
            r.end_requested = False
            if r.end_requested_for in (None, episode_id):
                self._publish({"type": "command_delivered", "robot_id": robot_id, "command": "end_episode"})
                return "end_episode"
            # pressed for an episode that is already over: dropping it keeps a new episode alive
        return "pause" if r.paused else "run"

    # ---- teleop from the page (server.teleop)

    def take_over(self, robot_id: str, operator: str = DEFAULT_OPERATOR) -> RobotLive:
        r = self.robots.get(robot_id)
        if r is None:
            raise KeyError(robot_id)
        if r.episode_id is None or r.state not in DRIVABLE_STATES or time.time() - r.last_seen > self.stale_s:
            raise TeleopRefused(f"robot {robot_id!r} has no episode running (state {r.state!r}"
                                f"{', stale' if time.time() - r.last_seen > self.stale_s else ''}); "
                                f"take over while an episode runs")
        held = r.teleop is not None and r.teleop.episode_id == r.episode_id
        if held and r.teleop.operator != operator and r.teleop.silent_s() < self.teleop_lock_s:
            r.teleop.check_holder(operator, robot_id, self.teleop_lock_s)
        if not held or r.teleop.operator != operator:
            if held:
                log.warning("robot %s: %r takes over from %r, silent for %.0f s", robot_id, operator,
                            r.teleop.operator, r.teleop.silent_s())
            r.teleop = TeleopLive(episode_id=r.episode_id, since=time.time(), received=time.monotonic(),
                                  operator=operator)
            self._publish({"type": "teleop", "robot_id": robot_id, "driving": True, "episode_id": r.episode_id,
                           "operator": operator})
        return r

    def hand_back(self, robot_id: str, reason: str = "operator", operator: str | None = None) -> RobotLive:
        """The policy drives again. ``operator``: who asks (refused unless they hold it); None: the
        server itself (a new episode)."""
        r = self.robots.get(robot_id)
        if r is None:
            raise KeyError(robot_id)
        if r.teleop is not None and operator is not None:
            r.teleop.check_holder(operator, robot_id, self.teleop_lock_s)
        if r.teleop is not None:
            r.teleop = None
            self._publish({"type": "teleop", "robot_id": robot_id, "driving": False, "reason": reason})
        return r

    def teleop_driving(self, robot_id: str, episode_id: str) -> bool:
        """An operator has taken over this robot's episode ``episode_id`` from the page."""
        r = self.robots.get(robot_id)
        return r is not None and r.teleop is not None and r.teleop.episode_id == episode_id

    def teleop_command(self, robot_id: str, body: TeleopIn, operator: str = DEFAULT_OPERATOR) -> bool:
        r = self.robots.get(robot_id)
        if r is None:
            raise KeyError(robot_id)
        if r.teleop is None:
            raise TeleopRefused(f"robot {robot_id!r} is not taken over: POST /v1/robots/{robot_id}/teleop/"
                                f"take_over first")
        r.teleop.check_holder(operator, robot_id, self.teleop_lock_s)
        return r.teleop.accept(body)

    def teleop_for(self, robot_id: str, episode_id: str, ack: TeleopAck | None) -> TeleopCommand | None:
        """The teleop field of this /v1/act reply: the latest command while the operator drives
        this episode; a take-over of an earlier episode ends here."""
        r = self.robots.get(robot_id)
        if r is None or r.teleop is None:
            return None
        if r.teleop.episode_id != episode_id:
            self.hand_back(robot_id, reason="episode ended")
            return None
        r.teleop.note_ack(ack)
        return r.teleop.for_reply()

    def mark_awaiting(self, robot_id: str, episode_id: str, body: AwaitingIn,
                      score: Score | None = None) -> LabelOut | None:
        """The episode ended: label it at once (the simulator's outcome in auto_label mode, the
        reward model's when it is confident) or queue it for the operator."""
        r = self._robot(robot_id)
        self._new_episode(r, episode_id)
        if r.teleop is not None and r.teleop.episode_id == episode_id:  # its episode is over: S labels again
            self.hand_back(robot_id, reason="episode ended")
        key = (robot_id, episode_id)
        p = None if score is None else score.p
        if self.auto_label and body.auto_outcome is not None:
            label = LabelOut(episode_id=episode_id, outcome=body.auto_outcome, label_source="auto", reward_model_p=p)
            self._store_label(key, label)
            return label
        if score is not None and score.label is not None and key not in self._labels:
            label = LabelOut(episode_id=episode_id, outcome=score.label, label_source="reward_model", reward_model_p=p)
            self._store_label(key, label)
            return label
        if key not in self._labels:
            while len(self.awaiting) >= MAX_AWAITING and key not in self.awaiting:
                del self.awaiting[min(self.awaiting, key=lambda k: self.awaiting[k].since)]
            self.awaiting[key] = AwaitingView(robot_id=robot_id, episode_id=episode_id,
                                              auto_outcome=body.auto_outcome, reward_model_p=p, n_steps=body.n_steps,
                                              instruction=r.instruction, task=r.task, since=time.time())
            self._publish({"type": "awaiting", **self.awaiting[key].model_dump()})
        return self._labels.get(key)

    async def wait_label(self, robot_id: str, episode_id: str, timeout_s: float) -> LabelOut | None:
        key = (robot_id, episode_id)
        self._robot(robot_id)
        if key not in self._labels:
            # Several waiters (a robot retrying while its old poll still hangs) share one event;
            # the last one to leave frees it, so polls for made-up episode ids leave nothing behind.
            event = self._label_events.setdefault(key, asyncio.Event())
            self._label_waiters[key] = self._label_waiters.get(key, 0) + 1
            try:
                await asyncio.wait_for(event.wait(), timeout_s)
            except TimeoutError:
                return None
            finally:
                self._leave_label_wait(key, event)
        label = self._labels.get(key)
        if label is not None:
            self._delivered.add(key)
        return label

    def _leave_label_wait(self, key: tuple[str, str], event: asyncio.Event) -> None:
        left = self._label_waiters.get(key, 1) - 1
        if left > 0:
            self._label_waiters[key] = left
            return
        self._label_waiters.pop(key, None)
        if self._label_events.get(key) is event:
            del self._label_events[key]

    # ---- operator side

    def queue_command(self, robot_id: str, command: str) -> RobotLive:
        r = self.robots.get(robot_id)
        if r is None:
            raise KeyError(robot_id)
        if command == "pause":
            r.paused = True
        elif command == "resume":
            r.paused = False
        else:
            r.end_requested, r.end_requested_for = True, r.episode_id
        self._publish({"type": "command", "robot_id": robot_id, "command": command})
        return r

    def submit_label(self, robot_id: str, episode_id: str, outcome: str) -> LabelOut:
        key = (robot_id, episode_id)
        if key in self._delivered:
            raise LookupError("already labelled and delivered to the robot")
        waiting = self.awaiting.get(key)
        label = LabelOut(episode_id=episode_id, outcome=outcome, label_source="operator",
                         reward_model_p=None if waiting is None else waiting.reward_model_p)
        self._store_label(key, label)
        return label

    def _store_label(self, key: tuple[str, str], label: LabelOut) -> None:
        self._labels[key] = label
        self._labels.move_to_end(key)
        while len(self._labels) > MAX_KEPT_LABELS:
            old, _ = self._labels.popitem(last=False)
            self._delivered.discard(old)
        self.awaiting.pop(key, None)
        event = self._label_events.pop(key, None)
        if event is not None:
            event.set()
        for listener in self.label_listeners:
            try:
                listener(key[0], key[1], label.outcome)
            except Exception:  # a listener's bug must not lose the label
                log.exception("label listener failed")
        self._publish({"type": "label", "robot_id": key[0], **label.model_dump()})

    def frame_jpeg(self, robot_id: str, camera: str) -> bytes | None:
        r = self.robots.get(robot_id)
        frame = None if r is None else r.frames.get(camera)
        if isinstance(frame, np.ndarray):  # a robot that sent raw arrays: encode for the browser
            frame = r.frames[camera] = encode_jpeg(np.ascontiguousarray(frame))
        return frame

    def view(self, r: RobotLive) -> RobotView:
        age = time.time() - r.last_seen
        pending = "end_episode" if r.end_requested else ("pause" if r.paused else None)
        return RobotView(
            robot_id=r.robot_id, state=r.state, episode_id=r.episode_id, step=r.step,
            instruction=r.instruction, task=r.task, policy_version=r.policy_version,
            loop_hz=r.loop_hz, act_hz=r.act_hz, detail=r.detail, last_seen=r.last_seen,
            seconds_since_seen=age, stale=age > self.stale_s, cameras=sorted(r.frames),
            paused=r.paused, pending_command=pending,
            awaiting_label=[ep for (rid, ep) in self.awaiting if rid == r.robot_id],
            teleop=None if r.teleop is None else r.teleop.view())

    def gone_view(self, g: GoneRobot) -> RobotView:
        age = time.time() - g.last_seen
        return RobotView(robot_id=g.robot_id, state="gone", episode_id=None, step=None, instruction="", task="",
                         policy_version=None, loop_hz=None, act_hz=None, detail=g.why, last_seen=g.last_seen,
                         seconds_since_seen=age, stale=True, cameras=[], paused=g.paused, pending_command=None,
                         awaiting_label=[], gone=True)

    def views(self) -> list[RobotView]:
        self.sweep()
        live = [self.view(r) for r in sorted(self.robots.values(), key=lambda r: r.robot_id)]
        return live + [self.gone_view(g) for g in sorted(self.gone.values(), key=lambda g: g.robot_id)]


# ---------------------------------------------------------------- routes

router = APIRouter(prefix="/v1", tags=["robots"])
RobotIdParam = PathParam(pattern=ID_PATTERN)


async def registry_of(request: Request) -> RobotRegistry:
    return request.app.state.robots


@router.post("/robots/{robot_id}/status", dependencies=[Depends(require_robot)])
async def post_status(status: StatusIn, robot_id: str = RobotIdParam,
                      robots: RobotRegistry = Depends(registry_of)) -> dict:
    robots.update_status(robot_id, status)
    return {"ok": True}


@router.post("/robots/{robot_id}/episodes/{episode_id}/awaiting", dependencies=[Depends(require_robot)])
async def post_awaiting(request: Request, body: AwaitingIn = Body(default_factory=AwaitingIn),
                        robot_id: str = RobotIdParam, episode_id: str = PathParam(pattern=ID_PATTERN),
                        robots: RobotRegistry = Depends(registry_of)) -> dict:
    state = request.app.state
    score = await state.reward_scorer.score(robot_id, episode_id, state.holder.policy, state.worker)
    label = robots.mark_awaiting(robot_id, episode_id, body, score)
    return {"ok": True, "label": None if label is None else label.model_dump()}


@router.get("/robots/{robot_id}/label", dependencies=[Depends(require_robot)], response_model=LabelOut,
            responses={204: {"description": "no label within timeout_s; ask again"}})
async def wait_label(request: Request, robot_id: str = RobotIdParam,
                     episode_id: str = Query(pattern=ID_PATTERN),
                     timeout_s: float = Query(default=10.0, ge=0.0),
                     robots: RobotRegistry = Depends(registry_of)):
    limit = request.app.state.config.server.label_poll_max_s
    label = await robots.wait_label(robot_id, episode_id, min(timeout_s, limit))
    if label is None:
        return Response(status_code=204)
    return label


@router.post("/robots/{robot_id}/command", dependencies=[Depends(require_operator)])
async def post_command(body: CommandIn, robot_id: str = RobotIdParam,
                       robots: RobotRegistry = Depends(registry_of)) -> RobotView:
    try:
        return robots.view(robots.queue_command(robot_id, body.command))
    except KeyError:
        raise HTTPException(404, f"robot_id: unknown robot {robot_id!r} (not seen yet)") from None


@router.post("/robots/{robot_id}/label", dependencies=[Depends(require_operator)])
async def post_label(body: LabelIn, robot_id: str = RobotIdParam,
                     robots: RobotRegistry = Depends(registry_of)) -> LabelOut:
    try:
        return robots.submit_label(robot_id, body.episode_id, body.outcome)
    except LookupError as e:
        raise HTTPException(409, f"episode_id: {e}; correct it with POST /v1/episodes/{robot_id}/"
                                 f"{body.episode_id}/relabel (the operator page's relabel)") from None


@router.get("/robots", dependencies=[Depends(require_operator)])
async def list_robots(robots: RobotRegistry = Depends(registry_of)) -> list[RobotView]:
    return robots.views()


@router.get("/labels/awaiting", dependencies=[Depends(require_operator)])
async def list_awaiting(robots: RobotRegistry = Depends(registry_of)) -> list[AwaitingView]:
    return sorted(robots.awaiting.values(), key=lambda a: a.since)


@router.get("/robots/{robot_id}/frames/{camera}.jpg", dependencies=[Depends(require_operator)],
            response_class=Response, responses={200: {"content": {"image/jpeg": {}}}})
async def latest_frame(robot_id: str = RobotIdParam, camera: str = PathParam(pattern=ID_PATTERN),
                       robots: RobotRegistry = Depends(registry_of)) -> Response:
    jpeg = robots.frame_jpeg(robot_id, camera)
    if jpeg is None:
        raise HTTPException(404, f"no frame from robot {robot_id!r} camera {camera!r} yet")
    return Response(jpeg, media_type="image/jpeg", headers={"Cache-Control": "no-store"})
