"""The phase loop: bootstrap, then the deployment's recipe (learner/recipes/), phase after phase.

    no policy (or --bootstrap)  -> Trainer.bootstrap()                       publishes a "full" version
    each phase                  -> phase = recipe.next_phase(iteration, phases done this iteration)
                                   (None: the iteration is over -> the next one)
                                -> wait for its `episodes` new labelled online episodes (purpose
                                   "train", outcome success|failure, not consumed before), its new
                                   expert demos, and a demo or success to imitate if it needs one
                                -> metrics = phase.train(trainer, metas) -> Trainer.publish(kind, phase.name)
                                -> commit -> phase record -> TensorBoard -> status.json (one tail)
    `max_iterations` iterations (0 = forever), then the learner exits.

iRe-VLA (`learner.algorithm` ppo | sac): `rl_rounds_per_phase` RL rounds (fewer on a success
plateau with rl_schedule "plateau"), each publishing a head version, then an SFT phase (full).
RECAP (recap, docs/recap.md): one phase per iteration, whose status.json phase goes collect ->
value -> labels -> sft; with nothing to condition "positive" on it raises WaitForData and the loop
waits, publishing nothing. The loop branches on no recipe's name: what a phase needs, trains and
publishes is the Phase's.

Resume rule (a learner killed with SIGKILL at any point neither loses nor double-counts an episode):
``runs/<run>/learner_state.json`` (atomic write) holds the iteration, the phases done and the
episodes each consumed; the recipe is asked again from the phases done, so it picks up where it was. Before a round trains, its episodes and the newest version number are
written as ``pending``; the round is committed (episodes -> consumed) only once its version is
published. On restart a pending round counts as done only if LATEST names a version newer than the
one it started from and of its phase (the publish finished); otherwise it is redone (its episodes
are still the oldest unconsumed ones). Everything complete in the store that is not consumed is new.

Phase record: every phase (Stage 0, each RL round, each SFT phase) appends a ``start`` and an
``end`` line to ``runs/<run>/phases.jsonl`` (episodes.status.PhaseLog) with the policy it served,
the version it published and the robot episodes that arrived meanwhile; a finished learner appends
``done``. A phase committed by the resume rule above gets its ``end`` line at the restart.

Promotion gate (server, docs/promotion.md): LATEST always names the learner's newest version, so the
rule above is unaffected by a refusal. Before each round and each SFT phase the trainer checks the
registry: if the version it trains was refused (or descends from a refused one), it reloads the
promoted version and continues from there (``Trainer.follow_promotion``); a restart resumes from
``registry.resume_version()`` for the same reason.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from episodes.status import PHASE_LOG, PhaseLog, StatusBoard, phase_key
from episodes.store import EpisodeStore, episode_key, write_json_atomic
from learner.curriculum import publish_for_deployment
from learner.episode_rules import is_rl_episode, reward_model_labels_trusted
from learner.metrics import scalar_metrics
from learner.progress.round import progress_status
from learner.recipes.base import Phase, PhaseHooks, WaitForData
from learner.recipes.registry import recipe_for

log = logging.getLogger("learner.loop")

STATE_FILE = "learner_state.json"
STATE_VERSION = 1
RESCAN_S = 5.0  # safety net: rescan the store this often even without an ingest notification
MAX_FAILED_ROUNDS = 3  # RL rounds failing in a row before the learner stops with the error


class LearnerState:
    """What the loop has durably done. Only ``commit_*`` and ``begin`` change it; each saves atomically."""

    def __init__(self, path: Path):
        self.path = path
        # "phase": the last committed phase's name (for a reader; the recipe decides what comes next)
        self.data: dict[str, Any] = {"state_version": STATE_VERSION, "iteration": 0, "phase": None,
                                     "round": 0, "consumed": {}, "rounds": [], "pending": None, "rejected": {}}
        if path.exists():
            loaded = json.loads(path.read_text())
            if loaded.get("state_version") != STATE_VERSION:
                raise RuntimeError(f"{path}: state_version {loaded.get('state_version')} is not {STATE_VERSION}")
            self.data.update(loaded)

    def save(self) -> None:
        self.data["updated"] = time.time()
        write_json_atomic(self.path, self.data)

    # ---- views
    @property
    def iteration(self) -> int:
        return self.data["iteration"]

    @property
    def round(self) -> int:  # phases committed in the current iteration
        return self.data["round"]

    @property
    def consumed(self) -> dict[str, dict]:
        return self.data["consumed"]

    @property
    def pending(self) -> dict | None:
        return self.data["pending"]

    def done_this_iteration(self) -> list[dict]:
        """The current iteration's committed phases, oldest first: what its recipe asks about."""
        return [r for r in self.data["rounds"] if r["iteration"] == self.iteration]

    # ---- transitions
    def begin(self, phase: str, episodes: list[str], newest_version: int | None) -> None:
        """Written before training: the work in flight and the version it starts from."""
        self.data["pending"] = {"phase": phase, "iteration": self.iteration, "round": self.round,
                                "episodes": episodes, "after_version": newest_version, "started": time.time()}
        self.save()

    def commit(self, version: int, metrics: dict) -> dict:
        """The pending work's version is published: record it and advance."""
        p = self.data["pending"]
        entry = {"iteration": p["iteration"], "round": p["round"], "phase": p["phase"], "version": version,
                 "episodes": p["episodes"], "metrics": metrics, "time": time.time()}
        for key in p["episodes"]:
            self.consumed[key] = {"iteration": p["iteration"], "round": p["round"], "version": version}
        self.data["rounds"].append(entry)
        self.data.update(round=p["round"] + 1, phase=p["phase"], pending=None)
        self.save()
        return entry

    def end_iteration(self) -> None:
        """The recipe has no phase left in this iteration (asked again after a restart, it says so again)."""
        self.data.update(iteration=self.iteration + 1, round=0)
        self.save()

    def drop_pending(self) -> None:
        self.data["pending"] = None
        self.save()


