"""``runs/<run>/status.json``: what the learner is doing, for the operator page and the demo.

One ``StatusBoard`` per learner process. The phase loop and the ingest thread both report into it;
every report rewrites the file atomically (temp + fsync + rename, readers never see half a file).
Ingestion counters change with every step, so they alone are flushed at most every
``interval_s``; phase changes, rounds, publishes and episode ends are written at once.

Fields (see docs/learner.md): phase, iteration, round, progress, losses, success_rate,
episodes_per_phase, policy_version, ingest, history, updated (unix seconds), started, pid, detail,
waiting_for (null, or what the learner waits for before it can train: "demonstrations"), and
reward_model (only with a reward model: its last fit and the disagreement monitor,
docs/reward_model.md).

``runs/<run>/phases.jsonl`` (``PhaseLog``) is the learner's durable record of the phases it ran,
one JSON object a line, appended and fsynced; the demo's report is segmented by it.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

from episodes.durable import fsync_dir
from episodes.store import write_json_atomic

# collect / value / labels: the RECAP loop's phases before its SFT (learner.algorithm "recap")
PHASES = ("bootstrap", "rl", "sft", "collect", "value", "labels", "idle")
RECENT_WINDOW = 20  # episodes in the "recent" success rate
HISTORY_LEN = 200  # rounds/phases kept in status.json for the success curve


def finite_json(value: Any) -> Any:
    """NaN/inf become null: status.json must be strict JSON (browsers' JSON.parse rejects NaN)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite_json(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite_json(v) for v in value]
    return value


def episode_summary(meta: dict) -> dict:
    """The few fields of an episode's meta.json the status needs (kept in memory per episode)."""
    return {
        "source": meta.get("source", "online"),
        "outcome": meta.get("outcome"),
        "policy_version": meta.get("policy_version"),
        "learner_phase": meta.get("learner_phase") or ("expert" if meta.get("source") == "expert" else "unknown"),
        "finished": float(meta.get("finished", 0.0)),
        "label_source": meta.get("label_source"),
        "reward_model_p": (meta.get("extra") or {}).get("reward_model_p"),
        "original_outcome": meta.get("original_outcome"),
    }


def _rate(summaries: list[dict]) -> dict | None:
    """Success rate over labelled episodes; aborted/discarded ones carry no label."""
    labelled = [s for s in summaries if s["outcome"] in ("success", "failure")]
    if not labelled:
        return None
    wins = sum(s["outcome"] == "success" for s in labelled)
    return {"rate": wins / len(labelled), "n": len(labelled)}


def _rates_by(summaries: list[dict], key: str) -> dict[str, dict]:
    groups: dict[str, list[dict]] = {}
    for s in summaries:
        groups.setdefault(str(s[key]), []).append(s)
    out = {k: _rate(v) for k, v in groups.items()}
    return {k: v for k, v in sorted(out.items()) if v is not None}


def reward_model_disagreement(summaries: list[dict], recent: int = RECENT_WINDOW) -> dict:
    """Model vs operator on the episodes both labelled: the model's P(success) was recorded when the
    episode ended (before the operator's label could train it, so it is a held-out prediction) and
    the operator's label is the final one (also an auto-label the operator later corrected)."""
    both = [s for s in summaries if s.get("label_source") == "operator" and s.get("reward_model_p") is not None
            and s["outcome"] in ("success", "failure")]
    disagree = [(s["reward_model_p"] >= 0.5) != (s["outcome"] == "success") for s in both]
    corrected = [s for s in summaries if s.get("label_source") == "operator" and s.get("original_outcome")
                 and s.get("reward_model_p") is not None and s["original_outcome"] != s["outcome"]]
    tail = disagree[-recent:]
    return {"n": len(both), "disagreements": int(sum(disagree)),
            "rate": sum(disagree) / len(both) if both else None,
            "recent_rate": sum(tail) / len(tail) if tail else None, "recent_n": len(tail),
            "auto_labels": sum(1 for s in summaries if s.get("label_source") == "reward_model"),
            "auto_labels_corrected": len(corrected)}


class StatusBoard:
    def __init__(self, path: str | os.PathLike, interval_s: float = 1.0):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.interval_s = interval_s
        self._lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._fields: dict[str, Any] = {
            "phase": "idle", "iteration": 0, "round": 0, "progress": 0.0, "losses": {},
            "policy_version": None, "detail": "", "waiting_for": None, "started": time.time(), "pid": os.getpid(),
        }
        self._episodes: dict[tuple[str, str], dict] = {}
        self._ingest: dict[str, Any] = {}
        self._history: list[dict] = []
        self._reward_model: dict | None = None
        self._progress_model: dict | None = None
        self._last_write = 0.0

    # ------------------------------------------------------------------ reports
    @property
    def phase(self) -> str:
        return self._fields["phase"]

    def set(self, **fields: Any) -> None:
        """Phase-loop event (phase change, progress, losses, publish): written at once."""
        unknown = set(fields) - {"phase", "iteration", "round", "progress", "losses", "policy_version", "detail",
                                 "waiting_for"}
        if unknown:
            raise KeyError(f"unknown status fields {sorted(unknown)}")
        if "phase" in fields and fields["phase"] not in PHASES:
            raise ValueError(f"phase must be one of {PHASES}, got {fields['phase']!r}")
        with self._lock:
            self._fields.update(fields)
        self.write()

    def add_history(self, entry: dict) -> None:
        with self._lock:
            self._history = (self._history + [{**entry, "time": time.time()}])[-HISTORY_LEN:]
        self.write()

    def load_history(self, entries: list[dict]) -> None:
        with self._lock:
            self._history = list(entries)[-HISTORY_LEN:]

    def record_episodes(self, metas: list[dict], write: bool = True) -> None:
        """An episode ended or was relabelled (or the store was scanned at start-up)."""
        with self._lock:
            for m in metas:
                self._episodes[(m["robot_id"], m["episode_id"])] = episode_summary(m)
        if write:
            self.write()

    def set_reward_model(self, report: dict) -> None:
        """The reward model's latest fit (learner.reward_model): written at once."""
        with self._lock:
            self._reward_model = dict(report)
        self.write()

    def set_progress_model(self, summary: dict) -> None:
        """The progress model's check and the last RL round's shaping (learner.progress): written at once."""
        with self._lock:
            self._progress_model = dict(summary)
        self.write()

    def set_ingest(self, counters: dict) -> None:
        """Ingestion counters: flushed at most every interval_s."""
        with self._lock:
            self._ingest = dict(counters)
            due = time.time() - self._last_write >= self.interval_s
        if due:
            self.write()

    # ------------------------------------------------------------------ output
    def snapshot(self) -> dict:
        with self._lock:
            eps = sorted(self._episodes.values(), key=lambda s: s["finished"])
            fields = dict(self._fields)
            ingest = dict(self._ingest)
            history = list(self._history)
            reward_model = None if self._reward_model is None else dict(self._reward_model)
            progress_model = None if self._progress_model is None else dict(self._progress_model)
        robot_eps = [s for s in eps if s["source"] in ("online", "eval")]
        recent = _rate(robot_eps[-RECENT_WINDOW:]) if robot_eps else None
        success = {
            "recent": recent["rate"] if recent else None,
            "recent_n": recent["n"] if recent else 0,
            "online_by_version": _rates_by([s for s in robot_eps if s["source"] == "online"], "policy_version"),
            "eval_by_version": _rates_by([s for s in robot_eps if s["source"] == "eval"], "policy_version"),
            "by_phase": _rates_by(robot_eps, "learner_phase"),
        }
        per_phase = Counter(s["learner_phase"] for s in eps)
        per_source = Counter(s["source"] for s in eps)
        return finite_json({
            **fields,
            "success_rate": success,
            "episodes_per_phase": dict(sorted(per_phase.items())),
            "episodes_per_source": dict(sorted(per_source.items())),
            "ingest": ingest,
            "history": history,
            **({} if reward_model is None else {"reward_model": {
                **reward_model, "disagreement": reward_model_disagreement(robot_eps)}}),
            **({} if progress_model is None else {"progress_model": progress_model}),
            "updated": time.time(),
        })

    def write(self) -> None:
        # One writer at a time, snapshot taken inside: a slow writer never overwrites a newer file.
        with self._write_lock:
            write_json_atomic(self.path, self.snapshot())
            self._last_write = time.time()


PHASE_LOG = "phases.jsonl"


class PhaseLog:
    """The learner's own record of its phases: ``runs/<run>/phases.jsonl``, append-only.

    One JSON object a line; every line is flushed and fsynced before the call returns, so a crash
    leaves at most a torn last line, which ``read_phase_log`` skips. Records (times in unix seconds,
    ``iteration`` and ``round`` counted from 0 as in learner_state.json, ``key`` = robot/episode):

    * ``{"event": "start", "phase": "bootstrap"|"rl"|"sft", "iteration", "round",
      "serving_version", "time"}`` -- the phase began while LATEST named ``serving_version`` (the
      policy the robots run during it; None before Stage 0);
    * ``{"event": "end", ..., "version", "time", "trained_on": [key], "collected": [key]}`` -- the
      phase published ``version``; ``trained_on``: the episodes an RL round consumed; ``collected``:
      the robot episodes that ended since the previous record (where the learner was when each
      arrived, whatever policy served it);
    * ``{"event": "done", "iterations", "version", "time", "collected": [key]}`` -- the learner
      finished its configured iterations.

    A phase interrupted by a crash or a failed round is started again under the same
    (phase, iteration, round): readers merge the records of one phase.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._lock = threading.Lock()

    def append(self, record: dict) -> None:
        line = json.dumps(finite_json({**record, "time": record.get("time", time.time())}), sort_keys=True)
        with self._lock:
            new = not self.path.exists()
            with open(self.path, "a") as f:
                f.write(line + "\n")
                f.flush()
                os.fsync(f.fileno())
            if new:
                fsync_dir(self.path.parent)

    def records(self) -> list[dict]:
        return read_records(self.path)


def read_records(path: str | os.PathLike) -> list[dict]:
    """The log's records in order; a torn or unparsable line (a crash mid-append) is skipped."""
    try:
        lines = Path(path).read_text().splitlines()
    except FileNotFoundError:
        return []
    out = []
    for line in lines:
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(record, dict) and "event" in record:
            out.append(record)
    return out


def phase_key(record: dict) -> tuple[str, int, int]:
    return record["phase"], int(record.get("iteration", 0)), int(record.get("round", 0))


def read_phase_log(path: str | os.PathLike) -> dict:
    """The phases in the order they started, one dict each (records of a restarted phase merged:
    first start, last end), and the ``done`` record if the learner finished.

    Each phase: phase, iteration, round, serving_version, version (None if it never ended),
    started, ended, trained_on, collected."""
    phases: dict[tuple, dict] = {}
    done = None
    for r in read_records(path):
        if r["event"] == "done":
            done = r
            continue
        if r["event"] not in ("start", "end"):
            continue
        p = phases.setdefault(phase_key(r), {
            "phase": r["phase"], "iteration": int(r.get("iteration", 0)), "round": int(r.get("round", 0)),
            "serving_version": r.get("serving_version"), "version": None, "started": r["time"],
            "ended": None, "trained_on": [], "collected": []})
        if r["event"] == "end":
            p.update(version=r.get("version"), ended=r["time"], trained_on=list(r.get("trained_on") or []))
            p["collected"] += [k for k in r.get("collected") or [] if k not in p["collected"]]
    return {"phases": sorted(phases.values(), key=lambda p: p["started"]), "done": done}
