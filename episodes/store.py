"""Durable episode store (docs/architecture.md, "Learner").

Layout: ``<root>/<robot_id>/<episode_id>/``
  ``steps.log``   append-only records ``[u32 length][u32 crc32][msgpack step]``, fsynced per append
  ``frames/``     ``<step:05d>_<camera>.jpg`` — written and fsynced before the step record
  ``meta.json``   written last (temp + fsync + rename) when the episode ends; an episode without it
                  is incomplete and never trained on.

Crash safety: a record is only visible once its frames are durable; a torn tail record (crash
mid-append) fails its length/CRC check and is truncated away when the episode is reopened.
Duplicates (same robot, episode, step) are dropped, which makes at-least-once delivery exactly-once.
Demonstrations use the same format with ``source: "expert"``.

``EpisodeStore(root, durable=False)`` writes the same files in the same order without any fsync: for
simulated rollouts that can be regenerated (benches, tests), where the fsyncs cost more than the
simulation. The ingest, the teleop recorder and every store of robot data keep the default.
"""

from __future__ import annotations

import json
import os
import re
import struct
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from episodes.durable import fsync_dir as _fsync_dir
from episodes.durable import fsync_path as _fsync_path
from episodes.durable import write_json_atomic
from protocol.codec import CodecError, packb, unpackb
from protocol.images import decode_jpeg
from protocol.messages import ID_PATTERN

_ID = re.compile(ID_PATTERN)
_HEADER = struct.Struct("<II")
META = "meta.json"
STEPS = "steps.log"


def episode_key(meta: dict) -> str:
    """``robot_id/episode_id``: how the learner, its phase log and the demo report name an episode."""
    return f"{meta['robot_id']}/{meta['episode_id']}"


class StoreError(RuntimeError):
    pass


class RelabelRefused(StoreError):
    """A relabel that can never apply (a dry run), unlike one whose episode has not ended yet."""


def is_dry_run(meta: dict) -> bool:
    """An episode of ``vlaloop robot --dry-run``: the arm held instead of moving, so its actions
    were never executed. Never labelled, never trained on (older stores: only in ``extra``)."""
    extra = meta.get("extra") if isinstance(meta.get("extra"), dict) else {}
    return bool(meta.get("dry_run") or extra.get("dry_run"))



_POOL: ThreadPoolExecutor | None = None


def _fsync_pool() -> ThreadPoolExecutor:
    """Concurrent fsyncs let the filesystem batch them into one journal commit (group commit)."""
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max_workers=8, thread_name_prefix="fsync")
    return _POOL




def _append_durably(path: Path, data: bytes, sync: bool = True) -> None:
    """Append and fsync (unless not `sync`); on failure (disk full) cut the file back to where it was, so a torn record
    never sits in front of the records appended after the disk has room again."""
    with open(path, "ab", buffering=0) as f:  # unbuffered: nothing left to flush after a failure
        start = f.seek(0, os.SEEK_END)
        try:
            view = memoryview(data)
            while view:
                view = view[f.write(view):]
            if sync:
                os.fsync(f.fileno())
        except OSError:
            os.ftruncate(f.fileno(), start)
            raise


def _check_id(kind: str, value: str) -> str:
    if not isinstance(value, str) or not _ID.match(value):
        raise StoreError(f"invalid {kind} {value!r}: must match {ID_PATTERN}")
    return value


def _read_records(path: Path) -> tuple[list[dict], int]:
    """All intact records and the byte offset where the intact prefix ends."""
    records: list[dict] = []
    if not path.exists():
        return records, 0
    data = path.read_bytes()
    off = 0
    while off + _HEADER.size <= len(data):
        length, crc = _HEADER.unpack_from(data, off)
        body = data[off + _HEADER.size: off + _HEADER.size + length]
        if len(body) != length or zlib.crc32(body) != crc:
            break
        try:
            records.append(unpackb(body))
        except CodecError:
            break
        off += _HEADER.size + length
    return records, off


@dataclass
class Episode:
    root: Path
    meta: dict
    steps: list[dict] = field(default_factory=list)

    def frame_bytes(self, step: int, camera: str) -> bytes:
        return (self.root / "frames" / f"{step:05d}_{camera}.jpg").read_bytes()

    def frame(self, step: int, camera: str) -> np.ndarray:
        return decode_jpeg(self.frame_bytes(step, camera))

    @property
    def cameras(self) -> list[str]:
        return sorted(self.steps[0].get("frames", {})) if self.steps else []


