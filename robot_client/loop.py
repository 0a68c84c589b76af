"""The fixed-rate control loop of one episode (docs/architecture.md, "Robot client").

Every tick, at an absolute deadline ``t0 + k * period`` (never ``sleep(period)``, which drifts):

  capture -> hand the observation to the ActionLink (background HTTP) -> take replies that are
  fresh -> pick this tick's action from the chunk(s) -> watchdog -> SafetyFilter -> execute or
  hold -> record the step for the learner.

The loop never waits on the network: it gives a reply to this tick's observation at most
``reply_budget`` of a period, then moves on (executing the rest of the current chunk, or holding).
A reply is executed only if its request_id is one this episode is waiting for and it is younger
than ``reply_deadline_s``; anything else is dropped and counted.
"""

from __future__ import annotations

import gc
import logging
import math
import os
import sys
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from deployment.robot import RobotConfig
from interface.robot import Arm, ArmError, ArmState, Camera
from interface.teleop import InterventionSource, TeleopAction
from protocol.images import encode_jpeg
from protocol.messages import ActRequest, ActResponse, StepMsg, TeleopAck
from robot_client.journal import ExecutionJournal
from robot_client.safety import SafeAction, SafetyFilter
from robot_client.server_client import ActionLink, Reply
from robot_client.teleop import PageTeleop, TakeoverWatch, TeleopSpeeds
from robot_client.watchdog import Watchdog

log = logging.getLogger(__name__)

# Loop-level counters (StepMsg.safety keys next to the SafetyFilter's).
HOLD_NO_ACTION = "hold_no_action"  # ticks without an action to execute (waiting for a reply)
HOLD_WATCHDOG = "hold_watchdog"
HOLD_PAUSED = "hold_paused"
HOLD_CAMERA = "hold_camera"  # a camera raised (unplugged...)
HOLD_STALE_FRAME = "hold_stale_frame"  # a frame older than max_frame_age_s
FRAME_REPEATED = "frame_repeated"  # the same frame seq twice (a dropped frame); not a hold
DROP_LATE = "drop_late_reply"
DROP_STALE = "drop_stale_reply"
REPLY_ERROR = "reply_error"
RETIMED_AFTER_HOLD = "chunk_retimed_after_hold"  # a reply after a hold starts at its index 0 (see _adopt)
HOLD_TELEOP_STALE = "hold_teleop_stale"  # the operator drives, but the latest command is too old
# a page take-over is known (TakeoverWatch) but its first command has not come with a reply yet:
# the chunk is not executed further
HOLD_TAKEOVER_PENDING = "hold_takeover_pending"
TELEOP_ERROR = "teleop_error"  # an intervention source raised: held like a stale command
DROP_SUPERSEDED = "drop_superseded_reply"  # asked while the operator drove, answered after the hand-back
INTERVENTION_STEPS = "intervention_steps"  # episode total only (EpisodeResult.counters)
TAKEOVERS = "takeovers"  # episode total only: times an operator took the arm from the policy
# recording a demonstration: nobody drives this tick, so the arm holds and no step is recorded
HOLD_NO_OPERATOR = "hold_no_operator"
# An episode in this mode records a demonstration: only an operator drives, the policy is never asked
# (the server may have no checkpoint yet), and only the operator's steps are recorded.
MODE_RECORD = "record"

# Why an episode ended. The first three are normal ends; the rest abort the episode.
END_MAX_STEPS, END_SUCCESS, END_OPERATOR = "max_steps", "success", "operator"
END_SERVER_LOST, END_NO_ACTION, END_ARM_ERROR, END_CAMERA, END_STOPPED, END_TELEOP_LOST = (
    "server_lost", "no_action", "arm_error", "camera_lost", "stopped", "teleop_lost")
ABORTING_ENDS = {END_SERVER_LOST, END_NO_ACTION, END_ARM_ERROR, END_CAMERA, END_STOPPED, END_TELEOP_LOST}


@dataclass
class _Obs:
    """What one tick captured: the arm state and the cameras' JPEGs."""
    state: ArmState
    state_vec: np.ndarray
    jpegs: dict[str, bytes]
    t_capture: float


@dataclass
class Chunk:
    actions: np.ndarray  # [H, 7] robot units, as the server sent them (before safety)
    start_tick: int  # actions[i] belongs to tick start_tick + i
    request_id: str
    log_prob: float
    value: float
    policy_version: int
    obs_tick: int  # the tick whose observation produced it (== start_tick unless obs is set)
    recorded: bool = False  # its action_chunk/log_prob went into a step record already
    obs: _Obs | None = None  # set when it starts later than its observation (the arm held meanwhile)

    def covers(self, tick: int) -> bool:
        return 0 <= tick - self.start_tick < len(self.actions)


