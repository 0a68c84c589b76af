"""The fixed-rate control loop of one episode (docs/architecture.md, "Robot client").

Every tick, at an absolute deadline ``t0 + k * period`` (never ``sleep(period)``, which drifts;
``robot_client.timing``):

  capture -> hand the observation to the ActionLink (background HTTP) when a query is due -> take
  replies that are fresh -> who drives (``robot_client.arbitration``: an operator or the policy) ->
  pick this tick's action from the chunk(s) (``robot_client.execution``: open loop or temporal
  ensembling) -> watchdog -> SafetyFilter -> execute or hold -> record the step for the learner
  (``robot_client.recording``).

The loop never waits on the network: it gives a reply to this tick's observation at most
``reply_budget`` of a period, then moves on (executing the rest of the current chunk, or holding).
A reply is executed only if its request_id is one this episode is waiting for and it is younger
than ``reply_deadline_s``; anything else is dropped and counted.
"""

from __future__ import annotations

import gc
import logging
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from deployment.robot import RobotConfig
from interface.robot import Arm, ArmError, Camera
from interface.teleop import InterventionSource, TeleopAction
from protocol.images import encode_jpeg
from protocol.messages import ActRequest, ActResponse, StepMsg
from robot_client.arbitration import Arbiter, OperatorState
from robot_client.execution import Chunk, ExecutionStrategy, Observation, Planned, execution_strategy
from robot_client.journal import ExecutionJournal
from robot_client.recording import StepRecorder
from robot_client.safety import SafeAction, SafetyFilter
from robot_client.server_client import ActionLink, Reply
from robot_client.timing import TickSchedule, TickTiming, set_realtime, sleep_until, summarize_timings
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
        # Who may take the arm from the policy (the sources, the page, the client's TakeoverWatch).
        self.arbiter = Arbiter(cfg, self.period, interventions)
        self.stop_requested = False
        self.journal: ExecutionJournal | None = None  # set by the runner: executed steps survive a kill
        self.episode: EpisodeState | None = None
        self._scheduling: str | None = None
        # A thread waking from sleep waits for the GIL up to the switch interval (5 ms by default)
        # when another thread runs Python code: 0.5 ms keeps the tick start on time.
        sys.setswitchinterval(min(sys.getswitchinterval(), 0.0005))

    # ---------------------------------------------------------------- one episode
    def new_episode(self, episode_id: str, instruction: str, mode: str | None = None) -> EpisodeState:
        """The state of a fresh episode, with the execution strategy the config names."""
        mode = mode or ("sample" if self.cfg.mode == "auto" else self.cfg.mode)
        return EpisodeState(episode_id, instruction, mode, execution_strategy(self.cfg),
                            StepRecorder(self.emit, self.cfg.robot_id, episode_id, instruction))

    def run_episode(self, episode_id: str, instruction: str, max_steps: int, mode: str | None = None) -> EpisodeResult:
        ep = self.new_episode(episode_id, instruction, mode)
        self.episode = ep  # the running episode, for status and tests (read-only outside the loop)
        # Move everything alive now out of the collector's reach: a full collection over a large heap
        # (torch imported in the same process, say) would otherwise stall a tick for 100s of ms.
        gc.collect()
        gc.freeze()
        if self._scheduling is None:  # per thread: the thread that runs the episodes
            self._scheduling = set_realtime(self.cfg.realtime_priority)
            log.info("control loop at %.1f Hz, %s", self.cfg.rate_hz, self._scheduling)
        self.watchdog.reset()
        self.arbiter.start_episode(episode_id, ep.mode)
        self.link.take_replies()  # anything still arriving belongs to an earlier episode
        schedule = TickSchedule(self.period, time.monotonic())
        while True:
            scheduled = schedule.deadline
            if sleep_until(scheduled, wake=None if ep.holding else self.link.down_event):
                # the server died between two ticks: hold NOW, not at the next tick; that tick
                # then sees the tripped watchdog and aborts the episode
                self.watchdog.trip(f"server unreachable: {self.link.down}")
                self._hold(ep)
                sleep_until(scheduled)
            t_start = time.monotonic()
            ep.tick = schedule.tick
            end = self._tick(ep, schedule.tick, max_steps, t_start)
            ep.timings.append(TickTiming(schedule.tick, (t_start - scheduled) * 1e3,
                                         (ep.t_issued - t_start) * 1e3, ep.tick_latency_ms, t_start))
            if end is not None:
                return self._finish(ep, *end)
            skipped = schedule.advance(time.monotonic())  # a tick that overran skips the missed slots
            if skipped:
                ep.count("tick_overrun", skipped)

    def _finish(self, ep: EpisodeState, reason: str, detail: str) -> EpisodeResult:
        if reason in ABORTING_ENDS:
            self._hold(ep)
            log.warning("episode %s aborted: %s %s", ep.episode_id, reason, detail)
        return EpisodeResult(ep.episode_id, ep.instruction, ep.n_steps, reason, detail,
                             ep.timings, dict(ep.totals), ep.operator.latency_ms,
                             {source: sorted(names) for source, names in ep.operator.drivers.items()})

    def _tick(self, ep: EpisodeState, tick: int, max_steps: int, t_start: float) -> tuple[str, str] | None:
        """One tick: capture -> ask -> take replies -> who drives -> decide -> act -> record.
        Returns why the episode ends, or None to go on."""
        ep.t_issued = t_start
        ep.tick_latency_ms = None
        if self.stop_requested:
            return END_STOPPED, "client stopping"
        obs = self._capture(ep)
        if not isinstance(obs, Observation):
            return obs  # an arm error, a camera hold (None) or a camera abort
        previous, ep.last_obs = ep.last_obs, obs
        self._ask(ep, tick, t_start, obs)
        self._await_action(ep, tick, t_start)
        teleop = self._intervention(ep, tick, t_start, obs)
        decision = self._decide(ep, tick, t_start, teleop)
        if not isinstance(decision, Planned):
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

    # ---------------------------------------------------------------- capture
    def _capture(self, ep: EpisodeState) -> Observation | tuple[str, str] | None:
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
        return Observation(state, state.vector(), jpegs, t_capture)

    def _camera_trouble(self, ep: EpisodeState, counter: str, detail: str) -> tuple[str, str] | None:
        """Hold this tick; abort if the cameras stay unusable longer than a reply could be late."""
        ep.count(counter)
        self._hold(ep)
        ep.camera_failures += 1
        if ep.camera_failures * self.period > self.cfg.reply_deadline_s + self.cfg.camera_grace_s:
            return END_CAMERA, detail
        return None

    # ---------------------------------------------------------------- ask the server
    def _ask(self, ep: EpisodeState, tick: int, t_start: float, obs: Observation) -> None:
        """Hand this tick's observation to the link (it sends in the background) when a query is due."""
        if self._wants_query(ep, tick, t_start):
            self._submit(ep, tick, t_start, obs)

    def _wants_query(self, ep: EpisodeState, tick: int, now: float) -> bool:
        for rid in [r for r, (_, t) in ep.outstanding.items() if now - t > self.cfg.reply_deadline_s]:
            ep.query_obs.pop(ep.outstanding.pop(rid)[0], None)  # never answered in time: late if it comes
            ep.expired.add(rid)
        if ep.paused:  # only to learn when the operator resumes; about twice a second
            return tick - ep.last_query_tick >= max(1, int(0.5 / self.period))
        if self.arbiter.operator_involved(ep.operator, ep.episode_id, ep.recording):
            return True
        return ep.execution.wants_query(tick, ep.last_query_tick, waiting=bool(ep.outstanding))

    def _submit(self, ep: EpisodeState, tick: int, t_start: float, obs: Observation) -> None:
        rid = f"{ep.episode_id}-{tick}-{uuid.uuid4().hex[:8]}"
        ep.outstanding[rid] = (tick, t_start)
        ep.query_obs[tick] = obs  # what a late chunk was computed from (see _adopt)
        self.link.submit(ActRequest(
            request_id=rid, robot_id=self.cfg.robot_id, episode_id=ep.episode_id, step=ep.n_steps,
            t_capture=obs.t_capture, instruction=ep.instruction, images=obs.jpegs,
            state=obs.state_vec.tolist(), mode="greedy" if ep.recording else ep.mode, teleop_ack=ep.operator.ack,
            teleop_only=ep.recording))
        ep.last_query_tick = tick

    # ---------------------------------------------------------------- take replies
    def _await_action(self, ep: EpisodeState, tick: int, t_start: float) -> None:
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

    def _has_action(self, ep: EpisodeState, tick: int) -> bool:
        if self.arbiter.command_rides_on_reply(ep.operator, ep.episode_id, ep.recording):
            return not any(t == tick for t, _ in ep.outstanding.values())
        return ep.execution.has_action(tick)

    def _take_replies(self, ep: EpisodeState, tick: int) -> None:
        now = time.monotonic()
        for reply in self.link.take_replies():
            self._take_reply(ep, tick, now, reply)

    def _take_reply(self, ep: EpisodeState, tick: int, now: float, reply: Reply) -> None:
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
        self.arbiter.page_teleop.receive(resp.teleop, reply.t_sent, reply.t_received, resp.timing.total_ms / 1e3)
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
        self._take_chunk(ep, tick, now, reply, sent)

    def _take_chunk(self, ep: EpisodeState, tick: int, now: float, reply: Reply, sent: tuple[int, float]) -> None:
        """A reply this episode waits for, in time: its chunk goes to the execution strategy."""
        resp = reply.response
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
        chunk = self._adopt(ep, tick, obs_tick, obs if held_since_obs else None, actions, resp)
        ep.execution.adopt(chunk, tick)
        self.watchdog.deadline_s = (len(actions) + self.cfg.watchdog_periods) * self.period
        self.watchdog.feed(now)
        ep.tick_latency_ms = (reply.t_received - reply.t_sent) * 1e3

    def _adopt(self, ep: EpisodeState, tick: int, obs_tick: int, held_obs: Observation | None, actions: np.ndarray,
               resp: ActResponse) -> Chunk:
        """A fresh reply to the observation of ``obs_tick``, arriving at ``tick``.

        If the arm held still from that observation until now (no step recorded since: the usual
        case when an open-loop chunk ran out and the next reply took longer than the reply budget),
        the world the chunk was planned for is still there: the chunk starts now at its index 0,
        and its first step records the observation it was computed from, a complete decision for
        the learner. Otherwise the arm kept moving meanwhile: the chunk stays aligned to the time
        of its observation (actions for past ticks are skipped), and its first step names the step
        whose observation produced it (``obs_step``)."""
        rid = resp.request_id
        if held_obs is not None:
            if tick != obs_tick:
                ep.count(RETIMED_AFTER_HOLD)
            return Chunk(actions, tick, rid, resp.log_prob, resp.value, resp.policy_version, obs_tick, obs=held_obs)
        return Chunk(actions, obs_tick, rid, resp.log_prob, resp.value, resp.policy_version, obs_tick)

    def _apply_command(self, ep: EpisodeState, command: str) -> None:
        if command == "end_episode":
            ep.ended_by_operator = True
        elif command == "pause":
            if not ep.paused:
                self.on_state("paused", {"episode_id": ep.episode_id, "step": ep.n_steps})
            ep.paused = True
        elif ep.paused:
            ep.paused = False
            self.on_state("running", {"episode_id": ep.episode_id, "step": ep.n_steps})

    # ---------------------------------------------------------------- who drives
    def _intervention(self, ep: EpisodeState, tick: int, t_start: float, obs: Observation) -> TeleopAction | None:
        """Does an operator drive this tick? The first source that answers wins. Notes the take-over
        and the hand-back (state for the page, a log line, a fresh start for the policy)."""
        policy = ep.execution.action_for(tick)  # what the policy would do this tick, for a scripted judge
        teleop = self.arbiter.poll(ep.operator, obs.state, None if policy is None else policy.raw, ep.count)
        driving = None if teleop is None else teleop.source
        if driving != ep.operator.driving:
            if driving is None:
                self._hand_back(ep, tick, t_start, obs)
            else:
                log.warning("episode %s step %d: OPERATOR DRIVING (%s)", ep.episode_id, ep.n_steps, driving)
                if ep.operator.driving is None:
                    ep.totals[TAKEOVERS] = ep.totals.get(TAKEOVERS, 0) + 1
                self.on_state("teleop", {"episode_id": ep.episode_id, "step": ep.n_steps,
                                         "detail": f"operator driving ({driving})"})
            ep.operator.driving = driving
        return teleop

    def _hand_back(self, ep: EpisodeState, tick: int, t_start: float, obs: Observation) -> None:
        """The policy drives again from a fresh query: nothing planned while the operator drove is
        executed (chunks dropped, earlier requests' replies superseded); this tick's observation,
        taken before any policy motion, is the one the policy answers."""
        log.warning("episode %s step %d: operator handed back (%s); %s", ep.episode_id, ep.n_steps,
                    ep.operator.driving,
                    "the arm holds until an operator drives again" if ep.recording else "the policy drives")
        ep.execution.clear()
        ep.operator.ack, ep.operator.stale_since = None, None
        for rid, (t, _) in list(ep.outstanding.items()):
            if t < tick:
                del ep.outstanding[rid]
                ep.query_obs.pop(t, None)
                ep.superseded.add(rid)
        if not any(t == tick for t, _ in ep.outstanding.values()):
            self._submit(ep, tick, t_start, obs)
        self.on_state("running", {"episode_id": ep.episode_id, "step": ep.n_steps, "detail": ""})

    # ---------------------------------------------------------------- decide
    def _decide(self, ep: EpisodeState, tick: int, t_start: float,
                teleop: TeleopAction | None = None) -> Planned | tuple[str, str] | None:
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
        if self.arbiter.takeover_pending(ep.operator, ep.episode_id):
            return self._await_takeover(ep, t_start)
        ep.operator.takeover_pending_since = None
        if ep.recording:  # a demonstration: nobody drives, nothing moves (waiting is not starving)
            ep.count(HOLD_NO_OPERATOR)
            self._hold(ep)
            return None
        if reason is not None:
            return self._starving(ep, reason, t_start)
        ep.starving_since = None
        planned = ep.execution.action_for(tick)
        if planned is None:
            ep.count(HOLD_NO_ACTION)
            self._hold(ep)
        return planned

    def _teleop_step(self, ep: EpisodeState, tick: int, t_start: float,
                     teleop: TeleopAction) -> Planned | tuple[str, str] | None:
        """The operator's action for this tick, or hold when it is older than the teleop deadline
        (the episode is aborted when that lasts). The policy's action for the tick goes with it."""
        if not self.arbiter.is_fresh(ep.operator, teleop, t_start):
            ep.count(HOLD_TELEOP_STALE)
            self._hold(ep)
            if self.arbiter.lost(ep.operator.stale_since, t_start):
                age = time.monotonic() - teleop.t_command
                return END_TELEOP_LOST, ep.operator.error or f"no fresh {teleop.source} command for {age:.1f} s"
            return None
        ep.starving_since = None
        proposed = ep.execution.action_for(tick)
        return Planned(teleop.action, None if proposed is None else proposed.chunk, 0, on_policy=False,
                       teleop=teleop, proposed=None if proposed is None else proposed.raw)

    def _await_takeover(self, ep: EpisodeState, t_start: float) -> tuple[str, str] | None:
        """The operator has the arm, its first command is not here yet: no more of the policy's chunk."""
        ep.count(HOLD_TAKEOVER_PENDING)
        self._hold(ep)
        self.watchdog.feed()  # waiting for the operator is not starving ...
        if ep.operator.takeover_pending_since is None:
            ep.operator.takeover_pending_since = t_start
            log.warning("episode %s step %d: operator taking over; the chunk stops here", ep.episode_id,
                        ep.n_steps)
        if self.arbiter.lost(ep.operator.takeover_pending_since, t_start):  # ... unless it lasts
            return END_TELEOP_LOST, "the page took over, but no reply brought its command"
        return None

    def _starving(self, ep: EpisodeState, reason: str, t_start: float) -> tuple[str, str] | None:
        """No fresh action: hold; abort only if it lasts (a dead server aborted already)."""
        ep.count(HOLD_NO_ACTION if reason == "no action yet" else HOLD_WATCHDOG)
        self._hold(ep)
        if ep.starving_since is None:
            ep.starving_since = t_start
        limit = self.cfg.starve_abort_s + (self.cfg.first_action_grace_s if reason == "no action yet" else 0)
        if t_start - ep.starving_since > limit:
            return END_NO_ACTION, reason
        return None

    # ---------------------------------------------------------------- act
    def _act(self, ep: EpisodeState, planned: Planned, obs: Observation) -> tuple[str, str] | None:
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
        self.arbiter.executed(ep.operator, planned.teleop, ep.t_issued)
        return None

    def _hold(self, ep: EpisodeState) -> None:
        if not ep.holding:
            self.arm.hold()
            ep.holding = True

    def _arm_error(self, ep: EpisodeState, e: Exception) -> tuple[str, str]:
        log.error("arm error in episode %s: %s; recovering", ep.episode_id, e)
        ep.count("arm_error")
        self._hold(ep)
        try:
            self.arm.recover()
        except Exception as e2:  # noqa: BLE001 - report both; the episode is aborted either way
            log.error("arm recovery failed: %s", e2)
            return END_ARM_ERROR, f"{e}; recovery failed: {e2}"
        return END_ARM_ERROR, str(e)

    # ---------------------------------------------------------------- record
    def _record(self, ep: EpisodeState, tick: int, planned: Planned, obs: Observation) -> None:
        """The step for the learner (the pending counters cover the ticks since the last record)."""
        if planned.teleop is not None:
            ep.recorder.record_intervention(tick, planned, obs, ep.take_pending())
            ep.totals[INTERVENTION_STEPS] = ep.totals.get(INTERVENTION_STEPS, 0) + 1
            self.arbiter.note_driver(ep.operator, planned.teleop.source)
        else:
            ep.recorder.record(tick, planned, obs, ep.take_pending())
        ep.forget_before(tick - self._chunk_horizon(ep))

    def _chunk_horizon(self, ep: EpisodeState) -> int:
        """How many ticks back an observation can still matter (a chunk's length, plus slack)."""
        return max(ep.execution.longest_chunk(), 1) + int(self.cfg.reply_deadline_s / self.period) + 2


