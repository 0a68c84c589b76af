"""``vlaloop export --format lerobot RUN_DIR OUT_DIR [--filter demos|success|all]``: the episode
store of a run as one LeRobot dataset (v3.0), for LeRobot, SmolVLA or openpi training pipelines.

Each stored step becomes a frame: ``observation.state`` (x y z roll pitch yaw gripper),
``action`` (the executed action, docs/action_convention.md), ``observation.images.<camera>`` as
video, the instruction as the task; the label, its source, the intervention flag and the policy
version ride along (docs/lerobot.md maps every field). Only complete episodes (meta.json written)
are exported. Everything is written into a hidden directory beside OUT_DIR, renamed to OUT_DIR at
the very end: a failed export leaves nothing behind.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from episodes.store import Episode, EpisodeStore
from lerobot_format import layout, stats
from lerobot_format.layout import FormatError
from lerobot_format.run_dir import (
    FILTERS,
    StoreBusy,
    StoreCorrupt,
    episode_dirs,
    frame,
    load_checked,
    read_meta,
    refuse_if_live,
    selected,
)
from lerobot_format.video import CODECS, PIX_FMTS, CameraVideos, video_info

MB = 1024 * 1024


@dataclass
class ExportConfig:
    """How a store becomes a dataset."""

    filter: str = "all"
    """which complete episodes: demos (source expert), success (labelled success), all"""
    fps: int = 10
    """frames per second: the robot's control rate (robot.rate_hz); one stored step is one frame"""
    vcodec: str = "libsvtav1"
    """video codec: libsvtav1 (AV1, LeRobot's default), h264 or hevc"""
    crf: int = 30
    """constant-quality factor of the video (lower: closer to the frames, bigger files; LeRobot uses 30)"""
    pix_fmt: str = "yuv420p"
    """yuv420p (LeRobot's default, colour at half resolution) or yuv444p (full-resolution colour)"""
    live: bool = False
    """export the episodes complete now although a learner is writing the store"""
    data_file_mb: float = layout.DATA_FILE_SIZE_MB
    """a data parquet file is closed past this size (LeRobot: 100 MB; 0: a file per episode)"""
    video_file_mb: float = layout.VIDEO_FILE_SIZE_MB
    """a video file is closed past this size (LeRobot: 200 MB; 0: a file per episode). The size counted
    is what the encoder has emitted; it holds back a few dozen frames (lookahead), so a file can end
    that much past the limit"""
    robot_type: str | None = None
    """info.json's robot_type; default vlaloop-<backend> of the episodes"""
    progress: bool = True
    """show a progress bar"""


class ExportError(RuntimeError):
    pass


def export_run(run_dir: str | os.PathLike, out_dir: str | os.PathLike, cfg: ExportConfig) -> dict:
    """Write the dataset; returns a summary (episodes, frames, tasks, seconds, out_dir)."""
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    metas = _select(run_dir, out_dir, cfg)
    tmp = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    t0 = time.time()
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    writer = DatasetWriter(tmp, cfg)
    try:
        store = EpisodeStore(run_dir / "episodes")
        for meta in tqdm(metas, desc="export", unit="ep", disable=not cfg.progress):
            writer.add_episode(load_checked(store, meta))
        summary = writer.finish()
        os.rename(tmp, out_dir)
    except BaseException:
        writer.close_files()
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {**summary, "seconds": time.time() - t0, "out_dir": str(out_dir)}