class EpisodeStore:
    """Thread-safe for one writer process. Readers (trainers, the UI) may run in other processes:
    they only trust episodes whose meta.json exists."""

    def __init__(self, root: str | os.PathLike, durable: bool = True):
        self.root = Path(root)
        self.durable = durable  # False: no fsync anywhere (regenerable simulated data; module docstring)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._seen: dict[tuple[str, str], set[int]] = {}  # steps already durable, per open episode

    # ------------------------------------------------------------------ paths
    def episode_dir(self, robot_id: str, episode_id: str) -> Path:
        d = (self.root / _check_id("robot_id", robot_id) / _check_id("episode_id", episode_id)).resolve()
        if self.root.resolve() not in d.parents:
            raise StoreError(f"episode path {d} escapes the store")
        return d

    def is_complete(self, robot_id: str, episode_id: str) -> bool:
        return (self.episode_dir(robot_id, episode_id) / META).exists()

    # ------------------------------------------------------------------ writing
    def _steps_seen(self, key: tuple[str, str], d: Path) -> set[int]:
        seen = self._seen.get(key)
        if seen is None:
            records, good = _read_records(d / STEPS)
            log = d / STEPS
            if log.exists() and log.stat().st_size != good:  # torn tail from a crash: cut it off
                with open(log, "r+b") as f:
                    f.truncate(good)
                    self._fsync_file(f)
            seen = {int(r["step"]) for r in records}
            self._seen[key] = seen
        return seen

    def append_step(self, robot_id: str, episode_id: str, step: int, record: dict,
                    images: dict[str, bytes]) -> bool:
        """Make one step durable. Returns False (and writes nothing) for a duplicate or for a step
        of an episode that has already ended."""
        d = self.episode_dir(robot_id, episode_id)
        key = (robot_id, episode_id)
        with self._lock:
            if (d / META).exists():
                return False
            frames_dir = d / "frames"
            frames_dir.mkdir(parents=True, exist_ok=True)
            seen = self._steps_seen(key, d)
            if step in seen:
                return False
            names = {}
            for cam, jpg in images.items():
                _check_id("camera name", cam)
                name = f"{step:05d}_{cam}.jpg"
                with open(frames_dir / name, "wb") as f:
                    f.write(jpg)
                    f.flush()
                    self._fsync_file(f)
                names[cam] = f"frames/{name}"
            body = packb({**record, "step": int(step), "frames": names})
            _append_durably(d / STEPS, _HEADER.pack(len(body), zlib.crc32(body)) + body, self.durable)
            if not seen and self.durable:
                _fsync_dir(d)
                _fsync_dir(frames_dir)
            seen.add(step)
            return True

    def append_steps(self, items: list[tuple[str, str, int, dict, dict[str, bytes]]]) -> list[bool]:
        """Group commit of many steps ``(robot_id, episode_id, step, record, images)``: the same result
        as calling ``append_step`` on each in order, with the same crash guarantee (a record is written
        only after its frames are durable), but the frame files are fsynced concurrently and each
        episode's log once, so the filesystem commits its journal once per batch instead of per file.
        Raises StoreError (nothing of the batch is written) if any id or camera name is invalid."""
        with self._lock:
            plan = []  # (dir, key, step, record, images) of the steps to write
            new_in_batch: dict[tuple[str, str], set[int]] = {}
            result = []
            for robot_id, episode_id, step, record, images in items:
                d = self.episode_dir(robot_id, episode_id)
                for cam in images:
                    _check_id("camera name", cam)
                key = (robot_id, episode_id)
                batch_seen = new_in_batch.setdefault(key, set())
                fresh = not (d / META).exists()
                if fresh:
                    (d / "frames").mkdir(parents=True, exist_ok=True)
                    fresh = step not in self._steps_seen(key, d) and step not in batch_seen
                if fresh:
                    batch_seen.add(step)
                    plan.append((d, key, int(step), record, images))
                result.append(fresh)
            frames, dirs, bodies = [], set(), {}
            for d, key, step, record, images in plan:
                names = {}
                for cam, jpg in images.items():
                    path = d / "frames" / f"{step:05d}_{cam}.jpg"
                    path.write_bytes(jpg)
                    frames.append(path)
                    names[cam] = f"frames/{path.name}"
                if not self._seen[key]:  # first steps of an episode: make its dirs durable too
                    dirs.update({d, d / "frames", d.parent, self.root})
                body = packb({**record, "step": step, "frames": names})
                bodies.setdefault(d, []).append(_HEADER.pack(len(body), zlib.crc32(body)) + body)
            if self.durable:
                list(_fsync_pool().map(_fsync_path, frames))
            for d, chunks in bodies.items():
                _append_durably(d / STEPS, b"".join(chunks), self.durable)
                for pd, key, step, _, _ in plan:  # durable now: a failure below must not rewrite them
                    if pd == d:
                        self._seen[key].add(step)
            if self.durable:
                list(_fsync_pool().map(_fsync_dir, sorted(dirs)))
            return result

    def _fsync_file(self, f) -> None:
        if self.durable:
            os.fsync(f.fileno())

    def finish(self, robot_id: str, episode_id: str, meta: dict) -> bool:
        """Write meta.json last. Returns False if the episode had already ended (duplicate end)."""
        d = self.episode_dir(robot_id, episode_id)
        with self._lock:
            if (d / META).exists():
                return False
            d.mkdir(parents=True, exist_ok=True)
            records, _ = _read_records(d / STEPS)
            full = {
                "robot_id": robot_id, "episode_id": episode_id, "source": "online",
                "created": time.time(), **meta,
                "n_stored_steps": len({int(r["step"]) for r in records}),
                "finished": time.time(),
            }
            write_json_atomic(d / META, full, sync=self.durable)
            self._seen.pop((robot_id, episode_id), None)
            return True

    def relabel(self, robot_id: str, episode_id: str, outcome: str) -> dict:
        d = self.episode_dir(robot_id, episode_id)
        with self._lock:
            meta = self.read_meta(robot_id, episode_id)
            if meta is None:
                raise StoreError(f"episode {robot_id}/{episode_id} has not ended; nothing to relabel")
            if is_dry_run(meta):
                raise RelabelRefused(f"episode {robot_id}/{episode_id} is a dry run (the arm did not move): "
                                     "it cannot be labelled and is never trained on")
            meta.setdefault("original_outcome", meta.get("outcome"))
            meta.update(outcome=outcome, label_source="operator", relabeled=time.time())
            write_json_atomic(d / META, meta, sync=self.durable)
            return meta

    # ------------------------------------------------------------------ reading
    def read_meta(self, robot_id: str, episode_id: str) -> dict | None:
        p = self.episode_dir(robot_id, episode_id) / META
        try:
            return json.loads(p.read_text())
        except FileNotFoundError:
            return None

    def list_episodes(self, source: str | None = None, complete_only: bool = True) -> list[dict]:
        """Metadata of stored episodes, oldest first (by end time)."""
        out = []
        for robot_dir in sorted(p for p in self.root.iterdir() if p.is_dir()):
            for ep_dir in sorted(p for p in robot_dir.iterdir() if p.is_dir()):
                meta_path = ep_dir / META
                if meta_path.exists():
                    try:
                        meta = json.loads(meta_path.read_text())
                    except json.JSONDecodeError:
                        continue
                elif complete_only:
                    continue
                else:
                    meta = {"robot_id": robot_dir.name, "episode_id": ep_dir.name, "incomplete": True,
                            "finished": ep_dir.stat().st_mtime}
                if source is None or meta.get("source") == source:
                    out.append(meta)
        return sorted(out, key=lambda m: (m.get("finished", 0), m["robot_id"], m["episode_id"]))

    def load(self, robot_id: str, episode_id: str) -> Episode:
        d = self.episode_dir(robot_id, episode_id)
        records, _ = _read_records(d / STEPS)
        by_step = {int(r["step"]): r for r in records}
        meta = self.read_meta(robot_id, episode_id) or {"robot_id": robot_id, "episode_id": episode_id,
                                                         "incomplete": True}
        return Episode(root=d, meta=meta, steps=[by_step[k] for k in sorted(by_step)])
