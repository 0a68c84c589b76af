"""``vlaloop import --format lerobot DATASET_DIR RUN_DIR [--mapping map.yaml]``: a local LeRobot
dataset (v3.0, or v2.1) becomes expert demonstrations in the run's episode store, which Stage 0
(`vlaloop learn --bootstrap`) and SFT train on.

The mapping YAML (lerobot_format/mapping.py, docs/lerobot.md) says which image key is which
camera and where the state and the action are, in which units. A dataset vlaloop exported needs
none. Without a usable mapping the import stops and prints one to start from.

Nothing partial: every episode is read, checked and written into a staging store beside the run's
(``RUN_DIR/.import-<pid>/``) first; only when all of them are there does each move into
``RUN_DIR/episodes/<robot_id>/`` with one rename (so an episode appears whole, meta.json
included, or not at all). On bad input the store is not touched. Episodes already imported (same
robot and episode id) are skipped. A dataset vlaloop exported comes back under its episodes' own
robot and episode ids; any other under ``<robot_id>/<dataset dir name>-<episode index>``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from tqdm import tqdm

from episodes.durable import fsync_dir
from episodes.store import META, EpisodeStore
from lerobot_format import mapping as mapping_mod
from lerobot_format.layout import FormatError
from lerobot_format.mapping import Mapping, MappingError
from lerobot_format.reader import EpisodeRef, LeRobotReader
from lerobot_format.run_dir import StoreBusy, refuse_if_live
from protocol.images import encode_jpeg
from protocol.messages import ID_PATTERN, LabelSource, Outcome

SOURCE = "expert"  # imported episodes are demonstrations
MAX_META_BYTES = 64 * 1024  # an exported episode's vlaloop/meta
MAX_META_FIELD_BYTES = 4096  # any one of its fields
# meta.json fields of an exported vlaloop episode that describe the store, not the episode
_STORE_FIELDS = ("robot_id", "episode_id", "created", "finished", "n_stored_steps", "relabeled")


@dataclass
class ImportConfig:
    """How a dataset becomes demonstrations."""

    mapping: Mapping | None = None
    """which key is which camera, state and action; None: the dataset must be a vlaloop export"""
    progress: bool = True
    """show a progress bar"""


class ImportRefused(RuntimeError):
    """The import would clash with what the store holds."""


def import_dataset(dataset_dir: str | os.PathLike, run_dir: str | os.PathLike, cfg: ImportConfig) -> dict:
    """Import every episode; returns a summary (imported, skipped: already in the store, frames
    imported, seconds, robots)."""
    dataset_dir, run_dir = Path(dataset_dir), Path(run_dir)
    reader = LeRobotReader(dataset_dir)
    mapping = _mapping(reader, cfg.mapping)
    if mapping.fps is not None and mapping.fps != reader.fps:
        raise MappingError(f"the dataset is recorded at {reader.fps} fps, the mapping says fps: {mapping.fps} "
                           f"(the robot's control rate); a step must be one control period")
    refuse_if_live(run_dir, "an import")
    created_run_dir = not run_dir.exists()
    staging = run_dir / f".import-{os.getpid()}"
    t0 = time.time()
    try:
        metas, already, robots = _stage(reader, mapping, EpisodeStore(staging), cfg.progress,
                                        own_ids=cfg.mapping is None, target=run_dir / "episodes")
        imported, skipped = _move_into_store(staging, run_dir / "episodes", metas)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        if created_run_dir:
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
    shutil.rmtree(staging, ignore_errors=True)
    return {"imported": imported, "skipped": skipped + already, "frames": sum(m["n_steps"] for m in metas),
            "seconds": time.time() - t0, "robots": sorted(robots)}


def _mapping(reader: LeRobotReader, given: Mapping | None) -> Mapping:
    m = given if given is not None else mapping_mod.identity(reader.features)
    if m is None:
        raise MappingError(f"{reader.root} is not a vlaloop export, so its keys need a mapping: save this as "
                           f"map.yaml, check every line against the dataset, and pass --mapping map.yaml\n\n"
                           + mapping_mod.suggest(reader.features, reader.fps))
    mapping_mod.check_against(m, reader.features)
    return m


def _stage(reader: LeRobotReader, m: Mapping, store: EpisodeStore, progress: bool, own_ids: bool,
           target: Path) -> tuple[list[dict], int, set[str]]:
    """Write every episode not yet in the `target` store into the staging `store`; returns their
    metas, how many were already there and the robot ids of all."""
    metas, already, robots = [], 0, set()
    for ep in tqdm(reader.episodes, desc="import", unit="ep", disable=not progress):
        robot_id, episode_id = _episode_key(reader, m, ep, own_ids)
        robots.add(robot_id)
        if (target / robot_id / episode_id / META).exists():
            already += 1
            continue
        records, frames, meta = _episode(reader, m, ep)
        store.append_steps([(robot_id, episode_id, i, rec, imgs)
                            for i, (rec, imgs) in enumerate(zip(records, frames, strict=True))])
        store.finish(robot_id, episode_id, meta)
        metas.append(store.read_meta(robot_id, episode_id))
    return metas, already, robots


def _episode_key(reader: LeRobotReader, m: Mapping, ep: EpisodeRef, own_ids: bool) -> tuple[str, str]:
    """Where an episode goes: a vlaloop export imported without a mapping comes back under its own
    robot and episode ids (so the learner sorts and splits the demos as it did the originals);
    anything else under the mapping's robot_id as <dataset dir>-<episode index>."""
    robot_id, episode_id = ep.row.get("vlaloop/robot_id"), ep.row.get("vlaloop/episode_id")
    if own_ids and robot_id and episode_id and re.match(ID_PATTERN, robot_id) and re.match(ID_PATTERN, episode_id):
        return robot_id, episode_id
    return m.robot_id, f"{_slug(reader.root.name)}-{ep.index:06d}"