def _select(run_dir: Path, out_dir: Path, cfg: ExportConfig) -> list[dict]:
    if cfg.filter not in FILTERS:
        raise ExportError(f"--filter must be one of {FILTERS}, not {cfg.filter!r}")
    root = run_dir / "episodes"
    if not root.is_dir():
        raise ExportError(f"{run_dir} has no episode store ({root} does not exist)")
    if out_dir.exists():
        raise ExportError(f"{out_dir} exists: an export never overwrites; name a new directory")
    if not cfg.live:
        refuse_if_live(run_dir, "an export", " or pass --live to export the episodes complete now")
    complete, incomplete = episode_dirs(root)
    metas = [m for m in (read_meta(d) for d in complete) if selected(m, cfg.filter)]
    # the store's own order (EpisodeStore.list_episodes: by end time), so an import lists them alike
    metas.sort(key=lambda m: (m.get("finished", 0), m.get("robot_id", ""), m.get("episode_id", "")))
    if incomplete:
        print(f"vlaloop export: {len(incomplete)} episode(s) without meta.json (still being recorded, or "
              f"cut off by a crash) are left out", file=sys.stderr)
    if not metas:
        raise ExportError(f"no episode in {root} matches --filter {cfg.filter} "
                          f"({len(complete)} complete episode(s) in the store)")
    return metas