@dataclass
class _Planned:
    """This tick's action before safety, where it comes from, and (after _act) what safety made of it."""
    raw: np.ndarray
    chunk: Chunk | None  # None only for an operator's step while the policy had nothing for the tick
    index: int
    on_policy: bool  # the executed action is this chunk's own action (not an ensemble average)
    safe: SafeAction | None = None
    teleop: TeleopAction | None = None  # an operator's action (then raw is teleop.action)
    proposed: np.ndarray | None = None  # with teleop: what the policy would have done this tick


@dataclass
class TickTiming:
    tick: int
    jitter_ms: float  # actual start - scheduled start
    work_ms: float  # start of tick -> action issued
    latency_ms: float | None  # round trip of a reply adopted in this tick
    started: float = 0.0  # time.monotonic() at the tick's start: the loop's own clock, for tests and logs


@dataclass
class EpisodeResult:
    episode_id: str
    instruction: str
    n_steps: int
    end_reason: str
    detail: str = ""
    timings: list[TickTiming] = field(default_factory=list)
    counters: dict[str, int] = field(default_factory=dict)  # totals over the episode
    teleop_latency_ms: list[float] = field(default_factory=list)  # page command at the server -> executed
    drivers: dict[str, list[str]] = field(default_factory=dict)  # source -> who drove with it (operator steps)

    @property
    def aborted(self) -> bool:
        return self.end_reason in ABORTING_ENDS

    def timing_summary(self, period_s: float) -> dict:
        return summarize_timings(self.timings, period_s, self.teleop_latency_ms)


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