def _episode(reader: LeRobotReader, m: Mapping, ep: EpisodeRef) -> tuple[list[dict], list[dict], dict]:
    """One dataset episode as store step records, their JPEG frames and its meta.json."""
    extras = [c for c in ("vlaloop.policy_version", "vlaloop.intervention", "vlaloop.t_capture")
              if c in reader.features]
    columns = [m.state.key, m.action.key, *extras] + ([] if m.instruction else ["task_index"])
    columns += [k for k in m.cameras.values() if reader.features[k]["dtype"] == "image"]
    rows = reader.rows(ep, columns)
    states, actions = m.state.apply(rows[m.state.key]), m.action.apply(rows[m.action.key])
    if not (np.isfinite(states).all() and np.isfinite(actions).all()):
        raise FormatError(f"episode {ep.index}: the state or action holds NaN or infinity")
    images = {cam: reader.images(ep, key, rows) for cam, key in m.cameras.items()}
    instructions = ([m.instruction] * ep.length if m.instruction
                    else [reader.task(int(t)) for t in rows["task_index"].reshape(-1)])
    records, frames = [], []
    for i in range(ep.length):
        t = _t_capture(rows, i, reader.fps)
        record = {"state": states[i].tolist(), "action": actions[i].tolist(), "action_chunk": None,
                  "chunk_index": 0, "log_prob": None, "value": None,
                  "policy_version": int(rows["vlaloop.policy_version"].reshape(-1)[i])
                  if "vlaloop.policy_version" in rows else -1,
                  "instruction": instructions[i], "t_capture": t, "t_act": t, "safety": {}}
        if "vlaloop.intervention" in rows and bool(rows["vlaloop.intervention"].reshape(-1)[i]):
            record["intervention"] = True
        records.append(record)
        frames.append({cam: encode_jpeg(np.ascontiguousarray(img[i])) for cam, img in images.items()})
    first = next(iter(images.values()))
    return records, frames, _meta(reader, m, ep, instructions[0], first.shape[1])


class ExportedMeta(BaseModel):
    """The fields of an exported episode's ``vlaloop/meta`` the store and the learner read, with the
    types and values the store's own episodes have (protocol.messages.EpisodeEnd); other fields are
    kept only while small."""
    model_config = ConfigDict(extra="allow")
    outcome: Outcome | None = None
    label_source: LabelSource | Literal["import"] | None = None
    source: Literal["expert", "online", "eval"] | None = None
    policy_version: int | None = Field(default=None, ge=-1)
    robot_id: str | None = Field(default=None, pattern=ID_PATTERN)
    episode_id: str | None = Field(default=None, pattern=ID_PATTERN)
    task: str | None = Field(default=None, max_length=512)
    instruction: str | None = Field(default=None, max_length=512)