class DatasetWriter:
    """Appends episodes to a dataset directory: rows to data parquet files, frames to one video per
    camera; the meta/ files are written by finish()."""

    def __init__(self, root: Path, cfg: ExportConfig):
        self.root, self.cfg = root, cfg
        self.cameras: list[str] | None = None
        self.features: dict | None = None
        self.videos: dict[str, CameraVideos] = {}
        self.tasks: dict[str, int] = {}
        self.episode_rows: list[dict] = []
        self.episode_stats: list[dict] = []
        self.columns: dict[str, list[np.ndarray]] = {}
        self.n_frames = 0
        self.backends: set[str] = set()
        self._data: pq.ParquetWriter | None = None
        self._data_files = 0
        self._data_bytes = 0

    # ---------------------------------------------------------------- episodes
    def add_episode(self, ep: Episode) -> None:
        if self.cameras is None:
            self._start(ep)
        if ep.cameras != self.cameras:
            raise ExportError(f"episode {ep.meta['robot_id']}/{ep.meta['episode_id']} has cameras {ep.cameras}, "
                              f"the first exported one {self.cameras}: a dataset has one set of cameras")
        index = len(self.episode_rows)
        columns = self._frame_columns(ep, index)
        task_of = {i: task for task, i in self.tasks.items()}
        row = {"episode_index": index, "length": len(ep.steps),
               "tasks": [task_of[i] for i in sorted(set(columns["task_index"].tolist()))],
               **self._write_rows(columns)}
        ep_stats = {key: stats.vector_stats(v) for key, v in columns.items()}
        for cam in self.cameras:
            row.update(self._write_video(ep, cam))
            images = np.stack([frame(ep, ep.steps[i], cam) for i in stats.sample_indices(len(ep.steps))])
            ep_stats[layout.IMAGE_PREFIX + cam] = stats.image_stats(images)
        row.update({f"stats/{key}/{name}": value.tolist() for key, s in ep_stats.items() for name, value in s.items()})
        row.update({"meta/episodes/chunk_index": 0, "meta/episodes/file_index": 0, **_extras(ep.meta)})
        self.episode_rows.append(row)
        self.episode_stats.append(ep_stats)
        for key, values in columns.items():
            self.columns.setdefault(key, []).append(values)
        self.n_frames += len(ep.steps)
        self.backends.add(str(ep.meta.get("backend", "")))

    def _start(self, ep: Episode) -> None:
        self.cameras = ep.cameras
        if not self.cameras:
            raise ExportError(f"episode {ep.meta['robot_id']}/{ep.meta['episode_id']} has no camera frames")
        sizes = {cam: frame(ep, ep.steps[0], cam).shape[:2] for cam in self.cameras}  # cameras may differ
        self.features = layout.vlaloop_features(sizes)
        for cam, (h, w) in sizes.items():
            self.videos[cam] = CameraVideos(self.root, layout.IMAGE_PREFIX + cam, self.cfg.fps, h, w, self.cfg.vcodec,
                                            self.cfg.crf, self.cfg.pix_fmt, int(self.cfg.video_file_mb * MB))

    def _frame_columns(self, ep: Episode, episode_index: int) -> dict[str, np.ndarray]:
        steps, meta, n = ep.steps, ep.meta, len(ep.steps)
        instruction = str(meta.get("instruction") or "")
        task_index = [self.tasks.setdefault(str(s.get("instruction") or instruction), len(self.tasks)) for s in steps]
        frame_index = np.arange(n, dtype=np.int64)
        done = np.zeros(n, bool)
        done[-1] = True
        return {
            layout.STATE_KEY: np.asarray([s["state"] for s in steps], np.float32),
            layout.ACTION_KEY: np.asarray([s["action"] for s in steps], np.float32),
            "next.reward": done.astype(np.float32) * float(meta.get("outcome") == "success"),
            "next.done": done,
            "vlaloop.intervention": np.asarray([bool(s.get("intervention")) for s in steps]),
            "vlaloop.policy_version": np.asarray([_int(s.get("policy_version"), -1) for s in steps], np.int64),
            "vlaloop.step": np.asarray([int(s["step"]) for s in steps], np.int64),
            "vlaloop.t_capture": np.asarray([_float(s.get("t_capture")) for s in steps], np.float64),
            "timestamp": (frame_index / self.cfg.fps).astype(np.float32),
            "frame_index": frame_index,
            "episode_index": np.full(n, episode_index, np.int64),
            "index": np.arange(self.n_frames, self.n_frames + n, dtype=np.int64),
            "task_index": np.asarray(task_index, np.int64),
        }

    def _write_rows(self, columns: dict[str, np.ndarray]) -> dict:
        schema = layout.data_schema(self.features)
        arrays = [_arrow_column(columns[f.name], f.type) for f in schema]
        table = pa.Table.from_arrays(arrays, schema=schema)
        if self._data is not None and self._data_bytes >= self.cfg.data_file_mb * MB:
            self._data.close()
            self._data = None
        if self._data is None:
            path = self.root / layout.DATA_PATH.format(**layout.chunk_and_file(self._data_files))
            path.parent.mkdir(parents=True, exist_ok=True)
            self._data = pq.ParquetWriter(path, schema, compression="snappy")
            self._data_files += 1
            self._data_bytes = 0
        self._data.write_table(table)
        self._data_bytes += table.nbytes
        where = layout.chunk_and_file(self._data_files - 1)
        return {"data/chunk_index": where["chunk_index"], "data/file_index": where["file_index"],
                "dataset_from_index": self.n_frames, "dataset_to_index": self.n_frames + len(table)}

    def _write_video(self, ep: Episode, cam: str) -> dict:
        video = self.videos[cam]
        where = video.start_episode()
        for step in ep.steps:
            video.add(frame(ep, step, cam))
        return {**where, **video.end_episode()}

    # ---------------------------------------------------------------- meta/
    def close_files(self) -> None:
        """Finish the open video and parquet files (also on the way out of a failed export)."""
        for video in self.videos.values():
            video.close()
        if self._data is not None:
            self._data.close()
            self._data = None

    def finish(self) -> dict:
        self.close_files()
        for cam in self.cameras:
            first = self.root / layout.VIDEO_PATH.format(video_key=layout.IMAGE_PREFIX + cam, **layout.chunk_and_file(0))
            self.features[layout.IMAGE_PREFIX + cam]["info"] = video_info(first)
        episodes_path = self.root / layout.EPISODES_PATH.format(**layout.chunk_and_file(0))
        episodes_path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.Table.from_pylist(self.episode_rows), episodes_path, compression="snappy")
        layout.write_tasks(self.root / layout.TASKS_PATH, sorted(self.tasks, key=self.tasks.get))
        layout.write_json(self.root / layout.STATS_PATH, stats.as_json(self._dataset_stats()))
        info = layout.info_json(self.cfg.fps, self.features, len(self.episode_rows), self.n_frames, len(self.tasks),
                                self.cfg.robot_type or _robot_type(self.backends))
        info["data_files_size_in_mb"] = max(1, math.ceil(self.cfg.data_file_mb))  # LeRobot wants whole MB
        info["video_files_size_in_mb"] = max(1, math.ceil(self.cfg.video_file_mb))
        layout.write_json(self.root / layout.INFO_PATH, info)
        return {"episodes": len(self.episode_rows), "frames": self.n_frames, "tasks": len(self.tasks),
                "cameras": list(self.cameras)}

    def _dataset_stats(self) -> dict:
        out = {key: stats.vector_stats(np.concatenate(parts)) for key, parts in self.columns.items()}
        for cam in self.cameras:
            key = layout.IMAGE_PREFIX + cam
            out[key] = stats.aggregate([s[key] for s in self.episode_stats])
        return out


