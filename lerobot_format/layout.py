"""LeRobot's dataset layout, version 3.0, as LeRobot's own reader (lerobot.datasets) expects it.

    meta/info.json                                   fps, features, counts, path templates
    meta/stats.json                                  per-feature min, max, mean, std, count, q01..q99
    meta/tasks.parquet                               task strings (pandas index) -> task_index
    meta/episodes/chunk-000/file-000.parquet         one row per episode: length, tasks, where its rows
                                                     and video frames are, its own stats
    data/chunk-000/file-000.parquet                  one row per frame, episodes one after another
    videos/<image key>/chunk-000/file-000.mp4        one video per camera, episodes one after another

A file holds many episodes; a new file starts when one grows past its size limit, and a new
chunk directory every CHUNKS_SIZE files. An episode's frames in a video are found by time:
``from_timestamp + frame_index / fps``.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

CODEBASE_VERSION = "v3.0"
CHUNKS_SIZE = 1000  # files per chunk directory
DATA_FILE_SIZE_MB = 100  # a data parquet file is closed past this size
VIDEO_FILE_SIZE_MB = 200  # a video file is closed past this size

INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
EPISODES_DIR = "meta/episodes"
CHUNK_FILE = "chunk-{chunk_index:03d}/file-{file_index:03d}"
EPISODES_PATH = f"{EPISODES_DIR}/{CHUNK_FILE}.parquet"
DATA_PATH = f"data/{CHUNK_FILE}.parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE + ".mp4"

# v2.1, read by the importer: a data file and a video per episode, episodes and tasks as JSON lines
LEGACY_EPISODES_PATH = "meta/episodes.jsonl"
LEGACY_TASKS_PATH = "meta/tasks.jsonl"

IMAGE_PREFIX = "observation.images."
STATE_KEY = "observation.state"
ACTION_KEY = "action"
# vlaloop's state and action, in order (interface/action.py, docs/action_convention.md)
STATE_NAMES = ["x", "y", "z", "roll", "pitch", "yaw", "gripper"]
ACTION_NAMES = ["dx", "dy", "dz", "wx", "wy", "wz", "gripper"]

# the columns every LeRobot dataset has
DEFAULT_FEATURES = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
# vlaloop's per-frame extras: a sparse reward and done (what LeRobot's RL recordings carry), and
# what the store knows about each step
EXTRA_FEATURES = {
    "next.reward": {"dtype": "float32", "shape": [1], "names": None},
    "next.done": {"dtype": "bool", "shape": [1], "names": None},
    "vlaloop.intervention": {"dtype": "bool", "shape": [1], "names": None},
    "vlaloop.policy_version": {"dtype": "int64", "shape": [1], "names": None},
    "vlaloop.step": {"dtype": "int64", "shape": [1], "names": None},
    "vlaloop.t_capture": {"dtype": "float64", "shape": [1], "names": None},
}
# vlaloop's per-episode extras: columns of meta/episodes (the label and where the episode came from)
EPISODE_EXTRAS = ("vlaloop/robot_id", "vlaloop/episode_id", "vlaloop/source", "vlaloop/outcome",
                  "vlaloop/label_source", "vlaloop/meta")

_SCALARS = {"float32": pa.float32(), "float64": pa.float64(), "int64": pa.int64(), "int32": pa.int32(),
            "bool": pa.bool_(), "string": pa.string()}


class FormatError(ValueError):
    """The dataset on disk is not what the format says (a missing key, a wrong fps, a bad file)."""


def chunk_and_file(n: int) -> dict[str, int]:
    """The n-th file of a kind (0, 1, ...) -> its chunk and file index."""
    return {"chunk_index": n // CHUNKS_SIZE, "file_index": n % CHUNKS_SIZE}


def vlaloop_features(camera_sizes: dict[str, tuple[int, int]]) -> dict[str, dict]:
    """The features of an exported store, in info.json's form (video info added after encoding);
    `camera_sizes`: each camera's (height, width)."""
    features: dict[str, dict] = {
        STATE_KEY: {"dtype": "float32", "shape": [len(STATE_NAMES)], "names": list(STATE_NAMES)},
        ACTION_KEY: {"dtype": "float32", "shape": [len(ACTION_NAMES)], "names": list(ACTION_NAMES)},
    }
    for cam, (height, width) in camera_sizes.items():
        features[IMAGE_PREFIX + cam] = {"dtype": "video", "shape": [height, width, 3],
                                        "names": ["height", "width", "channels"]}
    return {**features, **EXTRA_FEATURES, **DEFAULT_FEATURES}