def exported_meta(ep: EpisodeRef) -> dict:
    """An episode's ``vlaloop/meta`` column, checked (FormatError naming the field)."""
    raw = ep.row.get("vlaloop/meta")
    if not raw:
        return {}
    if not isinstance(raw, str) or len(raw) > MAX_META_BYTES:
        raise FormatError(f"episode {ep.index}: vlaloop/meta is not a JSON text of at most {MAX_META_BYTES} bytes")
    try:
        parsed = json.loads(raw)
        if not isinstance(parsed, dict):
            raise ValueError("not an object")
        meta = ExportedMeta.model_validate(parsed).model_dump(exclude_unset=True)
    except (ValueError, RecursionError) as e:
        where = ""
        if isinstance(e, ValidationError):
            err = e.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) + ": " + err["msg"]
        raise FormatError(f"episode {ep.index}: vlaloop/meta {where or 'is not a JSON object'}") from None
    for key, value in meta.items():
        if len(json.dumps(value)) > MAX_META_FIELD_BYTES:
            raise FormatError(f"episode {ep.index}: vlaloop/meta field {key[:40]!r} exceeds {MAX_META_FIELD_BYTES} bytes")
    return meta


def _meta(reader: LeRobotReader, m: Mapping, ep: EpisodeRef, instruction: str, image_size: int) -> dict:
    original = exported_meta(ep)
    meta = {k: v for k, v in original.items() if k not in _STORE_FIELDS}
    meta.update({
        "source": SOURCE, "outcome": original.get("outcome", "success"),
        "label_source": original.get("label_source", "import"), "n_steps": ep.length,
        "instruction": instruction, "task": original.get("task", instruction), "cameras": list(m.cameras),
        "image_size": int(image_size),
        "imported_from": {"dataset": str(reader.root.resolve()), "codebase_version": reader.version,
                          "episode_index": ep.index},
    })
    if original:
        meta["imported_from"].update(source=original.get("source"),
                                     episode=f"{original.get('robot_id')}/{original.get('episode_id')}")
    return meta


def _t_capture(rows: dict, i: int, fps: int) -> float:
    if "vlaloop.t_capture" in rows:
        t = float(rows["vlaloop.t_capture"].reshape(-1)[i])
        if np.isfinite(t):
            return t
    return i / fps


def _move_into_store(staging: Path, root: Path, metas: list[dict]) -> tuple[int, int]:
    """Rename each staged episode into the store; first make sure none would collide with an
    unfinished episode there (then nothing is moved)."""
    todo, skipped = [], 0
    for meta in metas:
        dest = root / meta["robot_id"] / meta["episode_id"]
        if (dest / META).exists():
            skipped += 1
        elif dest.exists():
            raise ImportRefused(f"{dest} exists without meta.json (an unfinished episode): remove it, or import "
                               f"under another robot_id")
        else:
            todo.append((staging / meta["robot_id"] / meta["episode_id"], dest))
    for src, dest in todo:
        dest.parent.mkdir(parents=True, exist_ok=True)
        os.rename(src, dest)
    for parent in {dest.parent for _, dest in todo} | ({root} if todo else set()):
        fsync_dir(parent)
    return len(todo), skipped


def _slug(name: str) -> str:
    """A dataset directory name as an episode id prefix (the store's id pattern)."""
    s = re.sub(r"[^A-Za-z0-9_-]", "-", name).strip("-_") or "dataset"
    return s[:48]


# ---------------------------------------------------------------------- command line
def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--format", choices=["lerobot"], default="lerobot", help="dataset format (LeRobot)")
    parser.add_argument("dataset_dir", metavar="DATASET_DIR", help="a local LeRobot dataset (v3.0 or v2.1)")
    parser.add_argument("run_dir", metavar="RUN_DIR", help="the run whose episodes/ store receives the demos")
    parser.add_argument("--mapping", default=None,
                        help="YAML: which key is which camera, state, action (docs/lerobot.md); not needed for "
                             "a dataset vlaloop exported")


def run(args: argparse.Namespace, config) -> int:
    try:
        mapping = mapping_mod.load(Path(args.mapping)) if args.mapping else None
        summary = import_dataset(args.dataset_dir, args.run_dir,
                                 ImportConfig(mapping=mapping, progress=sys.stderr.isatty()))
    except (MappingError, FormatError, StoreBusy, ImportRefused) as e:
        print(f"vlaloop import: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - a hostile dataset gets one line, never a traceback
        print(f"vlaloop import: the dataset is malformed ({type(e).__name__}: {str(e)[:200]})", file=sys.stderr)
        return 2
    already = f", {summary['skipped']} were already there" if summary["skipped"] else ""
    robots = ", ".join(summary["robots"])
    print(f"imported {summary['imported']} demonstrations ({summary['frames']} frames{already}) into "
          f"{Path(args.run_dir) / 'episodes'} (robot {robots}) in {summary['seconds']:.1f} s")
    return 0