class ControlLoop:
    def __init__(self, arm: Arm, cameras: dict[str, Camera], safety: SafetyFilter, link: ActionLink,
                 cfg: RobotConfig, emit: Callable[[StepMsg], None],
                 on_state: Callable[[str, dict], None] | None = None,
                 success: Callable[[], bool] | None = None,
                 interventions: list[InterventionSource] | None = None):
        self.arm = arm
        self.cameras = cameras
        self.safety = safety
        self.link = link
        self.cfg = cfg
        self.emit = emit  # where step records go (the Streamer's submit)
        self.on_state = on_state or (lambda state, info: None)
        self.success = success
        self.period = 1.0 / cfg.rate_hz
        # Armed per episode once the chunk length is known; until the first reply, a startup grace.
        self.watchdog = Watchdog(deadline_s=max(cfg.reply_deadline_s, 2 * self.period))
        # Who may take the arm from the policy, asked in this order every tick: devices at the robot
        # first (the person next to the arm wins), then the operator page through the server.
        self.page_teleop = PageTeleop(TeleopSpeeds(self.period, cfg.teleop_linear_speed, cfg.teleop_angular_speed))
        self.interventions: list[InterventionSource] = [*(interventions or []), self.page_teleop]
        self.stop_requested = False
        # set by the client: a page take-over pre-empts an open-loop chunk within one period
        self.takeover_watch: TakeoverWatch | None = None
        self.journal: ExecutionJournal | None = None  # set by the runner: executed steps survive a kill
        self.episode: _EpisodeState | None = None
        self._scheduling: str | None = None
        # A thread waking from sleep waits for the GIL up to the switch interval (5 ms by default)
        # when another thread runs Python code: 0.5 ms keeps the tick start on time.
        sys.setswitchinterval(min(sys.getswitchinterval(), 0.0005))

    # ---------------------------------------------------------------- one episode
    def run_episode(self, episode_id: str, instruction: str, max_steps: int, mode: str | None = None) -> EpisodeResult:
        ep = _EpisodeState(episode_id, instruction)
        ep.mode = mode or ("sample" if self.cfg.mode == "auto" else self.cfg.mode)
        self.episode = ep  # the running episode, for status and tests (read-only outside the loop)
        # Move everything alive now out of the collector's reach: a full collection over a large heap
        # (torch imported in the same process, say) would otherwise stall a tick for 100s of ms.
        gc.collect()
        gc.freeze()
        if self._scheduling is None:  # per thread: the thread that runs the episodes
            self._scheduling = set_realtime(self.cfg.realtime_priority)
            log.info("control loop at %.1f Hz, %s", self.cfg.rate_hz, self._scheduling)
        self.watchdog.reset()
        self.page_teleop.reset()
        if self.takeover_watch is not None:
            self.takeover_watch.episode_id = episode_id
        for source in self.interventions:  # a scripted operator judges sampled episodes only
            start = getattr(source, "start_episode", None)
            if start is not None:
                start(episode_id, ep.mode)
        self.link.take_replies()  # anything still arriving belongs to an earlier episode
        t0 = time.monotonic()
        tick = 0
        while True:
            scheduled = t0 + tick * self.period
            if sleep_until(scheduled, wake=None if ep.holding else self.link.down_event):
                # the server died between two ticks: hold NOW, not at the next tick; that tick
                # then sees the tripped watchdog and aborts the episode
                self.watchdog.trip(f"server unreachable: {self.link.down}")
                self._hold(ep)
                sleep_until(scheduled)
            t_start = time.monotonic()
            ep.tick = tick
            end = self._tick(ep, tick, max_steps, t_start)
            ep.timings.append(TickTiming(tick, (t_start - scheduled) * 1e3,
                                         (ep.t_issued - t_start) * 1e3, ep.tick_latency_ms, t_start))
            if end is not None:
                return self._finish(ep, *end)
            # Absolute schedule; if a tick overran a whole period, skip the missed slots.
            tick += 1
            late = (time.monotonic() - (t0 + tick * self.period)) / self.period
            if late >= 1:
                skipped = int(math.floor(late))
                ep.count("tick_overrun", skipped)
                tick += skipped

    def _finish(self, ep: _EpisodeState, reason: str, detail: str) -> EpisodeResult:
        if reason in ABORTING_ENDS:
            self._hold(ep)
            log.warning("episode %s aborted: %s %s", ep.episode_id, reason, detail)
        return EpisodeResult(ep.episode_id, ep.instruction, ep.n_steps, reason, detail,
                             ep.timings, dict(ep.totals), ep.teleop_latency_ms,
                             {source: sorted(names) for source, names in ep.drivers.items()})

    def _tick(self, ep: _EpisodeState, tick: int, max_steps: int, t_start: float) -> tuple[str, str] | None:
        """One tick: capture -> ask -> take replies -> decide -> act -> record. Returns why the
        episode ends, or None to go on."""
        ep.t_issued = t_start
        ep.tick_latency_ms = None
        if self.stop_requested:
            return END_STOPPED, "client stopping"
        obs = self._capture(ep)
        if not isinstance(obs, _Obs):
            return obs  # an arm error, a camera hold (None) or a camera abort
        previous, ep.last_obs = ep.last_obs, obs
        self._ask(ep, tick, t_start, obs)
        self._await_action(ep, tick, t_start)
        teleop = self._intervention(ep, tick, t_start, obs)
        decision = self._decide(ep, tick, t_start, teleop)
        if not isinstance(decision, _Planned):
            return decision
        end = self._act(ep, decision, obs)
        if end is not None:
            return end
        # a hand-guided step is the motion from the last tick's observation to this one's: it belongs
        # to the last observation (what the operator saw when they moved the arm)
        by_hand = decision.teleop is not None and decision.teleop.by_hand
        seen = previous if by_hand else obs
        if seen is not None:
            self._record(ep, tick, decision, seen)
        if self.success is not None and self.success():
            return END_SUCCESS, "success predicate"
        if ep.n_steps >= max_steps:
            return END_MAX_STEPS, ""
        return None

    def _capture(self, ep: _EpisodeState) -> _Obs | tuple[str, str] | None:
        """The arm state and every camera's frame, JPEG-encoded once for the server and the learner."""
        try:
            state = self.arm.state()
            if state.error:
                raise ArmError(state.error)
            frames = {name: cam.read() for name, cam in self.cameras.items()}
        except ArmError as e:
            return self._arm_error(ep, e)
        except RuntimeError as e:  # a camera is gone: hold; the backend reconnects
            return self._camera_trouble(ep, HOLD_CAMERA, str(e))
        t_capture = min(f.t_capture for f in frames.values())
        age = time.time() - t_capture
        if age > self.cfg.max_frame_age_s:  # the policy must not act on an old picture of the world
            return self._camera_trouble(ep, HOLD_STALE_FRAME, f"frame {age * 1e3:.0f} ms old")
        ep.camera_failures = 0
        for name, f in frames.items():  # a repeated seq is a dropped frame: noted, still usable
            if ep.last_seq.get(name) == f.seq:
                ep.count(FRAME_REPEATED)
            ep.last_seq[name] = f.seq
        jpegs = {name: encode_jpeg(f.image, self.cfg.jpeg_quality) for name, f in frames.items()}
        return _Obs(state, state.vector(), jpegs, t_capture)

    def _ask(self, ep: _EpisodeState, tick: int, t_start: float, obs: _Obs) -> None:
        """Hand this tick's observation to the link (it sends in the background) when a query is due."""
        if self._wants_query(ep, tick, t_start):
            self._submit(ep, tick, t_start, obs)

    def _submit(self, ep: _EpisodeState, tick: int, t_start: float, obs: _Obs) -> None:
        rid = f"{ep.episode_id}-{tick}-{uuid.uuid4().hex[:8]}"
        ep.outstanding[rid] = (tick, t_start)
        ep.query_obs[tick] = obs  # what a late chunk was computed from (see _adopt)
        self.link.submit(ActRequest(
            request_id=rid, robot_id=self.cfg.robot_id, episode_id=ep.episode_id, step=ep.n_steps,
            t_capture=obs.t_capture, instruction=ep.instruction, images=obs.jpegs,
            state=obs.state_vec.tolist(), mode="greedy" if ep.recording else ep.mode, teleop_ack=ep.teleop_ack,
            teleop_only=ep.recording))
        ep.last_query_tick = tick

    def _await_action(self, ep: _EpisodeState, tick: int, t_start: float) -> None:
        """Take replies; wait (bounded by the reply budget) while this tick has nothing to execute."""
        budget_end = t_start + self.cfg.reply_budget * self.period
        while True:
            self._take_replies(ep, tick)
            remaining = budget_end - time.monotonic()
            if ep.paused or self._has_action(ep, tick) or remaining <= 0 or self.link.down:
                break
            self.link.reply_ready.wait(timeout=remaining)
        if self.link.down:  # the server is gone: hold now, do not run out the chunk
            self.watchdog.trip(f"server unreachable: {self.link.down}")

    def _intervention(self, ep: _EpisodeState, tick: int, t_start: float, obs: _Obs) -> TeleopAction | None:
        """Does an operator drive this tick? The first source that answers wins. Notes the take-over
        and the hand-back (state for the page, a log line, a fresh start for the policy)."""
        teleop = None
        policy = self._action_for(ep, tick)  # what the policy would do this tick, for a scripted judge
        proposed = None if policy is None else policy.raw
        for source in self.interventions:
            try:
                teleop = source.command(obs.state, proposed)
            except Exception as e:  # noqa: BLE001 - a broken source must hold the arm, not crash the loop
                name = str(getattr(source, "name", "unknown"))
                if not ep.teleop_error:  # once per episode, not at the control rate
                    log.exception("intervention source %s failed; holding the arm", name)
                ep.count(TELEOP_ERROR)
                ep.teleop_error = f"intervention source {name}: {type(e).__name__}: {e}"
                teleop = TeleopAction(np.zeros(7), name, -math.inf)
            if teleop is not None:
                break
        driving = None if teleop is None else teleop.source
        if driving != ep.driving:
            if driving is None:
                self._hand_back(ep, tick, t_start, obs)
            else:
                log.warning("episode %s step %d: OPERATOR DRIVING (%s)", ep.episode_id, ep.n_steps, driving)
                if ep.driving is None:
                    ep.totals[TAKEOVERS] = ep.totals.get(TAKEOVERS, 0) + 1
                self.on_state("teleop", {"episode_id": ep.episode_id, "step": ep.n_steps,
                                         "detail": f"operator driving ({driving})"})
            ep.driving = driving
        return teleop

    def _hand_back(self, ep: _EpisodeState, tick: int, t_start: float, obs: _Obs) -> None:
        """The policy drives again from a fresh query: nothing planned while the operator drove is
        executed (chunks dropped, earlier requests' replies superseded); this tick's observation,
        taken before any policy motion, is the one the policy answers."""
        log.warning("episode %s step %d: operator handed back (%s); %s", ep.episode_id, ep.n_steps, ep.driving,
                    "the arm holds until an operator drives again" if ep.recording else "the policy drives")
        ep.chunk, ep.ensemble = None, []
        ep.teleop_ack, ep.teleop_stale_since = None, None
        for rid, (t, _) in list(ep.outstanding.items()):
            if t < tick:
                del ep.outstanding[rid]
                ep.query_obs.pop(t, None)
                ep.superseded.add(rid)
        if not any(t == tick for t, _ in ep.outstanding.values()):
            self._submit(ep, tick, t_start, obs)
        self.on_state("running", {"episode_id": ep.episode_id, "step": ep.n_steps, "detail": ""})

    def _teleop_step(self, ep: _EpisodeState, tick: int, t_start: float,
                     teleop: TeleopAction) -> _Planned | tuple[str, str] | None:
        """The operator's action for this tick, or hold when it is older than the teleop deadline
        (the episode is aborted when that lasts). The policy's action for the tick goes with it."""
        age = time.monotonic() - teleop.t_command
        if age > self.cfg.teleop_deadline_s:
            ep.count(HOLD_TELEOP_STALE)
            self._hold(ep)
            if ep.teleop_stale_since is None:
                ep.teleop_stale_since = t_start
                log.warning("operator command (%s) %.2f s old: holding", teleop.source, age)
            if t_start - ep.teleop_stale_since > self.cfg.teleop_lost_abort_s:
                return END_TELEOP_LOST, ep.teleop_error or f"no fresh {teleop.source} command for {age:.1f} s"
            return None
        ep.teleop_stale_since = None
        ep.starving_since = None
        proposed = self._action_for(ep, tick)
        return _Planned(teleop.action, None if proposed is None else proposed.chunk, 0, on_policy=False,
                        teleop=teleop, proposed=None if proposed is None else proposed.raw)

    def _decide(self, ep: _EpisodeState, tick: int, t_start: float,
                teleop: TeleopAction | None = None) -> _Planned | tuple[str, str] | None:
        """This tick's raw action, or hold (None), or the end of the episode."""
        if ep.ended_by_operator:
            self._hold(ep)
            return END_OPERATOR, "operator pressed end episode"
        reason = self.watchdog.hold_reason()
        if self.watchdog.tripped:
            ep.count(HOLD_WATCHDOG)
            self._hold(ep)
            return END_SERVER_LOST, reason or ""
        if ep.paused:
            ep.count(HOLD_PAUSED)
            self._hold(ep)
            self.watchdog.feed()  # pausing is not starving; re-armed when the pause ends
            return None
        if teleop is not None:  # the operator's command has its own freshness rule
            return self._teleop_step(ep, tick, t_start, teleop)
        if self._takeover_pending(ep):  # the operator has the arm: no more of the policy's chunk
            ep.count(HOLD_TAKEOVER_PENDING)
            self._hold(ep)
            self.watchdog.feed()  # waiting for the operator is not starving ...
            if ep.takeover_pending_since is None:
                ep.takeover_pending_since = t_start
                log.warning("episode %s step %d: operator taking over; the chunk stops here", ep.episode_id,
                            ep.n_steps)
            if t_start - ep.takeover_pending_since > self.cfg.teleop_lost_abort_s:  # ... unless it lasts
                return END_TELEOP_LOST, "the page took over, but no reply brought its command"
            return None
        ep.takeover_pending_since = None
        if ep.recording:  # a demonstration: nobody drives, nothing moves (waiting is not starving)
            ep.count(HOLD_NO_OPERATOR)
            self._hold(ep)
            return None
        if reason is not None:
            return self._starving(ep, reason, t_start)
        ep.starving_since = None
        planned = self._action_for(ep, tick)
        if planned is None:
            ep.count(HOLD_NO_ACTION)
            self._hold(ep)
        return planned

    def _starving(self, ep: _EpisodeState, reason: str, t_start: float) -> tuple[str, str] | None:
        """No fresh action: hold; abort only if it lasts (a dead server aborted already)."""
        ep.count(HOLD_NO_ACTION if reason == "no action yet" else HOLD_WATCHDOG)
        self._hold(ep)
        if ep.starving_since is None:
            ep.starving_since = t_start
        limit = self.cfg.starve_abort_s + (self.cfg.first_action_grace_s if reason == "no action yet" else 0)
        if t_start - ep.starving_since > limit:
            return END_NO_ACTION, reason
        return None

    def _act(self, ep: _EpisodeState, planned: _Planned, obs: _Obs) -> tuple[str, str] | None:
        """The SafetyFilter, then move (or hold if it says so). A hand-guided step has happened
        already: nothing is commanded (the operator's hands move the arm, no filter can stop them)."""
        if planned.teleop is not None and planned.teleop.by_hand:
            planned.safe = SafeAction(np.asarray(planned.raw, dtype=np.float64), hold=False)
            if self.journal is not None:
                self.journal.executed(ep.n_steps)
            ep.holding, ep.t_issued = False, time.monotonic()
            return None
        planned.safe = self.safety.filter(planned.raw, obs.state.position, obs.state.gripper)
        for k, v in planned.safe.counters.items():
            ep.count(k, v)
        if self.journal is not None:  # before the move: a kill right after it still counts this step
            self.journal.executed(ep.n_steps)
        try:
            if planned.safe.hold:
                self._hold(ep)
            else:
                self.arm.move_delta(planned.safe.action)
                ep.holding = False
        except ArmError as e:
            return self._arm_error(ep, e)
        ep.t_issued = time.monotonic()
        t = planned.teleop
        if t is not None and t.source == self.page_teleop.name and t.seq >= 0 and t.seq != ep.teleop_ack_seq:
            # the first execution of a page command: its latency goes back to the page with the next query
            latency_ms = max(0.0, (ep.t_issued - t.t_command) * 1e3)
            ep.teleop_ack, ep.teleop_ack_seq = TeleopAck(seq=t.seq, server_to_exec_ms=latency_ms), t.seq
            ep.teleop_latency_ms.append(latency_ms)
        return None

    def _record(self, ep: _EpisodeState, tick: int, planned: _Planned, obs: _Obs) -> None:
        """The step for the learner (the pending counters cover the ticks since the last record).

        A chunk's action_chunk/log_prob/value go with the step that first executes it, with
        ``obs_step``: the step whose observation produced the chunk. A chunk whose observation was
        taken while the arm held (no step recorded since) starts at its index 0 now, and its first
        step records that observation (see _adopt). Non-finite chunks are left out (the safety
        counters say why), so no NaN ever reaches the learner. An operator's step is never a
        policy decision: no chunk, no log-prob, on_policy False (see _record_intervention)."""
        if planned.teleop is not None:
            return self._record_intervention(ep, tick, planned, obs)
        chunk = planned.chunk
        first_use = not chunk.recorded
        chunk.recorded = True
        finite_chunk = first_use and bool(np.all(np.isfinite(chunk.actions)))
        seen = chunk.obs if (first_use and chunk.obs is not None) else obs
        obs_step = None
        if first_use:
            obs_step = ep.n_steps if chunk.obs is not None else ep.step_of_tick.get(chunk.obs_tick)
        self.emit(StepMsg(
            robot_id=self.cfg.robot_id, episode_id=ep.episode_id, step=ep.n_steps, images=seen.jpegs,
            state=seen.state_vec.astype(float).tolist(), action=planned.safe.action.astype(float).tolist(),
            action_chunk=chunk.actions.astype(float).tolist() if finite_chunk else None,
            chunk_index=planned.index, log_prob=_finite_or_none(chunk.log_prob) if first_use else None,
            value=_finite_or_none(chunk.value) if first_use else None, policy_version=chunk.policy_version,
            obs_step=obs_step, on_policy=planned.on_policy,
            instruction=ep.instruction, t_capture=seen.t_capture, t_act=time.time(),
            safety=ep.take_pending()))
        ep.step_of_tick[tick] = ep.n_steps
        ep.n_steps += 1
        ep.forget_before(tick - self._chunk_horizon(ep))

    def _record_intervention(self, ep: _EpisodeState, tick: int, planned: _Planned, obs: _Obs) -> None:
        """An operator's step: the executed action (after safety), who drove, and what the policy
        proposed for this tick (None if it had nothing, or nothing finite)."""
        proposed = planned.proposed
        if proposed is not None and not np.all(np.isfinite(proposed)):
            proposed = None
        self.emit(StepMsg(
            robot_id=self.cfg.robot_id, episode_id=ep.episode_id, step=ep.n_steps, images=obs.jpegs,
            state=obs.state_vec.astype(float).tolist(), action=planned.safe.action.astype(float).tolist(),
            policy_version=planned.chunk.policy_version if planned.chunk is not None else -1,
            on_policy=False, intervention=True, intervention_source=planned.teleop.source,
            proposed_action=None if proposed is None else np.asarray(proposed, dtype=float).tolist(),
            instruction=ep.instruction, t_capture=obs.t_capture, t_act=time.time(), safety=ep.take_pending()))
        ep.totals[INTERVENTION_STEPS] = ep.totals.get(INTERVENTION_STEPS, 0) + 1
        source = planned.teleop.source
        who = self.page_teleop.operator if source == self.page_teleop.name else self.cfg.operator
        ep.drivers.setdefault(source, set()).add(who or "operator")
        ep.step_of_tick[tick] = ep.n_steps
        ep.n_steps += 1
        ep.forget_before(tick - self._chunk_horizon(ep))

    def _chunk_horizon(self, ep: _EpisodeState) -> int:
        """How many ticks back an observation can still matter (a chunk's length, plus slack)."""
        longest = max([len(c.actions) for c in ep.ensemble] + ([len(ep.chunk.actions)] if ep.chunk else []) + [1])
        return longest + int(self.cfg.reply_deadline_s / self.period) + 2

    # ---------------------------------------------------------------- pieces
    def _camera_trouble(self, ep: _EpisodeState, counter: str, detail: str) -> tuple[str, str] | None:
        """Hold this tick; abort if the cameras stay unusable longer than a reply could be late."""
        ep.count(counter)
        self._hold(ep)
        ep.camera_failures += 1
        if ep.camera_failures * self.period > self.cfg.reply_deadline_s + self.cfg.camera_grace_s:
            return END_CAMERA, detail
        return None

    def _arm_error(self, ep: _EpisodeState, e: Exception) -> tuple[str, str]:
        log.error("arm error in episode %s: %s; recovering", ep.episode_id, e)
        ep.count("arm_error")
        self._hold(ep)
        try:
            self.arm.recover()
        except Exception as e2:  # noqa: BLE001 - report both; the episode is aborted either way
            log.error("arm recovery failed: %s", e2)
            return END_ARM_ERROR, f"{e}; recovery failed: {e2}"
        return END_ARM_ERROR, str(e)

    def _hold(self, ep: _EpisodeState) -> None:
        if not ep.holding:
            self.arm.hold()
            ep.holding = True

    def _wants_query(self, ep: _EpisodeState, tick: int, now: float) -> bool:
        for rid in [r for r, (_, t) in ep.outstanding.items() if now - t > self.cfg.reply_deadline_s]:
            ep.query_obs.pop(ep.outstanding.pop(rid)[0], None)  # never answered in time: late if it comes
            ep.expired.add(rid)
        if ep.paused:  # only to learn when the operator resumes; about twice a second
            return tick - ep.last_query_tick >= max(1, int(0.5 / self.period))
        if ep.driving is not None or self._takeover_pending(ep) or ep.recording:
            # every tick: the page's commands ride on the replies, and the policy's proposal stays current
            return True
        if self.cfg.execution == "ensemble":
            return True  # the link sends the newest one as soon as the last reply is in
        if ep.outstanding:
            return False  # open loop: one query per chunk
        if ep.chunk is None:
            return True
        remaining = ep.chunk.start_tick + len(ep.chunk.actions) - tick  # actions left, this one included
        return remaining <= 0 or (remaining <= self.cfg.prefetch_steps
                                  and ep.last_query_tick <= ep.chunk.start_tick)

    def _takeover_pending(self, ep: _EpisodeState) -> bool:
        """The page took this episode over, and no reply has brought its command yet."""
        watch = self.takeover_watch
        return (ep.driving is None and watch is not None and watch.pending(ep.episode_id)
                and not self.page_teleop.driving)

    def _has_action(self, ep: _EpisodeState, tick: int) -> bool:
        if self._takeover_pending(ep) or ep.recording:  # the reply to this tick's query brings the operator's command
            return not any(t == tick for t, _ in ep.outstanding.values())
        if ep.driving == self.page_teleop.name and self.cfg.teleop_wait_reply:
            # the page's newest command rides on the reply to this tick's query: waiting for it (within
            # the reply budget) executes a command up to a period earlier than taking the last reply's
            return not any(t == tick for t, _ in ep.outstanding.values())
        if self.cfg.execution == "ensemble":  # give this tick's own observation its chance
            return any(c.start_tick == tick for c in ep.ensemble)
        return ep.chunk is not None and ep.chunk.covers(tick)

    def _take_replies(self, ep: _EpisodeState, tick: int) -> None:
        now = time.monotonic()
        for reply in self.link.take_replies():
            self._take_reply(ep, tick, now, reply)

    def _take_reply(self, ep: _EpisodeState, tick: int, now: float, reply: Reply) -> None:
        rid = reply.request.request_id
        sent = ep.outstanding.pop(rid, None)
        expired = sent is None and rid in ep.expired
        superseded = sent is None and rid in ep.superseded
        if sent is None and not expired and not superseded:  # another episode's, or answered: never executed
            ep.count(DROP_STALE)
            return
        ep.superseded.discard(rid)
        if reply.response is None:
            ep.count(DROP_LATE if reply.late or expired else REPLY_ERROR)
            return
        resp = reply.response
        if resp.request_id != rid:
            ep.count(DROP_STALE)
            return
        self._apply_command(ep, resp.command)  # the operator's buttons count even in a late reply
        # the page's teleop too: its own age decides whether it may move the arm
        self.page_teleop.receive(resp.teleop, reply.t_sent, reply.t_received, resp.timing.total_ms / 1e3)
        if ep.recording:  # no actions in it: the reply says the server lives and who drives
            self.watchdog.feed(now)
            ep.tick_latency_ms = (reply.t_received - reply.t_sent) * 1e3
            return
        if superseded:  # computed from an observation taken while the operator drove
            ep.count(DROP_SUPERSEDED)
            return
        if expired:  # its deadline passed while it was in flight: never executed
            ep.expired.discard(rid)
            ep.count(DROP_LATE)
            return
        obs_tick, t_obs = sent
        actions = np.asarray(resp.actions, dtype=np.float64)
        if actions.ndim != 2 or actions.shape[0] == 0 or actions.shape[1] != 7:
            ep.count("hold_bad_shape")
            return
        obs = ep.query_obs.pop(obs_tick, None)
        held_since_obs = obs is not None and ep.last_step_tick < obs_tick
        if now - t_obs > self.cfg.reply_deadline_s or (tick - obs_tick >= len(actions) and not held_since_obs):
            ep.count(DROP_LATE)
            return
        if ep.paused:
            return
        chunk = self._adopt(ep, tick, obs_tick, obs if held_since_obs else None, actions, rid, resp)
        if self.cfg.execution == "ensemble":
            ep.ensemble = [c for c in ep.ensemble if c.start_tick + len(c.actions) > tick] + [chunk]
        elif ep.chunk is None or obs_tick >= ep.chunk.obs_tick:
            ep.chunk = chunk
        self.watchdog.deadline_s = (len(actions) + self.cfg.watchdog_periods) * self.period
        self.watchdog.feed(now)
        ep.tick_latency_ms = (reply.t_received - reply.t_sent) * 1e3

    def _adopt(self, ep: _EpisodeState, tick: int, obs_tick: int, held_obs: _Obs | None, actions: np.ndarray,
               rid: str, resp: ActResponse) -> Chunk:
        """A fresh reply to the observation of ``obs_tick``, arriving at ``tick``.

        If the arm held still from that observation until now (no step recorded since: the usual
        case when an open-loop chunk ran out and the next reply took longer than the reply budget),
        the world the chunk was planned for is still there: the chunk starts now at its index 0,
        and its first step records the observation it was computed from, a complete decision for
        the learner. Otherwise the arm kept moving meanwhile: the chunk stays aligned to the time
        of its observation (actions for past ticks are skipped), and its first step names the step
        whose observation produced it (``obs_step``)."""
        if held_obs is not None:
            if tick != obs_tick:
                ep.count(RETIMED_AFTER_HOLD)
            return Chunk(actions, tick, rid, resp.log_prob, resp.value, resp.policy_version, obs_tick, obs=held_obs)
        return Chunk(actions, obs_tick, rid, resp.log_prob, resp.value, resp.policy_version, obs_tick)

    def _apply_command(self, ep: _EpisodeState, command: str) -> None:
        if command == "end_episode":
            ep.ended_by_operator = True
        elif command == "pause":
            if not ep.paused:
                self.on_state("paused", {"episode_id": ep.episode_id, "step": ep.n_steps})
            ep.paused = True
        elif ep.paused:
            ep.paused = False
            self.on_state("running", {"episode_id": ep.episode_id, "step": ep.n_steps})

    def _action_for(self, ep: _EpisodeState, tick: int) -> _Planned | None:
        if self.cfg.execution == "open_loop":
            if ep.chunk is None or not ep.chunk.covers(tick):
                return None
            i = tick - ep.chunk.start_tick
            return _Planned(ep.chunk.actions[i], ep.chunk, i, on_policy=True)
        covering = [c for c in ep.ensemble if c.covers(tick)]
        if not covering:
            return None
        # ACT temporal ensembling: w_i = exp(-m * i), i = 0 for the oldest chunk
        weights = np.exp(-self.cfg.ensemble_decay * np.arange(len(covering)))
        stacked = np.stack([c.actions[tick - c.start_tick] for c in covering])
        with np.errstate(invalid="ignore"):
            action = (weights[:, None] * stacked).sum(0) / weights.sum()
        newest = covering[-1]
        # The executed action is an average of several sampled chunks: no single chunk's log-prob
        # describes it, so the step is recorded as not on-policy (the learner's PPO skips it).
        return _Planned(action, newest, tick - newest.start_tick, on_policy=False)


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