def arrow_type(feature: dict) -> pa.DataType:
    """A non-video feature's column type, as Hugging Face `datasets` stores it: a scalar for shape
    [1], a fixed-size list for a vector."""
    scalar = _SCALARS[feature["dtype"]]
    shape = list(feature["shape"])
    if shape == [1]:
        return scalar
    if len(shape) == 1:
        return pa.list_(scalar, shape[0])
    raise FormatError(f"feature shape {shape} is not supported (scalars and vectors only)")


def data_schema(features: dict[str, dict]) -> pa.Schema:
    return pa.schema([(key, arrow_type(ft)) for key, ft in features.items() if ft["dtype"] not in ("video", "image")])


def info_json(fps: int, features: dict, total_episodes: int, total_frames: int, total_tasks: int,
              robot_type: str | None) -> dict:
    return {
        "codebase_version": CODEBASE_VERSION, "robot_type": robot_type,
        "total_episodes": total_episodes, "total_frames": total_frames, "total_tasks": total_tasks,
        "chunks_size": CHUNKS_SIZE, "data_files_size_in_mb": DATA_FILE_SIZE_MB,
        "video_files_size_in_mb": VIDEO_FILE_SIZE_MB, "fps": fps,
        "splits": {"train": f"0:{total_episodes}"}, "data_path": DATA_PATH,
        "video_path": VIDEO_PATH if any(f["dtype"] == "video" for f in features.values()) else None,
        "features": features,
    }


def write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=4))


def read_info(root: Path) -> dict:
    path = root / INFO_PATH
    if not path.exists():
        raise FormatError(f"{root} is not a LeRobot dataset: {INFO_PATH} is missing")
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise FormatError(f"{path} is not valid JSON: {e}") from None
    missing = [k for k in ("codebase_version", "fps", "features") if k not in info]
    if missing:
        raise FormatError(f"{path} lacks {', '.join(missing)}")
    return info


def write_tasks(path: Path, tasks: list[str]) -> None:
    """meta/tasks.parquet as LeRobot writes it with pandas: the task strings are the DataFrame's
    index (column ``__index_level_0__`` plus pandas metadata), ``task_index`` its one column."""
    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()),
                      "__index_level_0__": pa.array(tasks, pa.string())})
    pandas_meta = {
        "index_columns": ["__index_level_0__"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode", "numpy_type": "object",
                            "metadata": {"encoding": "UTF-8"}}],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64", "numpy_type": "int64",
             "metadata": None},
            {"name": None, "field_name": "__index_level_0__", "pandas_type": "unicode", "numpy_type": "object",
             "metadata": None},
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__}, "pandas_version": "2.2.3",
    }
    table = table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


def read_tasks(path: Path) -> dict[int, str]:
    """task_index -> task. The strings are the pandas index (its column named in the pandas metadata,
    ``__index_level_0__`` when unnamed) or, in tables written without pandas, a ``task`` column."""
    if not path.exists():
        raise FormatError(f"{path.name} is missing: the dataset has no task table ({TASKS_PATH})")
    table = pq.read_table(path)
    meta = json.loads((table.schema.metadata or {}).get(b"pandas", b"{}"))
    text_cols = [c for c in meta.get("index_columns", []) if isinstance(c, str)] + ["task", "__index_level_0__"]
    col = next((c for c in text_cols if c in table.column_names), None)
    if col is None or "task_index" not in table.column_names:
        raise FormatError(f"{path} has no task strings and task_index columns (has {table.column_names})")
    return dict(zip(table.column("task_index").to_pylist(), table.column(col).to_pylist(), strict=True))


def read_episodes(root: Path) -> list[dict]:
    """The rows of meta/episodes/*/*.parquet (without their stats), ordered by episode_index."""
    paths = sorted((root / EPISODES_DIR).glob("*/*.parquet"))
    if not paths:
        raise FormatError(f"{root} has no episode table ({EPISODES_DIR}/chunk-*/file-*.parquet)")
    rows = []
    for path in paths:
        table = pq.read_table(path)
        keep = [c for c in table.column_names if not c.startswith("stats/")]
        rows.extend(table.select(keep).to_pylist())
    need = ("episode_index", "length", "data/chunk_index", "data/file_index", "dataset_from_index")
    missing = [k for k in need if k not in rows[0]]
    if missing:
        raise FormatError(f"the episode table lacks {', '.join(missing)}")
    return sorted(rows, key=lambda r: r["episode_index"])
