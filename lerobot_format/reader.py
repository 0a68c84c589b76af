"""Reading a local LeRobot dataset, v3.0 (episodes share files) or v2.1 (a file per episode),
checking as it goes: every declared key present, one row per frame in order, timestamps at
``frame_index / fps``, every video frame there and at its time. Anything else is a FormatError
that names the file and what is wrong.

A dataset is untrusted input. Only files inside the dataset are read (paths resolved, symlinks
followed, so none leads out); info.json's path templates may use only their own fields with a
plain width (``{chunk_index:03d}``); each data file's row count (from its parquet footer) must be
what the episode table says before the file is read; embedded images and videos must have the
size their feature declares before a pixel is decoded.
"""

from __future__ import annotations

import io
import json
import re
import string
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
MAX_EPISODE_FRAMES = 1_000_000
MAX_IMAGE_SIDE = 4096  # a declared image or video feature larger than this is refused
TEMPLATE_SPEC = re.compile(r"^(0?\d{1,2}d)?$")  # {chunk_index}, {chunk_index:03d}, {episode_index:06d}


def inside(root: Path, relative: str, what: str) -> Path:
    """root/relative, refused unless it resolves (symlinks followed) to a place inside root."""
    if "\0" in relative:
        raise FormatError(f"{what} {relative[:80]!r} is not a path")
    path = (root / relative).resolve()
    if not path.is_relative_to(root.resolve()):
        raise FormatError(f"{what} {relative!r} points outside the dataset")
    return path


def dataset_path(root: Path, template: object, what: str, **values: int | str) -> Path:
    """A path from one of info.json's templates, with only `values`' fields and plain int widths."""
    if not isinstance(template, str) or len(template) > 512 or "\0" in template:
        raise FormatError(f"info.json {what} is not a path template")
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(template)
                  if name is not None]
    except ValueError as e:
        raise FormatError(f"info.json {what} {template[:80]!r} is not a path template ({e})") from None
    for name, spec, conv in fields:
        if name not in values or conv is not None or not TEMPLATE_SPEC.match(spec or ""):
            raise FormatError(f"info.json {what} {template[:80]!r}: a field must be one of {sorted(values)}, "
                              f"optionally with a width like :03d")
    return inside(root, template.format(**values), what)


def _index(row: dict, name: str) -> int:
    value = row.get(name)
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 0 <= int(value) < 10**9:
        raise FormatError(f"the episode table's {name} is {str(value)[:40]!r}, not a non-negative integer")
    return int(value)


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
        size = declared_size(self.features[key], key)
        if self.features[key]["dtype"] == "image":
            return np.stack([_decode_image(cell, key, ep, size) for cell in rows[key]])
        path, from_timestamp = ep.videos[key]
        return read_episode_frames(path, from_timestamp, ep.length, self.fps, size)

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
            expected = sum(ep.length for ep in self.episodes if ep.data_path == path)
            try:
                rows = pq.ParquetFile(path).metadata.num_rows  # the footer only: nothing is loaded yet
            except Exception as e:  # pyarrow raises several types for a damaged file
                raise FormatError(f"data file {path} cannot be read: {e}") from None
            if rows != expected:
                raise FormatError(f"data file {path} has {rows} rows, the episode table puts {expected} in it")
            try:
                self._table_cache = (path, pq.read_table(path))
            except Exception as e:  # pyarrow raises several types for a damaged file
                raise FormatError(f"data file {path} cannot be read: {e}") from None
        return self._table_cache[1]

    # ------------------------------------------------------------------ layouts
    def _v3_ref(self, row: dict) -> EpisodeRef:
        data = dataset_path(self.root, self.info.get("data_path"), "data_path",
                            chunk_index=_index(row, "data/chunk_index"), file_index=_index(row, "data/file_index"))
        videos = {}
        for key, ft in self.features.items():
            if ft.get("dtype") != "video":
                continue
            need = [f"videos/{key}/chunk_index", f"videos/{key}/file_index", f"videos/{key}/from_timestamp"]
            if any(n not in row for n in need):
                raise FormatError(f"the episode table lacks {need} for video key {key}")
            path = dataset_path(self.root, self.info.get("video_path"), "video_path", video_key=key,
                                chunk_index=_index(row, need[0]), file_index=_index(row, need[1]))
            start = row[need[2]]
            if isinstance(start, bool) or not isinstance(start, (int, float)) or not 0 <= start < 1e7:
                raise FormatError(f"the episode table's {need[2]} is {str(start)[:40]!r}, not a time in seconds")
            videos[key] = (path, float(start))
        return EpisodeRef(index=_index(row, "episode_index"), length=_length(row), data_path=data, videos=videos,
                          row=row)

    def _v21_meta(self) -> tuple[dict[int, str], list[dict]]:
        tasks = {int(r["task_index"]): str(r["task"]) for r in _jsonl(self.root / layout.LEGACY_TASKS_PATH)}
        return tasks, sorted(_jsonl(self.root / layout.LEGACY_EPISODES_PATH), key=lambda r: r["episode_index"])

    def _v21_ref(self, row: dict) -> EpisodeRef:
        index = _index(row, "episode_index")
        chunks_size = self.info.get("chunks_size", layout.CHUNKS_SIZE)
        if isinstance(chunks_size, bool) or not isinstance(chunks_size, int) or chunks_size < 1:
            raise FormatError(f"info.json chunks_size {str(chunks_size)[:40]!r} is not a positive integer")
        chunk = index // chunks_size
        data = dataset_path(self.root, self.info.get("data_path"), "data_path", episode_chunk=chunk,
                            episode_index=index)
        videos = {key: (dataset_path(self.root, self.info.get("video_path"), "video_path", episode_chunk=chunk,
                                     video_key=key, episode_index=index), 0.0)
                  for key, ft in self.features.items() if ft.get("dtype") == "video"}
        return EpisodeRef(index=index, length=_length(row), data_path=data, videos=videos, row=row)