class _EpisodeState:
    def __init__(self, episode_id: str, instruction: str):
        self.episode_id = episode_id
        self.instruction = instruction
        self.n_steps = 0
        self.tick = 0
        self.mode = "sample"
        self.drivers: dict[str, set[str]] = {}  # intervention source -> who drove with it
        self.chunk: Chunk | None = None
        self.ensemble: list[Chunk] = []
        self.outstanding: dict[str, tuple[int, float]] = {}  # request_id -> (tick, monotonic t)
        self.expired: set[str] = set()  # request_ids whose reply deadline passed
        self.last_query_tick = -(10**9)
        self.paused = False
        self.ended_by_operator = False
        self.holding = False
        self.camera_failures = 0
        self.last_seq: dict[str, int] = {}
        self.starving_since: float | None = None  # monotonic start of the current watchdog hold
        self.timings: list[TickTiming] = []
        self.totals: dict[str, int] = {}
        self._pending: dict[str, int] = {}
        self.t_issued = 0.0
        self.tick_latency_ms: float | None = None
        self.step_of_tick: dict[int, int] = {}  # tick -> the step recorded in it (recent ticks only)
        self.query_obs: dict[int, _Obs] = {}  # tick -> the observation sent to the server then
        # interventions
        self.driving: str | None = None  # the source that drives now (None: the policy)
        self.takeover_pending_since: float | None = None  # holding for a page take-over's first command
        self.superseded: set[str] = set()  # request_ids asked while the operator drove, before the hand-back
        self.teleop_stale_since: float | None = None  # monotonic start of a hold on a stale command
        self.teleop_error: str = ""  # why an intervention source last failed
        self.teleop_ack: TeleopAck | None = None  # the last page command executed, for the next query
        self.teleop_ack_seq: int | None = None
        self.teleop_latency_ms: list[float] = []  # per page command: server received -> executed
        self.last_obs: _Obs | None = None  # the previous tick's observation (a hand-guided step's)

    @property
    def recording(self) -> bool:
        return self.mode == MODE_RECORD

    @property
    def last_step_tick(self) -> int:
        return max(self.step_of_tick, default=-(10**9))

    def forget_before(self, tick: int) -> None:
        """Drop what no chunk can refer to any more (keeps an endless episode's memory flat)."""
        for d in (self.step_of_tick, self.query_obs):
            for t in [t for t in d if t < tick]:
                del d[t]

    def count(self, key: str, n: int = 1) -> None:
        self.totals[key] = self.totals.get(key, 0) + n
        self._pending[key] = self._pending.get(key, 0) + n

    def take_pending(self) -> dict[str, int]:
        out, self._pending = self._pending, {}
        return out
