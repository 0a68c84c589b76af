"""A small run made once per session: three scripted mock demos with two cameras, one online episode
(a failure with an operator's intervention, served by policy version 3) and one episode still being
recorded (no meta.json); and its LeRobot export."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from episodes.store import EpisodeStore
from lerobot_format.exporter import ExportConfig, export_run
from sim.mock.demos import record_demos

CAMERAS = ("front", "wrist")
N_DEMOS = 3


def add_online_episode(store: EpisodeStore, demo: dict) -> dict:
    """An online episode as the ingest stores one, on the frames of a demo: steps 2..3 driven by the
    operator, labelled failure by the operator."""
    ep = store.load(demo["robot_id"], demo["episode_id"])
    for s in ep.steps:
        i = int(s["step"])
        record = {"state": s["state"], "action": s["action"], "action_chunk": [s["action"]] * 4 if i % 4 == 0 else None,
                  "chunk_index": i % 4, "log_prob": -1.5 if i % 4 == 0 else None, "value": 0.2 if i % 4 == 0 else None,
                  "policy_version": 3, "instruction": s["instruction"], "t_capture": 1_800_000_000.0 + i / 10,
                  "t_act": 1_800_000_000.05 + i / 10, "safety": {}, "intervention": i in (2, 3),
                  "on_policy": i not in (2, 3)}
        store.append_step("sim0", "online-1", i, record, {c: ep.frame_bytes(i, c) for c in CAMERAS})
    store.finish("sim0", "online-1", {"outcome": "failure", "label_source": "operator", "n_steps": len(ep.steps),
                                      "instruction": ep.meta["instruction"], "task": ep.meta["task"],
                                      "intervention_steps": 2, "policy_version": 3})
    return store.read_meta("sim0", "online-1")


@pytest.fixture(scope="session")
def source_run(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("lerobot") / "run"
    store = EpisodeStore(run / "episodes")
    demos = record_demos(store, task="reach", n=N_DEMOS, seed=0, cameras=CAMERAS)
    add_online_episode(store, demos[0])
    store.append_step("sim0", "still-recording", 0, {"state": [0.0] * 7, "action": [0.0] * 7},
                      {c: store.load(demos[0]["robot_id"], demos[0]["episode_id"]).frame_bytes(0, c) for c in CAMERAS})
    return run


@pytest.fixture(scope="session")
def exported(source_run, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("export") / "dataset"
    export_run(source_run, out, ExportConfig(progress=False))
    return out


def tree_digest(root: Path) -> dict[str, str]:
    """Every file under root -> a hash of its bytes: 'untouched' means this does not change."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}