def _arrow_column(values: np.ndarray, typ: pa.DataType) -> pa.Array:
    if pa.types.is_fixed_size_list(typ):
        flat = pa.array(np.ascontiguousarray(values).reshape(-1), typ.value_type)
        return pa.FixedSizeListArray.from_arrays(flat, typ.list_size)
    return pa.array(values, typ)


def _extras(meta: dict) -> dict:
    return {"vlaloop/robot_id": str(meta.get("robot_id")), "vlaloop/episode_id": str(meta.get("episode_id")),
            "vlaloop/source": str(meta.get("source", "online")), "vlaloop/outcome": str(meta.get("outcome")),
            "vlaloop/label_source": str(meta.get("label_source")),
            "vlaloop/meta": json.dumps(meta, sort_keys=True, default=str)}


def _robot_type(backends: set[str]) -> str:
    names = sorted(b for b in backends if b)
    return "vlaloop-" + "+".join(names) if names else "vlaloop"


def _int(value, default: int) -> int:
    return default if value is None else int(value)


def _float(value) -> float:
    return float("nan") if value is None else float(value)


# ---------------------------------------------------------------------- command line
def configure(parser: argparse.ArgumentParser) -> None:
    d = ExportConfig()
    parser.add_argument("--format", choices=["lerobot"], default="lerobot", help="dataset format (LeRobot v3.0)")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the run whose episodes/ store is exported")
    parser.add_argument("out_dir", metavar="OUT_DIR", help="the dataset directory to create (must not exist)")
    parser.add_argument("--filter", choices=FILTERS, default=d.filter,
                        help="demos: expert demonstrations; success: episodes labelled success; all (default)")
    parser.add_argument("--fps", type=int, default=None, help="frames per second (default: robot.rate_hz)")
    parser.add_argument("--vcodec", choices=CODECS, default=d.vcodec, help="video codec (default: LeRobot's AV1)")
    parser.add_argument("--crf", type=int, default=d.crf, help="video quality, lower is closer (default 30)")
    parser.add_argument("--pix-fmt", choices=PIX_FMTS, default=d.pix_fmt, help="video colour sampling")
    parser.add_argument("--live", action="store_true",
                        help="export the complete episodes although a learner is writing the store")
    parser.add_argument("--robot-type", default=None, help="info.json robot_type (default vlaloop-<backend>)")


def run(args: argparse.Namespace, config) -> int:
    fps = args.fps
    if fps is None:
        rate = float(config.robot.rate_hz)
        if rate != int(rate):
            print(f"vlaloop export: robot.rate_hz {rate} is not a whole number; LeRobot's fps is: pass --fps",
                  file=sys.stderr)
            return 2
        fps = int(rate)
    cfg = ExportConfig(filter=args.filter, fps=fps, vcodec=args.vcodec, crf=args.crf, pix_fmt=args.pix_fmt,
                       live=args.live, robot_type=args.robot_type, progress=sys.stderr.isatty())
    try:
        summary = export_run(args.run_dir, args.out_dir, cfg)
    except (ExportError, StoreBusy, StoreCorrupt, FormatError) as e:
        print(f"vlaloop export: {e}", file=sys.stderr)
        return 2
    print(f"exported {summary['episodes']} episodes ({summary['frames']} frames, {summary['tasks']} tasks, "
          f"cameras {', '.join(summary['cameras'])}) to {summary['out_dir']} in {summary['seconds']:.1f} s")
    return 0