class ShutdownRequested(Exception):
    """Raised by the signal handler to abandon a long training call."""


class Shutdown:
    """SIGTERM/SIGINT -> ``event`` set. While the loop is inside a long training call that writes
    nothing durable (``interruptible``), the signal also raises ShutdownRequested to abandon it;
    during a publish or a state save it only sets the event, so the write completes first."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.interruptible = False

    def install(self) -> None:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, self._handle)

    def _handle(self, signum, frame) -> None:
        log.info("signal %s: shutting down", signal.Signals(signum).name)
        self.event.set()
        if self.interruptible:
            self.interruptible = False
            raise ShutdownRequested()


class PhaseLoop:
    def __init__(self, config, run_dir: str | Path, status: StatusBoard | None = None, shutdown=None,
                 ingest=None, trainer_factory: Callable | None = None, poll_s: float = 0.5):
        self.config = config
        self.lc = config.learner
        self.recipe = recipe_for(self.lc)  # what comes next (learner/recipes/)
        self.run_dir = Path(run_dir)
        self.status = status or StatusBoard(self.run_dir / "status.json", self.lc.status_interval_s)
        self.shutdown = shutdown or Shutdown()
        self.store = ingest.store if ingest is not None else EpisodeStore(self.run_dir / "episodes")
        self.state = LearnerState(self.run_dir / STATE_FILE)
        self.poll_s = poll_s
        self._trainer_factory = trainer_factory
        self._trainer = None
        self._writer = None
        self._new_data = threading.Event()
        self._index_lock = threading.Lock()
        self._index: dict[str, dict] = {}
        self._last_scan = 0.0
        self._failures = 0  # RL rounds failed in a row
        self._ingest = ingest
        self.phase_log = PhaseLog(self.run_dir / PHASE_LOG)
        self._open_phase: tuple | None = None  # (phase, iteration, round) whose start line is written
        self._collected: list[str] = []  # robot episodes that arrived since the last phase-log line
        self._logged = {k for r in self.phase_log.records() for k in r.get("collected") or []}
        # RL trains on reward-model labels only in reward_model mode "auto"; off = no reward model at all
        self.reward_model_labels = reward_model_labels_trusted(config)
        self.reward_model = None
        if config.reward_model.mode != "off":
            from learner.reward_model import RewardModelTrainer  # numpy + the feature cache (torch)
            from vla.success_classifier import classifier_config

            self.reward_model = RewardModelTrainer(self.run_dir, classifier_config(config.reward_model))
            self.status.set_reward_model({"mode": config.reward_model.mode, **self.reward_model.report})
        if ingest is not None:
            ingest.on_episode = self.episode_changed

    # ------------------------------------------------------------------ plumbing
    @property
    def trainer(self):
        if self._trainer is None:
            from torch.utils.tensorboard import SummaryWriter

            factory = self._trainer_factory
            if factory is None:
                from learner.trainer import Trainer as factory
            self._writer = SummaryWriter(str(self.run_dir / "tb"))
            self.status.set(detail="loading model")
            self._trainer = factory(self.config, self.run_dir, log=self._writer)
        return self._trainer

    def episode_changed(self, meta: dict) -> None:
        """Called by the ingest thread when an episode ends or is relabelled."""
        key = episode_key(meta)
        with self._index_lock:
            self._index[key] = meta
            if key not in self._logged and meta.get("source") in ("online", "eval"):
                self._logged.add(key)  # a relabel is the same episode: listed once
                self._collected.append(key)
        self._new_data.set()

    def _rescan(self) -> None:
        metas = self.store.list_episodes()
        with self._index_lock:
            self._index = {episode_key(m): m for m in metas}
        self._last_scan = time.time()

    def candidates(self) -> list[dict]:
        """New RL episodes, oldest first (a redone round takes the same episodes again)."""
        if time.time() - self._last_scan > RESCAN_S:
            self._rescan()
        with self._index_lock:
            metas = list(self._index.values())
        consumed = self.state.consumed
        rejected = self.state.data["rejected"]
        fresh = [m for m in metas if episode_key(m) not in consumed and episode_key(m) not in rejected
                 and is_rl_episode(m, self.reward_model_labels)]
        return sorted(fresh, key=lambda m: (m.get("finished", 0), episode_key(m)))

    def _interruptible(self, fn: Callable, *args, **kw):
        """Run a long training call that SIGTERM may abandon (nothing durable is written inside)."""
        if self.shutdown.event.is_set():
            raise ShutdownRequested()
        self.shutdown.interruptible = True
        try:
            return fn(*args, **kw)
        finally:
            self.shutdown.interruptible = False

    def _newest_version(self) -> int | None:
        from vla.registry import CheckpointRegistry

        versions = CheckpointRegistry(self.run_dir / "checkpoints").versions()
        return max(versions) if versions else None

    def _latest(self) -> tuple[int | None, dict | None]:
        from vla.registry import CheckpointRegistry

        reg = CheckpointRegistry(self.run_dir / "checkpoints")
        latest = reg.latest()
        return latest, (reg.read_meta(latest) if latest is not None else None)

    def _tb(self, tag: str, value: float, step: int) -> None:
        if self._writer is not None:
            self._writer.add_scalar(tag, value, step)
            self._writer.flush()

    # ------------------------------------------------------------------ phase record
    def _take_collected(self) -> list[str]:
        with self._index_lock:
            keys, self._collected = self._collected, []
        return keys

    def _log_start(self, phase: str, iteration: int, rnd: int) -> None:
        """The phase's start line, once per (phase, iteration, round) per process."""
        key = (phase, iteration, rnd)
        if self._open_phase == key:
            return
        self._open_phase = key
        self.phase_log.append({"event": "start", "phase": phase, "iteration": iteration, "round": rnd,
                               "serving_version": self._latest_version()})

    def _latest_version(self) -> int | None:
        return self._latest()[0]

    def _log_end(self, entry: dict) -> None:
        self._open_phase = None
        record = {"event": "end", "phase": entry["phase"], "iteration": entry["iteration"],
                  "round": entry["round"], "version": entry["version"], "trained_on": entry.get("episodes", []),
                  "collected": self._take_collected()}
        self.phase_log.append(record)

    def _reconcile_phase_log(self) -> None:
        """Rounds committed in learner_state.json whose end line a crash kept from the log get it now
        (the state is the truth; the log is appended after each commit)."""
        from vla.registry import CheckpointError, CheckpointRegistry

        records = self.phase_log.records()
        started = {phase_key(r) for r in records if r["event"] == "start"}
        ended = {phase_key(r) for r in records if r["event"] == "end"}
        for entry in self.state.data["rounds"]:
            if phase_key(entry) in ended:
                continue
            if phase_key(entry) not in started:
                try:  # a version's parent is the version the trainer held, i.e. the one served meanwhile
                    parent = CheckpointRegistry(self.run_dir / "checkpoints").read_meta(entry["version"])["parent"]
                except CheckpointError:
                    parent = None
                self.phase_log.append({"event": "start", "phase": entry["phase"], "iteration": entry["iteration"],
                                       "round": entry["round"], "serving_version": parent, "time": entry["time"]})
            self.phase_log.append({"event": "end", "phase": entry["phase"], "iteration": entry["iteration"],
                                   "round": entry["round"], "version": entry["version"],
                                   "trained_on": entry["episodes"], "collected": [], "time": entry["time"],
                                   "reconciled": True})

    # ------------------------------------------------------------------ resume
    def recover(self) -> None:
        """Settle a round/phase that was in flight when the previous learner died."""
        p = self.state.pending
        if p is None:
            return
        latest, meta = self._latest()
        after = p["after_version"] if p["after_version"] is not None else 0
        if latest is not None and latest > after and meta.get("phase") == p["phase"]:
            entry = self.state.commit(latest, scalar_metrics(meta.get("metrics") or {}))
            log.info("resume: %s round %d of iteration %d was published as v%d before the restart; "
                     "committed %d episodes", p["phase"], p["round"], p["iteration"], latest, len(p["episodes"]))
            self.status.add_history(self._history_entry(entry))
        else:
            log.info("resume: %s work of iteration %d (round %d) never published; redoing it", p["phase"],
                     p["iteration"], p["round"])
            self.state.drop_pending()  # its episodes are still unconsumed: the next round takes them

    def _bootstrap_history(self) -> list[dict]:
        """Stage 0 versions (often published by an earlier `learn --bootstrap` process)."""
        from vla.registry import CheckpointError, CheckpointRegistry

        reg, out = CheckpointRegistry(self.run_dir / "checkpoints"), []
        for v in reg.versions():
            try:
                if reg.read_meta(v).get("phase") == "bootstrap":
                    out.append({"iteration": 0, "round": 0, "phase": "bootstrap", "version": v,
                                "n_episodes": None, "success_rate": None})
            except CheckpointError:
                continue
        return out

    def _history_entry(self, entry: dict) -> dict:
        m = entry.get("metrics") or {}
        return {"iteration": entry["iteration"], "round": entry["round"], "phase": entry["phase"],
                "version": entry["version"], "n_episodes": len(entry["episodes"]),
                "success_rate": m.get("success_rate")}

    # ------------------------------------------------------------------ phases
    def bootstrap(self) -> int:
        if not self._wait_for_training_data("bootstrap", self.trainer.has_demos):
            raise ShutdownRequested()
        self.status.set(phase="bootstrap", progress=0.0, detail="Stage 0: SFT on expert demonstrations")
        log.info("bootstrap: training from expert demonstrations")
        self._log_start("bootstrap", 0, 0)
        version = self._interruptible(self.trainer.bootstrap, progress=True,  # tqdm on stderr
                                      on_progress=self._progress_reporter())
        self._log_end({"phase": "bootstrap", "iteration": 0, "round": 0, "version": version})
        self.status.set(phase="bootstrap", progress=1.0, policy_version=version, detail="bootstrapped")
        self.status.add_history({"iteration": 0, "round": 0, "phase": "bootstrap", "version": version,
                                 "n_episodes": len(self.store.list_episodes(source="expert")),
                                 "success_rate": None})
        log.info("bootstrap published v%d", version)
        return version

    def run_bootstrap_only(self) -> int:
        try:
            self.bootstrap()
        except ShutdownRequested:
            log.info("bootstrap interrupted")
            return 1
        self.status.set(phase="idle", detail="bootstrap done")
        return 0

    def _wait_for_episodes(self, n: int, phase: str = "rl", progress: tuple[float, float] = (0.0, 1.0)
                           ) -> list[dict] | None:
        """Block until n new RL episodes exist (None on shutdown). `phase`: what status.json shows
        meanwhile; `progress`: the iteration's fraction before and after the phase."""
        last_report = -1
        while not self.shutdown.event.is_set():
            if self._ingest is not None and not self._ingest.alive:
                raise RuntimeError("the ingest thread died: no episodes can arrive (see the log above)")
            self.refit_reward_model()
            found = self.candidates()
            if len(found) >= n:
                return found[:n]
            if len(found) != last_report:
                last_report = len(found)
                done = progress[0] + (progress[1] - progress[0]) * len(found) / n
                self.status.set(phase=phase, iteration=self.state.iteration, round=self.state.round,
                                progress=done, detail=f"waiting for episodes ({len(found)}/{n})")
            self._new_data.wait(self.poll_s)
            self._new_data.clear()
        return None

    def refit_reward_model(self) -> None:
        """Refit the reward model if the operator's labels (or the trunk) changed since the last fit."""
        if self.reward_model is None:
            return
        with self._index_lock:
            metas = list(self._index.values())
        try:
            report = self.reward_model.refit_if_needed(metas, self.store, self.trainer.cache, self.trainer.policy)
        except Exception as e:  # noqa: BLE001 - a bad episode must not stop RL; the page shows the error
            log.exception("reward model refit failed")
            report = {"state": f"refit failed: {type(e).__name__}: {e}", "n_labels": None}
        if report is not None:
            self.status.set_reward_model({"mode": self.config.reward_model.mode, **report})

    def _take_episodes(self, phase: Phase) -> list[dict] | None:
        """The phase's new online episodes, re-read (a relabel may have landed since they were
        indexed); None on shutdown or when a label changed under us (then the loop asks again)."""
        if not phase.episodes:
            return []
        self.status.set(phase=phase.waiting or phase.name, iteration=self.state.iteration, round=phase.round,
                        progress=phase.progress[0], detail=f"{phase.describe}: collecting {phase.episodes} episodes")
        episodes = self._wait_for_episodes(phase.episodes, phase=phase.waiting or phase.name,
                                           progress=phase.progress)
        if episodes is None:
            return None
        metas = [m for m in (self.store.read_meta(e["robot_id"], e["episode_id"]) for e in episodes) if m]
        metas = [m for m in metas if is_rl_episode(m, self.reward_model_labels)]
        return metas if len(metas) == phase.episodes else None

    def _take_demos(self, phase: Phase) -> list[dict] | None:
        """`phase.demos` expert demos not consumed before (oldest first); None on shutdown."""
        if not phase.demos:
            return []
        while not self.shutdown.event.is_set():
            fresh = sorted((m for m in self.store.list_episodes(source="expert")
                            if episode_key(m) not in self.state.consumed), key=lambda m: (m.get("finished", 0),
                                                                                          episode_key(m)))
            if len(fresh) >= phase.demos:
                return fresh[:phase.demos]
            self.status.set(phase=phase.waiting or phase.name, waiting_for="demonstrations",
                            detail=f"waiting for new expert demos ({len(fresh)}/{phase.demos})")
            self._new_data.wait(max(self.poll_s, 1.0))
            self._new_data.clear()
        return None

    def run_phase(self, phase: Phase) -> None:
        """Wait for what `phase` needs, train, publish, commit (the recipe's step; module docstring)."""
        it = self.state.iteration
        self._log_start(phase.name, it, phase.round)
        if phase.needs_sft_data and not phase.episodes and not self._wait_for_training_data(
                phase.waiting or phase.name, self.trainer.has_sft_data):
            return
        metas = self._take_episodes(phase)
        if metas is None:
            return
        if phase.needs_sft_data and phase.episodes and not self._wait_for_training_data(
                phase.waiting or phase.name, self.trainer.has_sft_data):
            return
        demos = self._take_demos(phase)
        if demos is None:
            return
        keys = [episode_key(m) for m in metas + demos]
        self.follow_promotion()
        self.state.begin(phase.name, keys, self._newest_version())
        self.status.set(phase=phase.status or phase.name, iteration=it, round=phase.round,
                        progress=phase.progress[0],
                        detail=phase.describe or phase.name)
        log.info("%s (round %d of iteration %d) on %d episodes", phase.name, phase.round, it, len(keys))
        hooks = PhaseHooks(it, progress=True, on_phase=self._on_step_of(it),  # tqdm on stderr
                           on_progress=self._progress_reporter())
        try:
            metrics = self._interruptible(phase.train, self.trainer, metas, hooks)
        except ShutdownRequested:
            raise
        except WaitForData as e:  # nothing to learn from yet: wait for more data
            self.state.drop_pending()
            log.warning("%s of iteration %d: %s; waiting for more episodes, nothing published", phase.name, it, e)
            self.status.set(phase=phase.waiting or phase.name, waiting_for="successes", detail=f"{phase.name}: {e}")
            self._new_data.wait(max(self.poll_s, 1.0))
            self._new_data.clear()
            return
        except Exception as e:
            if not phase.reject_on_error:
                raise
            self._round_failed(keys, e)  # one bad episode must not crash-loop the learner on every restart
            return
        self._failures = 0
        self._published(phase, self.trainer.publish(phase.publish, phase.name, metrics), metrics)

    def _on_step_of(self, it: int) -> Callable[[str], None]:
        def on_phase(step: str) -> None:
            self.status.set(phase=step, progress=0.0, detail=f"iteration {it}: {step}")
        return on_phase

    def _published(self, phase: Phase, version: int, metrics: dict) -> None:
        """The one tail after every publish: commit, phase record, TensorBoard, status, history, log."""
        it = self.state.iteration
        if "progress_model_usable" in metrics:  # the round held the progress part (learner.progress)
            self.status.set_progress_model(progress_status(self.run_dir, metrics))
        publish_for_deployment(self.config, self.run_dir, self.trainer.store.list_episodes())
        losses = scalar_metrics(metrics)
        entry = self.state.commit(version, losses)
        self._log_end(entry)
        step = len(self.state.data["rounds"])
        for k, v in losses.items():
            self._tb(f"loop/{phase.name}/{k}", v, step)
        self._tb("loop/policy_version", version, step)
        self.status.set(iteration=it, round=phase.round + 1, policy_version=version, losses=losses, progress=phase.progress[1], waiting_for=None,
                        detail=f"{phase.name} (round {phase.round}) published v{version}")
        self.status.add_history(self._history_entry(entry))
        log.info("%s (round %d of iteration %d) published v%d: %s", phase.name, phase.round, it, version,
                 ", ".join(f"{k}={v:.4g}" for k, v in list(losses.items())[:8]))

    def _round_failed(self, keys: list[str], error: Exception) -> None:
        """Set the round's episodes aside (never retried) and go on; several failures in a row
        are a bug, not bad data: stop with the error."""
        self._failures += 1
        log.exception("RL round failed on %s; these episodes are set aside (learner_state.json 'rejected')",
                      keys)
        for key in keys:
            self.state.data["rejected"][key] = {"error": f"{type(error).__name__}: {error}",
                                                "iteration": self.state.iteration, "round": self.state.round}
        self.state.drop_pending()
        self.status.set(detail=f"RL round failed ({self._failures} in a row): {type(error).__name__}: {error}")
        if self._failures >= MAX_FAILED_ROUNDS:
            raise RuntimeError(f"{self._failures} RL rounds in a row failed; last error: {error}") from error

    def _wait_for_training_data(self, phase: str, ready: Callable[[], bool]) -> bool:
        """Block (holding no lock, publishing nothing) until `ready()`; say so in status.json, which
        the operator page shows. False on shutdown. A learner with nothing to train on must wait for
        demonstrations, not crash and be restarted into the same crash."""
        waiting = False
        while not self.shutdown.event.is_set():
            if ready():
                if waiting:
                    self.status.set(waiting_for=None, detail="training data arrived")
                    log.info("%s: training data arrived", phase)
                return True
            if not waiting:
                waiting = True
                detail = (f"waiting for demonstrations: no expert demos or successful episodes in "
                          f"{self.store.root} to train {phase} on (record demos: `vlaloop demos` on the "
                          f"mock, teleoperation on a robot)")
                log.warning("%s", detail)
                self.status.set(phase=phase, waiting_for="demonstrations", detail=detail)
            self._new_data.wait(max(self.poll_s, 1.0))
            self._new_data.clear()
        return False

    def _progress_reporter(self) -> Callable[[float], None]:
        """status.json progress during a long training call (of the phase status.json shows): every
        percent, at most once per the status board's interval."""
        last = {"progress": 0.0, "t": 0.0}

        def report(progress: float) -> None:
            now = time.monotonic()
            if progress >= 1.0 or (progress - last["progress"] >= 0.01 and now - last["t"] >= self.status.interval_s):
                last.update(progress=progress, t=now)
                self.status.set(progress=min(progress, 1.0))

        return report

    def follow_promotion(self) -> None:
        """Before training: if the server's promotion gate refused the version the trainer holds
        (or one it descends from), continue from the promoted version instead."""
        version = self.trainer.follow_promotion()
        if version is not None:
            self.status.set(policy_version=version, detail=f"the server refused the trained version; "
                                                           f"continuing from promoted v{version}")

    # ------------------------------------------------------------------ main
    def run(self, bootstrap: bool = False) -> int:
        try:
            self._rescan()
            self.status.load_history(self._bootstrap_history() + [self._history_entry(e)
                                                                   for e in self.state.data["rounds"]])
            if bootstrap or not self.trainer.has_policy():
                self.bootstrap()
            else:
                version = self._interruptible(self.trainer.resume)
                self.status.set(policy_version=version, detail=f"resumed from v{version}")
                log.info("resumed from v%s (iteration %d, last phase %s, round %d, %d episodes consumed)", version,
                         self.state.iteration, self.state.data["phase"], self.state.round, len(self.state.consumed))
            self.recover()
            self._reconcile_phase_log()
            self.recipe.check(self.trainer)
            while not self.shutdown.event.is_set():
                if self.lc.max_iterations and self.state.iteration >= self.lc.max_iterations:
                    log.info("finished %d iterations", self.state.iteration)
                    self.phase_log.append({"event": "done", "iterations": self.state.iteration,
                                           "version": self._latest_version(), "collected": self._take_collected()})
                    self.status.set(phase="idle", progress=1.0, detail=f"done: {self.state.iteration} iterations")
                    return 0
                phase = self.recipe.next_phase(self.state.iteration, self.state.done_this_iteration())
                if phase is None:
                    self.state.end_iteration()
                    self.status.set(iteration=self.state.iteration, round=0)
                else:
                    self.run_phase(phase)
        except ShutdownRequested:
            log.info("training interrupted by shutdown; a restart resumes from the last published version")
        finally:
            if self._writer is not None:
                self._writer.close()
        return 0
