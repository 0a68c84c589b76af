"""Reading and writing a run's episode store from outside the learner, safely.

The learner is the store's only writer (docs/architecture.md). So an import refuses to write
while a learner runs on the run dir, and an export refuses to read one that is being written
unless told to take the episodes complete now (``--live``). A live learner is the process whose
pid status.json names, if it still runs a vlaloop learner.

An export trusts nothing it reads: an unreadable meta.json, a step log shorter than its meta.json
says (a damaged log), a missing or undecodable frame, a state or action of the wrong length is
a StoreCorrupt naming the episode and the file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from episodes.store import META, Episode, EpisodeStore
from interface.action import ACTION_DIM, STATE_DIM
from protocol.codec import CodecError

FILTERS = ("demos", "success", "all")


class StoreBusy(RuntimeError):
    """A learner is running on the run dir: it writes the store."""


class StoreCorrupt(RuntimeError):
    """A stored episode cannot be read whole."""


def live_learner(run_dir: Path) -> int | None:
    """The pid of a vlaloop learner running on `run_dir` (named by its status.json), or None."""
    try:
        pid = int(json.loads((run_dir / "status.json").read_text()).get("pid"))
    except (FileNotFoundError, json.JSONDecodeError, TypeError, ValueError):
        return None
    if pid == os.getpid():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # someone else's process: alive
        return pid
    try:  # a recycled pid is not our learner
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return pid
    return pid if "learn" in cmdline else None


def refuse_if_live(run_dir: Path, doing: str, hint: str = "") -> None:
    pid = live_learner(run_dir)
    if pid is not None:
        raise StoreBusy(f"a learner (pid {pid}) is writing the store of {run_dir}; {doing} would race it. "
                        f"Stop the learner first{hint}.")


def episode_dirs(root: Path) -> tuple[list[Path], list[Path]]:
    """(complete episode dirs, incomplete ones), each sorted by robot and episode id."""
    complete, incomplete = [], []
    for robot_dir in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for ep_dir in sorted(p for p in robot_dir.iterdir() if p.is_dir()):
            (complete if (ep_dir / META).exists() else incomplete).append(ep_dir)
    return complete, incomplete


def read_meta(ep_dir: Path) -> dict:
    try:
        meta = json.loads((ep_dir / META).read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise StoreCorrupt(f"{ep_dir / META} is not valid JSON ({e}): the store is corrupt") from None
    if not isinstance(meta, dict):
        raise StoreCorrupt(f"{ep_dir / META} is not a JSON object: the store is corrupt")
    # the directory is where the episode is: what store.load needs, whatever meta.json says
    return {**meta, "robot_id": ep_dir.parent.name, "episode_id": ep_dir.name}


def selected(meta: dict, which: str) -> bool:
    """--filter: demos (expert demonstrations), success (any source labelled success), all."""
    if which == "demos":
        return meta.get("source") == "expert"
    if which == "success":
        return meta.get("outcome") == "success"
    return True


def load_checked(store: EpisodeStore, meta: dict) -> Episode:
    """The episode, with every step's state, action and frames checked readable."""
    ep = store.load(meta["robot_id"], meta["episode_id"])
    name = f"episode {meta['robot_id']}/{meta['episode_id']}"
    want = meta.get("n_stored_steps")
    if not ep.steps or (want is not None and len(ep.steps) != int(want)):
        raise StoreCorrupt(f"{name}: steps.log holds {len(ep.steps)} intact steps, meta.json says {want}: "
                           f"the log is damaged")
    cams = ep.cameras
    for step in ep.steps:
        if len(step.get("state") or ()) != STATE_DIM or len(step.get("action") or ()) != ACTION_DIM:
            raise StoreCorrupt(f"{name} step {step['step']}: state/action are not {STATE_DIM}/{ACTION_DIM} numbers")
        if sorted(step.get("frames", {})) != cams:
            raise StoreCorrupt(f"{name} step {step['step']}: cameras {sorted(step.get('frames', {}))}, "
                               f"the episode's first step has {cams}")
    return ep


def frame(ep: Episode, step: dict, camera: str) -> np.ndarray:
    try:
        return ep.frame(int(step["step"]), camera)
    except (OSError, CodecError) as e:
        raise StoreCorrupt(f"episode {ep.meta.get('robot_id')}/{ep.meta.get('episode_id')} step {step['step']} "
                           f"camera {camera}: frame unreadable ({e})") from None