def _length(row: dict) -> int:
    length = row.get("length")
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or not 1 <= length <= MAX_EPISODE_FRAMES:
        raise FormatError(f"episode {row.get('episode_index')}: length {str(length)[:40]!r} is not 1..{MAX_EPISODE_FRAMES}")
    return int(length)


def declared_size(feature: dict, key: str) -> tuple[int, int]:
    """(height, width) an image/video feature declares ([H, W, 3] or [3, H, W]), within MAX_IMAGE_SIDE."""
    shape = feature.get("shape")
    if not (isinstance(shape, list) and len(shape) == 3 and all(isinstance(n, int) and n > 0 for n in shape)):
        raise FormatError(f"feature {key}: shape {str(shape)[:60]} is not [height, width, 3]")
    h, w = (shape[1], shape[2]) if shape[0] == 3 and shape[2] != 3 else (shape[0], shape[1])
    if max(h, w) > MAX_IMAGE_SIDE:
        raise FormatError(f"feature {key}: declared {w}x{h} exceeds {MAX_IMAGE_SIDE} px a side")
    return h, w


def _numpy(column, name: str, ep: EpisodeRef) -> np.ndarray:
    values = column.to_pylist()
    if any(v is None for v in values):
        raise FormatError(f"episode {ep.index}: column {name} has empty cells in {ep.data_path.name}")
    return np.asarray(values)


def _decode_image(cell, key: str, ep: EpisodeRef, size: tuple[int, int]) -> np.ndarray:
    """An embedded image, its size checked against the feature's declared `size` from the header."""
    data = cell.get("bytes") if isinstance(cell, dict) else None
    if not data:
        raise FormatError(f"episode {ep.index}: {key} holds no embedded image bytes")
    try:
        with Image.open(io.BytesIO(data)) as img:
            if (img.height, img.width) != size:
                raise FormatError(f"episode {ep.index}: a {key} image is {img.width}x{img.height}, the feature "
                                  f"declares {size[1]}x{size[0]}")
            return np.asarray(img.convert("RGB"))
    except FormatError:
        raise
    except Exception as e:  # noqa: BLE001 - PIL raises many types (and DecompressionBombError) on hostile bytes
        raise FormatError(f"episode {ep.index}: a {key} image cannot be decoded ({type(e).__name__})") from None


def _jsonl(path: Path) -> list[dict]:
    if not path.exists():
        raise FormatError(f"{path} is missing (a v2.1 dataset lists its episodes and tasks there)")
    try:
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except (ValueError, RecursionError) as e:
        raise FormatError(f"{path}: not JSON lines ({str(e)[:80]})") from None
    if not all(isinstance(r, dict) for r in rows):
        raise FormatError(f"{path}: every line must be a JSON object")
    return rows
