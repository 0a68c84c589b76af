"""Episodes, one after another: reset -> control loop -> label -> EpisodeEnd (docs/architecture.md, "Robot client").

An episode that ends normally (max steps, auto-success, the operator's end button) waits for the
operator's label through the server; the mock's success predicate is offered as the auto outcome.
An episode that ends because something failed (server gone, arm error, no actions) is aborted:
``EpisodeEnd(outcome="aborted")``, stored but never trained on. After a lost server the runner
keeps the arm holding and retries until the server answers again, then starts a new episode.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from deployment.robot import RobotConfig
from interface.robot import Arm, ArmError, Camera
from protocol.messages import EpisodeEnd
from robot_client.journal import ExecutionJournal
from robot_client.loop import MODE_RECORD, ControlLoop, EpisodeResult
from robot_client.server_client import ServerClient, ServerRefused, ServerUnavailable
from robot_client.tasks import TaskChoice

log = logging.getLogger(__name__)
KEEP_RESULTS = 1000  # EpisodeRunner.results keeps the latest episodes only


@dataclass
class Rig:
    """What the runner drives: an arm, cameras and the task (mock or real)."""

    arm: Arm
    cameras: dict[str, Camera]
    task: str
    new_episode: Callable[[int], str]  # seed -> instruction (resets the scene on the mock)
    success: Callable[[], bool] | None = None  # auto outcome (mock); None on real hardware
    max_steps: int | Callable[[], int] | None = None  # the task's limit (callable: read per episode)
    close: Callable[[], None] = field(default=lambda: None)
    expert: Callable[[float], np.ndarray] | None = None  # noise -> a simulator's expert action now (scripted operator)
    choice: TaskChoice | None = None  # the tasks the operator may set for the next episode, and the one in force


def new_episode_id() -> str:
    return f"ep{time.strftime('%Y%m%dT%H%M%S', time.gmtime())}-{uuid.uuid4().hex[:8]}"


class StatusReporter:
    """Posts the robot's state to the server on changes, from its own thread: a slow or dead
    server never delays the control loop. Only the newest state is sent."""

    def __init__(self, client: ServerClient, extra: Callable[[], dict] | None = None):
        self.client = client
        self.extra = extra or (lambda: {})
        self._cv = threading.Condition()
        self._latest: dict | None = None
        self._stop = False
        self.current: dict = {"state": "resetting"}
        self.posted = 0
        self._thread = threading.Thread(target=self._run, name="status-reporter", daemon=True)

    def start(self) -> StatusReporter:
        self._thread.start()
        return self

    def report(self, state: str, **info) -> None:
        status = {"state": state, **{k: v for k, v in self.current.items() if k != "state"}, **info}
        status["detail"] = str(status.get("detail", ""))[:1000]
        with self._cv:
            self.current = status
            self._latest = dict(status)
            self._cv.notify_all()

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        self._thread.join(timeout=3)

    def _run(self) -> None:
        while True:
            with self._cv:
                while self._latest is None and not self._stop:
                    self._cv.wait(timeout=2.0)
                    if self._latest is None and not self._stop:
                        self._latest = dict(self.current)  # heartbeat every 2 s
                if self._stop:
                    return
                status, self._latest = self._latest, None
            status.update(self.extra())
            try:
                self.client.post_status(status)
                self.posted += 1
            except (ServerUnavailable, ServerRefused) as e:
                log.debug("status not posted: %s", e)


class EpisodeRunner:
    def __init__(self, rig: Rig, loop: ControlLoop, client: ServerClient, emit: Callable, cfg: RobotConfig,
                 status: StatusReporter, calibration: dict | None = None, marker: Path | None = None,
                 persisted: Callable[[float], bool] | None = None, persist_timeout_s: float = 5.0):
        self.rig = rig
        self.loop = loop
        self.client = client
        self.emit = emit  # the Streamer's submit
        # the Streamer's persisted(): the episode's close is on disk before the crash marker goes
        self.persisted = persisted
        self.persist_timeout_s = persist_timeout_s
        self.cfg = cfg
        self.status = status
        self.calibration = calibration  # copied into every episode's metadata
        # names the episode in progress; left behind by a crash, it is closed as aborted on restart
        self.marker = marker
        self.journal_path = marker.with_name(marker.name + ".executed") if marker is not None else None
        if self.journal_path is not None:
            loop.journal = ExecutionJournal(self.journal_path)
        self.results: list[tuple[EpisodeResult, EpisodeEnd]] = []
        self._stop = threading.Event()
        self._mode = "sample" if cfg.mode == "auto" else cfg.mode
        self._seed: int | None = None  # the running episode's seed
        self._reward_model_p: float | None = None  # the server's reward-model score of the last label
        self.demos_recorded = 0  # demonstrations the operator labelled success (robot.record_demos)
        self._refused = ""  # why the operator's last task choice was refused (told to the page)
        self._reset: dict = {}  # the scene reset before the running episode: who, and how long it took
        self._reset_started = time.monotonic()

    def stop(self) -> None:
        self._stop.set()
        self.loop.stop_requested = True

    @property
    def stopped(self) -> bool:
        return self._stop.is_set()

    def run(self, episodes: int = 0) -> list[tuple[EpisodeResult, EpisodeEnd]]:
        self.close_crashed_episode()
        n = 0
        while not self._stop.is_set() and (episodes == 0 or n < episodes):
            recording = self.demos_recorded < self.cfg.record_demos
            # the scene reset first: the arm goes home right after the label, whatever the server's state
            if not self.between_episodes() or not self.wait_for_server(teleop_only=recording):
                break
            _, end = self.run_one(seed=self.cfg.seed + n, mode=MODE_RECORD if recording else self.episode_mode(n))
            if recording and end.outcome == "success":
                self.demos_recorded += 1
                log.info("demonstration %d of %d recorded", self.demos_recorded, self.cfg.record_demos)
            n += 1
        self.rig.arm.hold()
        return self.results

    def episode_mode(self, n: int) -> str:
        """sample (exploration) or greedy (evaluation) for the n-th episode. In mode `auto` the
        robot evaluates while the learner consolidates (SFT), as the iRe-VLA recipe does: those greedy
        episodes give the success curve and are never used for RL."""
        if self.cfg.eval_every > 0 and (n + 1) % self.cfg.eval_every == 0:
            return "greedy"
        if self.cfg.mode == "auto":
            return "greedy" if self.client.learner_phase() == "sft" else "sample"
        return self.cfg.mode

    def close_crashed_episode(self) -> None:
        """An episode the client died in never got its EpisodeEnd: send it now, as aborted."""
        if self.marker is None or not self.marker.exists():
            return
        try:
            info = json.loads(self.marker.read_text())
            journaled, executed = ExecutionJournal.read(self.journal_path)
            executed = executed if journaled == info["episode_id"] else 0
            end = EpisodeEnd(robot_id=self.cfg.robot_id, episode_id=info["episode_id"], outcome="aborted",
                             label_source="auto", n_steps=executed, instruction=info.get("instruction") or "-",
                             task=info.get("task", ""), extra={"end_reason": "client_crashed", "purpose": "train",
                                                               "executed_steps": executed})
        except (ValueError, KeyError, TypeError) as e:
            log.error("unreadable episode marker %s (%s); ignoring it", self.marker, e)
        else:
            log.warning("closing episode %s, left open by a crash, as aborted", info["episode_id"])
            self.emit(end)
        self.marker.unlink(missing_ok=True)
        self.journal_path.unlink(missing_ok=True)

    def _mark(self, episode_id: str, instruction: str) -> None:
        if self.marker is not None:
            tmp = self.marker.with_name(self.marker.name + ".tmp")
            with open(tmp, "w") as f:
                json.dump({"episode_id": episode_id, "instruction": instruction, "task": self.rig.task}, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.marker)
            self.loop.journal.begin(episode_id)

    def wait_for_server(self, teleop_only: bool = False) -> bool:
        """Hold the arm and retry until the server answers (and the action link sees it too);
        ``teleop_only`` (recording demonstrations): a server with no checkpoint yet will do."""
        announced = False
        while not self._stop.is_set():
            if self.client.ready(timeout=1.0, teleop_only=teleop_only) and self.loop.link.down is None:
                return True
            if not announced:
                log.warning("server %s not reachable or not ready; arm holding, retrying every %.1fs",
                            self.cfg.server_url, self.cfg.server_retry_s)
                self.rig.arm.hold()
                self.status.report("holding", detail="server unreachable or not ready")
                announced = True
            self._stop.wait(self.cfg.server_retry_s)
        return False

    # ---------------------------------------------------------------- between two episodes
    def between_episodes(self) -> bool:
        """The scene reset and the next episode's task. With ``robot.scene_reset`` operator the arm
        goes home and the robot waits for the operator's ready (the page's button, a device's);
        otherwise (simulators) it goes on at once. False when the client stops meanwhile."""
        waits = self.cfg.operator_resets()
        self._reset_started = time.monotonic()
        if waits:
            try:
                self.rig.arm.reset_home()
            except ArmError as e:  # the episode's own reset tries again (and aborts it if it fails)
                log.error("going home for the scene reset failed: %s", e)
            self.rig.arm.hold()
            log.info("scene reset: the arm is home; waiting for the operator's ready")
            self.status.report("waiting_reset", episode_id=None, step=0,
                               detail="reset the scene, then press Ready" + (f"; {self._refused}" if self._refused
                                                                             else ""))
        answer = self._wait_ready(waits)
        if answer is None:
            return False
        if self._take_task(answer) is not None:  # the page shows the task (or the refusal) now
            try:
                self.client.next_episode(waiting=False, wait_s=0.0, offer={**self._task_offer(),
                                                                            "refused": self._refused[:1000]})
            except (ServerUnavailable, ServerRefused) as e:
                log.debug("refusal not posted: %s", e)
        self._reset = {"reset": "operator" if waits else "auto"}
        return True

    def _task_offer(self) -> dict:
        choice = self.rig.choice
        return {} if choice is None else {"tasks": choice.offer(), "task": choice.task,
                                          "instruction": choice.instruction}

    def _ready_devices(self) -> list:
        return [s for s in self.loop.arbiter.sources if callable(getattr(s, "ready_pressed", None))]

    def _wait_ready(self, waits: bool) -> dict | None:
        """The server's answer once the operator is ready (at once without a wait); None on stop."""
        devices = self._ready_devices() if waits else []
        announced = pressed = False
        while not self._stop.is_set():
            # a device's button counts as the page's (kept while the server does not answer)
            pressed = any([d.ready_pressed() for d in devices]) or pressed
            try:
                answer = self.client.next_episode(waiting=waits and not pressed, wait_s=0.5 if devices else 5.0,
                                                  offer={**self._task_offer(), "refused": self._refused[:1000]})
            except (ServerUnavailable, ServerRefused) as e:
                if not waits and "HTTP 404" in str(e):  # an older server: no task choice, no wait
                    return {}
                if not announced:
                    log.warning("between episodes: %s; arm holding, retrying", e)
                    announced = True
                self._stop.wait(self.cfg.server_retry_s)
                continue
            if answer.get("ready") or pressed:
                return answer
        return None

    def _take_task(self, answer: dict) -> bool | None:
        """The operator's task for the next episode, if they set one (kept until they set another).
        True: taken; False: refused (``_refused`` says why); None: nothing was set."""
        choice = self.rig.choice
        task, instruction = answer.get("task"), answer.get("instruction")
        if choice is None or (task is None and instruction is None):
            return None
        try:
            choice.choose(task, instruction)
        except ValueError as e:
            self._refused = f"task refused: {e}"
            log.error("%s; the task stays %r", self._refused, choice.task)
            return False
        self._refused = ""
        log.info("next episode's task: %s (%r)", choice.task, choice.instruction or "drawn per episode")
        return True

    # ---------------------------------------------------------------- one episode
    def run_one(self, seed: int, mode: str | None = None) -> tuple[EpisodeResult, EpisodeEnd]:
        episode_id = new_episode_id()
        self._mode = mode or ("sample" if self.cfg.mode == "auto" else self.cfg.mode)
        self._seed = seed  # a simulator's episode is replayable from it
        if self.rig.choice is not None:
            self.rig.task = self.rig.choice.task
        self.status.report("resetting", episode_id=episode_id, step=0, task=self.rig.task)
        try:
            instruction = self.rig.new_episode(seed)
            self.rig.arm.reset_home()
            # from the end of the last episode (its label) to this one's start: homing, the operator's
            # scene reset, the simulator's reset
            self._reset["reset_s"] = round(time.monotonic() - self._reset_started, 3)
        except ArmError as e:
            log.error("reset failed: %s; recovering", e)
            detail = f"reset failed: {e}"
            try:
                self.rig.arm.recover()
            except Exception as e2:  # noqa: BLE001 - any failure here needs a human
                detail += f"; recovery failed: {e2}"
            result = EpisodeResult(episode_id, "", 0, "arm_error", detail)
            self._stop_if_unrecoverable(result)
            return self._end(result, "aborted", "auto", auto_outcome=None)
        rig_max = self.rig.max_steps() if callable(self.rig.max_steps) else self.rig.max_steps
        max_steps = min(self.cfg.max_steps, rig_max or self.cfg.max_steps)  # the task's limit, if smaller
        self._mark(episode_id, instruction)
        recording = self._mode == MODE_RECORD
        self.status.report("running", episode_id=episode_id, step=0, instruction=instruction,
                           task=self.rig.task, loop_hz=self.cfg.rate_hz,
                           detail=f"recording demonstration {self.demos_recorded + 1} of {self.cfg.record_demos}: "
                                  f"take over to drive" if recording else self._refused)
        result = self.loop.run_episode(episode_id, instruction, max_steps, mode=self._mode)
        summary = result.timing_summary(self.loop.period)
        log.info("episode %s ended: %s after %d steps; jitter p99 %.2f ms; counters %s", episode_id,
                 result.end_reason, result.n_steps, summary.get("jitter_p99_ms", float("nan")),
                 result.counters)
        if result.aborted:
            self.status.report("holding" if result.end_reason in ("server_lost", "teleop_lost") else "error",
                               step=result.n_steps, detail=f"aborted: {result.end_reason} {result.detail}")
            self._stop_if_unrecoverable(result)
            return self._end(result, "aborted", "auto", auto_outcome=None)
        if self.cfg.dry_run:  # the arm never moved: nothing to label or learn from
            return self._end(result, "aborted", "auto", auto_outcome=None)
        if recording and result.n_steps == 0:  # nobody drove: no demonstration to label
            log.warning("episode %s: no operator step recorded; not a demonstration", episode_id)
            return self._end(result, "aborted", "auto", auto_outcome=None)
        auto = None
        if self.rig.success is not None:
            auto = "success" if self.rig.success() else "failure"
        self.rig.arm.hold()
        outcome, source = self.wait_for_label(result, auto)
        return self._end(result, outcome, source, auto_outcome=auto, reward_model_p=self._reward_model_p)

    def _close_marker(self, end: EpisodeEnd) -> None:
        """Delete the crash marker and the journal once the close is durable: handed to the
        streamer is not enough (it sits in memory until the streamer's thread writes it to the
        outbox), and a kill in between would lose the episode's close for good."""
        if self.persisted is not None and not self.persisted(self.persist_timeout_s):
            log.error("the close of episode %s is not on disk after %.1f s; keeping its crash marker",
                      end.episode_id, self.persist_timeout_s)
            return
        self.marker.unlink(missing_ok=True)
        self.loop.journal.end()

    def _stop_if_unrecoverable(self, result: EpisodeResult) -> None:
        """An arm that cannot recover (user stop pressed, hardware fault) needs a human: stop."""
        if "recovery failed" in result.detail:
            log.critical("arm could not recover (%s); the robot client stops", result.detail)
            self.status.report("error", detail=f"arm could not recover: {result.detail}"[:1000])
            self._stop.set()

    def wait_for_label(self, result: EpisodeResult, auto: str | None) -> tuple[str, str]:
        """The operator's label through the server; ('aborted', 'timeout') when none came in time."""
        self.status.report("waiting_label", step=result.n_steps, detail=f"auto outcome: {auto}")
        deadline = time.monotonic() + self.cfg.label_timeout_s
        posted = False
        self._reward_model_p = None
        while not self._stop.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                if not posted:
                    self.client.post_awaiting(result.episode_id, auto, result.n_steps)
                    posted = True
                # short polls: a stop request (SIGTERM) is noticed within seconds
                label = self.client.wait_label(result.episode_id, timeout_s=min(left, 5.0))
            except ServerUnavailable as e:  # keep trying until our own label timeout
                log.warning("label wait: %s", e)
                self._stop.wait(min(self.cfg.server_retry_s, max(0.0, left)))
                continue
            except ServerRefused as e:
                log.error("label wait refused: %s", e)
                break
            if label is None:
                continue
            p = label.get("reward_model_p")
            self._reward_model_p = float(p) if isinstance(p, (int, float)) else None
            if label.get("outcome") == "discard":
                return "aborted", "operator"
            if label.get("outcome") in ("success", "failure"):
                src = label.get("label_source", "operator")
                return label["outcome"], src if src in ("operator", "auto", "reward_model") else "operator"
            log.error("label with an unknown outcome %r ignored", label.get("outcome"))
        return "aborted", "timeout"

    def _end(self, result: EpisodeResult, outcome: str, source: str, auto_outcome: str | None,
             reward_model_p: float | None = None):
        end = EpisodeEnd(robot_id=self.cfg.robot_id, episode_id=result.episode_id, outcome=outcome,
                         label_source=source, n_steps=result.n_steps, instruction=result.instruction or "-",
                         task=self.rig.task,
                         extra={"end_reason": result.end_reason, "detail": result.detail[:500],
                                "auto_outcome": auto_outcome, "reward_model_p": reward_model_p,
                                "counters": result.counters,
                                "timing": result.timing_summary(self.loop.period), "mode": self._mode,
                                "purpose": {"greedy": "eval", MODE_RECORD: "demo"}.get(self._mode, "train"),
                                **self._reset,
                                # a demonstration: who drove, with which device (source -> operators)
                                **({"demo": {"drivers": result.drivers, "devices": sorted(result.drivers)}}
                                   if self._mode == MODE_RECORD else {}),
                                # the scene's seed: a simulator replays the episode's layout from it
                                "seed": self._seed,
                                **({"dry_run": True} if self.cfg.dry_run else {}),
                                **({"calibration": self.calibration} if self.calibration else {})})
        self.emit(end)
        if self.marker is not None:
            self._close_marker(end)
        self.results.append((result, end))
        if len(self.results) > KEEP_RESULTS:  # a robot running for days: keep memory flat (~8 KB each)
            del self.results[:-KEEP_RESULTS]
        return result, end