class EpisodeState:
    """One running episode: its execution strategy and chunks, its operator side, its step
    recorder, the queries in flight, and what the loop keeps between ticks."""

    def __init__(self, episode_id: str, instruction: str, mode: str, execution: ExecutionStrategy,
                 recorder: StepRecorder):
        self.episode_id = episode_id
        self.instruction = instruction
        self.mode = mode
        self.tick = 0
        self.execution = execution
        self.operator = OperatorState()
        self.recorder = recorder
        # queries in flight
        self.outstanding: dict[str, tuple[int, float]] = {}  # request_id -> (tick, monotonic t)
        self.expired: set[str] = set()  # request_ids whose reply deadline passed
        self.superseded: set[str] = set()  # request_ids asked while the operator drove, before the hand-back
        self.query_obs: dict[int, Observation] = {}  # tick -> the observation sent to the server then
        self.last_query_tick = -(10**9)
        # the operator's buttons, the arm and the cameras
        self.paused = False
        self.ended_by_operator = False
        self.holding = False
        self.camera_failures = 0
        self.last_seq: dict[str, int] = {}
        self.starving_since: float | None = None  # monotonic start of the current watchdog hold
        self.last_obs: Observation | None = None  # the previous tick's observation (a hand-guided step's)
        # timing and counters
        self.timings: list[TickTiming] = []
        self.t_issued = 0.0
        self.tick_latency_ms: float | None = None
        self.totals: dict[str, int] = {}
        self._pending: dict[str, int] = {}

    @property
    def recording(self) -> bool:
        return self.mode == MODE_RECORD

    @property
    def n_steps(self) -> int:
        return self.recorder.n_steps

    @property
    def driving(self) -> str | None:
        """The intervention source that drives now (None: the policy)."""
        return self.operator.driving

    @property
    def last_step_tick(self) -> int:
        return self.recorder.last_step_tick

    def forget_before(self, tick: int) -> None:
        """Drop what no chunk can refer to any more (keeps an endless episode's memory flat)."""
        self.recorder.forget_before(tick)
        for t in [t for t in self.query_obs if t < tick]:
            del self.query_obs[t]

    def count(self, key: str, n: int = 1) -> None:
        self.totals[key] = self.totals.get(key, 0) + n
        self._pending[key] = self._pending.get(key, 0) + n

    def take_pending(self) -> dict[str, int]:
        out, self._pending = self._pending, {}
        return out
