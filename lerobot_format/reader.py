"""Reading a local LeRobot dataset, v3.0 (episodes share files) or v2.1 (a file per episode),
checking as it goes: every declared key present, one row per frame in order, timestamps at
``frame_index / fps``, every video frame there and at its time. Anything else is a FormatError
that names the file and what is wrong.
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
from PIL import Image

from lerobot_format import layout
from lerobot_format.layout import FormatError
from lerobot_format.video import read_episode_frames

TIMESTAMP_TOLERANCE_S = 1e-4  # LeRobot's default tolerance between a timestamp and frame_index / fps


@dataclass
class EpisodeRef:
    """Where one episode's rows and frames are."""

    index: int
    length: int
    data_path: Path
    videos: dict[str, tuple[Path, float]] = field(default_factory=dict)  # key -> (file, from_timestamp)
    row: dict = field(default_factory=dict)  # its row of the episode table (extra columns included)


class LeRobotReader:
    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.info = layout.read_info(self.root)
        self.version = str(self.info["codebase_version"])
        self.fps = int(self.info["fps"])
        self.features: dict[str, dict] = self.info["features"]
        if self.version.startswith("v3"):
            self.tasks = layout.read_tasks(self.root / layout.TASKS_PATH)
            self.episode_rows = layout.read_episodes(self.root)
            self.episodes = [self._v3_ref(r) for r in self.episode_rows]
        elif self.version == "v2.1":
            self.tasks, self.episode_rows = self._v21_meta()
            self.episodes = [self._v21_ref(r) for r in self.episode_rows]
        else:
            raise FormatError(f"{self.root}: codebase_version {self.version} is not supported (v3.0 or v2.1)")
        self._table_cache: tuple[Path, object] | None = None

    # ------------------------------------------------------------------ per episode
    def rows(self, ep: EpisodeRef, columns: list[str]) -> dict[str, np.ndarray]:
        """The episode's rows of `columns` (plus frame_index and timestamp), checked."""
        table = self._table(ep.data_path)
        wanted = list(dict.fromkeys([*columns, "episode_index", "frame_index", "timestamp"]))
        missing = [c for c in wanted if c not in table.column_names]
        if missing:
            raise FormatError(f"{ep.data_path} lacks column(s) {missing} (it has {table.column_names})")
        rows = table.filter(pc.equal(table.column("episode_index"), ep.index)).select(wanted)
        if rows.num_rows != ep.length:
            raise FormatError(f"episode {ep.index}: {rows.num_rows} rows in {ep.data_path.name}, the episode table "
                              f"says {ep.length}")
        out = {c: _numpy(rows.column(c), c, ep) for c in wanted if self.features.get(c, {}).get("dtype") != "image"}
        out.update({c: rows.column(c).to_pylist() for c in wanted if self.features.get(c, {}).get("dtype") == "image"})
        self._check_times(ep, out["frame_index"], out["timestamp"])
        return out

    def images(self, ep: EpisodeRef, key: str, rows: dict | None = None) -> np.ndarray:
        """[length, H, W, 3] uint8 frames of an image key (video, or images stored in the rows)."""
        if self.features[key]["dtype"] == "image":
            return np.stack([_decode_image(cell, key, ep) for cell in rows[key]])
        path, from_timestamp = ep.videos[key]
        return read_episode_frames(path, from_timestamp, ep.length, self.fps)

    def task(self, task_index: int) -> str:
        if task_index not in self.tasks:
            raise FormatError(f"task_index {task_index} is not in the task table ({len(self.tasks)} tasks)")
        return self.tasks[task_index]

    def _check_times(self, ep: EpisodeRef, frame_index: np.ndarray, timestamp: np.ndarray) -> None:
        if not np.array_equal(frame_index.reshape(-1), np.arange(ep.length)):
            raise FormatError(f"episode {ep.index}: frame_index is not 0..{ep.length - 1} in order")
        expected = np.arange(ep.length) / self.fps
        off = np.abs(timestamp.reshape(-1).astype(np.float64) - expected)
        if off.max(initial=0.0) > TIMESTAMP_TOLERANCE_S + 1e-6 * expected.max(initial=0.0):
            k = int(off.argmax())
            step = float(np.median(np.diff(timestamp.reshape(-1)))) if ep.length > 1 else float("nan")
            raise FormatError(f"episode {ep.index}: frame {k} has timestamp {float(timestamp.reshape(-1)[k]):.4f} s, "
                              f"fps {self.fps} puts it at {expected[k]:.4f} s (the timestamps advance {step:.4f} s "
                              f"a frame): info.json's fps is wrong for this data")

    def _table(self, path: Path):
        if self._table_cache is None or self._table_cache[0] != path:
            if not path.exists():
                raise FormatError(f"data file {path} is missing")
            try:
                self._table_cache = (path, pq.read_table(path))
            except Exception as e:  # pyarrow raises several types for a damaged file
                raise FormatError(f"data file {path} cannot be read: {e}") from None
        return self._table_cache[1]

    # ------------------------------------------------------------------ layouts
    def _v3_ref(self, row: dict) -> EpisodeRef:
        data = self.root / self.info["data_path"].format(chunk_index=row["data/chunk_index"],
                                                          file_index=row["data/file_index"])
        videos = {}
        for key, ft in self.features.items():
            if ft.get("dtype") != "video":
                continue
            need = [f"videos/{key}/chunk_index", f"videos/{key}/file_index", f"videos/{key}/from_timestamp"]
            if any(n not in row for n in need):
                raise FormatError(f"the episode table lacks {need} for video key {key}")
            path = self.root / self.info["video_path"].format(video_key=key, chunk_index=row[need[0]],
                                                               file_index=row[need[1]])
            videos[key] = (path, float(row[need[2]]))
        return EpisodeRef(index=int(row["episode_index"]), length=int(row["length"]), data_path=data, videos=videos,
                          row=row)

    def _v21_meta(self) -> tuple[dict[int, str], list[dict]]:
        tasks = {int(r["task_index"]): str(r["task"]) for r in _jsonl(self.root / layout.LEGACY_TASKS_PATH)}
        return tasks, sorted(_jsonl(self.root / layout.LEGACY_EPISODES_PATH), key=lambda r: r["episode_index"])

    def _v21_ref(self, row: dict) -> EpisodeRef:
        index = int(row["episode_index"])
        chunk = index // int(self.info.get("chunks_size", layout.CHUNKS_SIZE))
        data = self.root / self.info["data_path"].format(episode_chunk=chunk, episode_index=index)
        videos = {key: (self.root / self.info["video_path"].format(episode_chunk=chunk, video_key=key,
                                                                    episode_index=index), 0.0)
                  for key, ft in self.features.items() if ft.get("dtype") == "video"}
        return EpisodeRef(index=index, length=int(row["length"]), data_path=data, videos=videos, row=row)


def _numpy(column, name: str, ep: EpisodeRef) -> np.ndarray:
    values = column.to_pylist()
    if any(v is None for v in values):
        raise FormatError(f"episode {ep.index}: column {name} has empty cells in {ep.data_path.name}")
    return np.asarray(values)


def _decode_image(cell, key: str, ep: EpisodeRef) -> np.ndarray:
    data = cell.get("bytes") if isinstance(cell, dict) else None
    if not data:
        raise FormatError(f"episode {ep.index}: {key} holds no embedded image bytes")
    with Image.open(io.BytesIO(data)) as img:
        return np.asarray(img.convert("RGB"))


def _jsonl(path: Path) -> list[dict]:
    if not path.exists():
        raise FormatError(f"{path} is missing (a v2.1 dataset lists its episodes and tasks there)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
