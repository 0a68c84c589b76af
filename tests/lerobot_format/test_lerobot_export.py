"""`vlaloop export --format lerobot`: the layout LeRobot v3.0 reads (checked against the format as
LeRobot's source defines it: paths, info.json, the episode table's columns, tasks, stats), the
filters, and the refusals: a live learner, a corrupt store, an existing OUT_DIR; nothing partial
left behind."""

from __future__ import annotations

import json
import shutil

import av
import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import N_DEMOS, tree_digest

from lerobot_format import layout
from lerobot_format.exporter import ExportConfig, ExportError, export_run
from lerobot_format.run_dir import StoreBusy, StoreCorrupt
from vlaloop.cli import main as vlaloop_main

# the columns LeRobot's reader looks up in meta/episodes (lerobot.datasets.lerobot_dataset, v0.4)
EPISODE_COLUMNS = ["episode_index", "tasks", "length", "data/chunk_index", "data/file_index", "dataset_from_index",
                   "dataset_to_index", "meta/episodes/chunk_index", "meta/episodes/file_index"]
VIDEO_COLUMNS = ["chunk_index", "file_index", "from_timestamp", "to_timestamp"]
STATS = ["min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99"]


def test_export_is_a_lerobot_v3_dataset(exported, source_run):
    info = json.loads((exported / layout.INFO_PATH).read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 10
    assert info["total_episodes"] == N_DEMOS + 1  # the episode still being recorded is left out
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    feats = info["features"]
    assert feats["observation.state"]["names"] == ["x", "y", "z", "roll", "pitch", "yaw", "gripper"]
    assert feats["action"] == {"dtype": "float32", "shape": [7], "names": ["dx", "dy", "dz", "wx", "wy", "wz", "gripper"]}
    for cam in ("front", "wrist"):
        f = feats[f"observation.images.{cam}"]
        assert f["dtype"] == "video" and f["shape"] == [96, 96, 3]
        assert f["info"]["video.codec"] == "av1" and f["info"]["video.fps"] == 10
    for key in ("timestamp", "frame_index", "episode_index", "index", "task_index"):
        assert key in feats

    data = pq.read_table(exported / "data/chunk-000/file-000.parquet")
    assert data.num_rows == info["total_frames"]
    assert data.schema.field("observation.state").type.list_size == 7  # a fixed-size list, as `datasets` writes
    assert data.column("index").to_pylist() == list(range(info["total_frames"]))
    fi, ts = np.array(data.column("frame_index").to_pylist()), np.array(data.column("timestamp").to_pylist())
    np.testing.assert_allclose(ts, fi / 10, atol=1e-6)

    episodes = pq.read_table(exported / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    tasks = layout.read_tasks(exported / layout.TASKS_PATH)
    assert set(tasks.values()) == {t for e in episodes for t in e["tasks"]}
    for e in episodes:
        assert all(c in e for c in EPISODE_COLUMNS)
        assert e["dataset_to_index"] - e["dataset_from_index"] == e["length"]
        for cam in ("front", "wrist"):
            v = {c: e[f"videos/observation.images.{cam}/{c}"] for c in VIDEO_COLUMNS}
            assert v["to_timestamp"] - v["from_timestamp"] == pytest.approx(e["length"] / 10)
            assert v["from_timestamp"] == pytest.approx(e["dataset_from_index"] / 10)  # one file holds them all
        assert e["stats/observation.state/mean"] and len(e["stats/observation.images.front/mean"]) == 3
    with av.open(str(exported / "videos/observation.images.front/chunk-000/file-000.mp4")) as c:
        assert sum(1 for _ in c.decode(video=0)) == info["total_frames"]

    stats = json.loads((exported / layout.STATS_PATH).read_text())
    for key in ("observation.state", "action", "observation.images.front", "timestamp"):
        assert sorted(stats[key]) == sorted(STATS), key
    assert np.array(stats["observation.images.front"]["mean"]).shape == (3, 1, 1)
    all_states = np.array(data.column("observation.state").to_pylist())
    np.testing.assert_allclose(stats["observation.state"]["mean"], all_states.mean(0), rtol=1e-6)


def test_vlaloop_extras_travel_as_columns(exported):
    data = pq.read_table(exported / "data/chunk-000/file-000.parquet").to_pydict()
    episodes = pq.read_table(exported / "meta/episodes/chunk-000/file-000.parquet").to_pylist()
    online = next(e for e in episodes if e["vlaloop/episode_id"] == "online-1")
    assert (online["vlaloop/outcome"], online["vlaloop/label_source"], online["vlaloop/source"]) == \
        ("failure", "operator", "online")
    rows = [i for i, e in enumerate(data["episode_index"]) if e == online["episode_index"]]
    assert [data["vlaloop.intervention"][i] for i in rows][:5] == [False, False, True, True, False]
    assert {data["vlaloop.policy_version"][i] for i in rows} == {3}
    assert [data["next.done"][i] for i in rows][-1] and [data["next.reward"][i] for i in rows][-1] == 0.0
    demo = next(e for e in episodes if e["vlaloop/source"] == "expert")
    last = [i for i, e in enumerate(data["episode_index"]) if e == demo["episode_index"]][-1]
    assert data["next.reward"][last] == 1.0  # a success ends with reward 1


@pytest.mark.parametrize(("which", "n"), [("demos", N_DEMOS), ("success", N_DEMOS), ("all", N_DEMOS + 1)])
def test_filter_chooses_the_episodes(source_run, tmp_path, which, n):
    summary = export_run(source_run, tmp_path / "ds", ExportConfig(filter=which, progress=False))
    assert summary["episodes"] == n


def test_the_command_line_exports_and_says_what_it_did(source_run, tmp_path, capsys):
    rc = vlaloop_main(["export", "--format", "lerobot", str(source_run), str(tmp_path / "ds"), "--filter", "demos"])
    assert rc == 0 and f"exported {N_DEMOS} episodes" in capsys.readouterr().out
    assert (tmp_path / "ds/meta/info.json").exists()
    assert vlaloop_main(["export", str(source_run), str(tmp_path / "ds")]) == 2  # never overwrites
    assert "exists" in capsys.readouterr().err


def _corrupt_meta(ep):
    (ep / "meta.json").write_text("{not json")


def _cut_log(ep):
    log = ep / "steps.log"
    log.write_bytes(log.read_bytes()[: log.stat().st_size // 2])


def _lose_frame(ep):
    sorted((ep / "frames").iterdir())[-1].unlink()


@pytest.mark.parametrize(("damage", "says"), [(_corrupt_meta, "not valid JSON"), (_cut_log, "log is damaged"),
                                              (_lose_frame, "frame unreadable")])
def test_a_corrupt_store_is_a_clear_error_and_leaves_nothing(source_run, tmp_path, damage, says):
    run = tmp_path / "run"
    shutil.copytree(source_run, run)
    damage(run / "episodes/sim0/online-1")  # exported last: the others are written when it fails
    with pytest.raises(StoreCorrupt, match=says) as e:
        export_run(run, tmp_path / "out" / "ds", ExportConfig(progress=False))
    assert "online-1" in str(e.value)
    assert not (tmp_path / "out" / "ds").exists()
    leftovers = list((tmp_path / "out").iterdir()) if (tmp_path / "out").exists() else []
    assert leftovers == []  # no half-written dataset, no hidden temp dir


def test_a_store_a_learner_is_writing_is_refused(source_run, tmp_path, learner_factory):
    run = tmp_path / "run"
    shutil.copytree(source_run, run)
    learner_factory("--no-train", run_dir=run)
    before = tree_digest(run / "episodes")
    with pytest.raises(StoreBusy, match="a learner .* is writing"):
        export_run(run, tmp_path / "ds", ExportConfig(progress=False))
    assert not (tmp_path / "ds").exists()
    summary = export_run(run, tmp_path / "ds", ExportConfig(live=True, progress=False))  # explicitly asked
    assert summary["episodes"] == N_DEMOS + 1
    assert tree_digest(run / "episodes") == before


def test_nothing_to_export_and_no_store_are_clear_errors(tmp_path, source_run):
    with pytest.raises(ExportError, match="no episode store"):
        export_run(tmp_path / "nothing", tmp_path / "ds", ExportConfig(progress=False))
    run = tmp_path / "run"
    shutil.copytree(source_run, run)
    for d in (run / "episodes/expert").iterdir():
        shutil.rmtree(d)
    with pytest.raises(ExportError, match="no episode .* matches --filter demos"):
        export_run(run, tmp_path / "ds", ExportConfig(filter="demos", progress=False))


def test_long_work_shows_progress(source_run, tmp_path, capsys):
    from lerobot_format.importer import ImportConfig, import_dataset

    export_run(source_run, tmp_path / "ds", ExportConfig(filter="demos", progress=True))
    import_dataset(tmp_path / "ds", tmp_path / "run", ImportConfig(progress=True))
    err = capsys.readouterr().err
    assert "export: 100%" in err and f"{N_DEMOS}/{N_DEMOS}" in err and "import: 100%" in err


def test_cameras_of_different_sizes(tmp_path):
    from episodes.store import EpisodeStore
    from lerobot_format.importer import ImportConfig, import_dataset
    from protocol.images import encode_jpeg

    store = EpisodeStore(tmp_path / "run/episodes")
    rng = np.random.default_rng(0)
    base = {"front": rng.integers(0, 255, (48, 64, 3), np.uint8), "wrist": rng.integers(0, 255, (32, 32, 3), np.uint8)}
    for i in range(5):
        frames = {cam: encode_jpeg(np.roll(img, 4 * i, axis=1)) for cam, img in base.items()}
        store.append_step("arm1", "ep1", i, {"state": [0.1 * i] * 7, "action": [0.01] * 7, "instruction": "pick"},
                          frames)
    store.finish("arm1", "ep1", {"source": "expert", "outcome": "success", "instruction": "pick", "n_steps": 5})
    export_run(tmp_path / "run", tmp_path / "ds", ExportConfig(progress=False))
    feats = json.loads((tmp_path / "ds" / layout.INFO_PATH).read_text())["features"]
    assert feats["observation.images.front"]["shape"] == [48, 64, 3]
    assert feats["observation.images.wrist"]["shape"] == [32, 32, 3]
    import_dataset(tmp_path / "ds", tmp_path / "back", ImportConfig(progress=False))
    ep = EpisodeStore(tmp_path / "back/episodes").load("arm1", "ep1")
    assert ep.frame(4, "front").shape == (48, 64, 3) and ep.frame(4, "wrist").shape == (32, 32, 3)
