"""`vlaloop import --format lerobot`: the round trip (mock demos -> export -> import: the same
states, actions, instructions and labels, frames within the stated video tolerance, the learner's
Stage 0 data the same), a foreign dataset through a mapping, the refusals (no mapping, a mapping
that names what is not there) and bad input (missing keys, a wrong fps, a truncated video): a
clear error and the store untouched."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import yaml
from conftest import CAMERAS, N_DEMOS, tree_digest
from PIL import Image

from deployment.config import load_config
from episodes.store import EpisodeStore
from learner.bootstrap import expert_demos, normalizer_from_demos
from learner.sft import build_sft_data
from lerobot_format import layout
from lerobot_format.exporter import ExportConfig, export_run
from lerobot_format.importer import ImportConfig, import_dataset
from lerobot_format.layout import FormatError
from lerobot_format.mapping import MappingError, parse
from lerobot_format.reader import LeRobotReader
from lerobot_format.run_dir import StoreBusy
from lerobot_format.video import CameraVideos
from sim.mock.demos import record_demos
from vlaloop.cli import main as vlaloop_main

# The video round trip (AV1, yuv420p, crf 30: LeRobot's defaults; then JPEG again in the store) changes
# pixels. Measured on 20 mock demos, 133 frames per camera (`python -m bench.lerobot_roundtrip --frames-only
# --cameras front,wrist --seeds 0 --demos 20`, docs/lerobot.md): mean |original - imported| 2.4 (front) /
# 2.7 (wrist) grey levels, worst frame's mean 4.75, worst frame's 99th percentile 27; single pixels on
# colour edges up to ~110 (yuv420p halves the colour resolution). The bounds:
MEAN_TOLERANCE = 6.0  # per frame, mean absolute difference
P99_TOLERANCE = 40  # per frame, 99th percentile of the absolute difference


def imported_run(exported, tmp_path, **kw):
    run = tmp_path / "imported"
    summary = import_dataset(exported, run, ImportConfig(progress=False, **kw))
    return run, summary


def test_round_trip_gives_back_the_episodes(source_run, exported, tmp_path):
    run, summary = imported_run(exported, tmp_path)
    assert summary["imported"] == N_DEMOS + 1 and summary["skipped"] == 0
    a, b = EpisodeStore(source_run / "episodes"), EpisodeStore(run / "episodes")
    originals, imported = a.list_episodes(), b.list_episodes()
    assert [(m["robot_id"], m["episode_id"]) for m in imported] == [(m["robot_id"], m["episode_id"]) for m in originals]
    for ma, mb in zip(originals, imported, strict=True):
        assert mb["source"] == "expert"  # imported as demonstrations
        assert (mb["outcome"], mb["label_source"], mb["instruction"]) == \
            (ma["outcome"], ma["label_source"], ma["instruction"])
        ea, eb = a.load(ma["robot_id"], ma["episode_id"]), b.load(mb["robot_id"], mb["episode_id"])
        assert len(ea.steps) == len(eb.steps) == mb["n_steps"]
        for sa, sb in zip(ea.steps, eb.steps, strict=True):
            np.testing.assert_allclose(sb["state"], sa["state"], rtol=1e-6, atol=1e-7)  # float32 in the dataset
            np.testing.assert_allclose(sb["action"], sa["action"], rtol=1e-6, atol=1e-7)
            assert sb["instruction"] == sa["instruction"]
            assert bool(sb.get("intervention")) == bool(sa.get("intervention"))
            assert sb["policy_version"] == sa["policy_version"]
            for cam in CAMERAS:
                err = np.abs(ea.frame(sa["step"], cam).astype(int) - eb.frame(sb["step"], cam).astype(int))
                assert err.mean() <= MEAN_TOLERANCE and np.percentile(err, 99) <= P99_TOLERANCE
    # and the frames are in their places: each imported frame is nearest to its own original
    for m in originals:
        ea, eb = a.load(m["robot_id"], m["episode_id"]), b.load(m["robot_id"], m["episode_id"])
        for cam in CAMERAS:
            orig = np.stack([ea.frame(s["step"], cam) for s in ea.steps]).astype(int)
            for i, s in enumerate(eb.steps):
                dist = np.abs(orig - eb.frame(s["step"], cam).astype(int)).mean(axis=(1, 2, 3))
                assert int(dist.argmin()) == i
    online = b.read_meta("sim0", "online-1")
    assert online["imported_from"]["source"] == "online" and online["outcome"] == "failure"


def test_stage0_sees_the_same_demos(source_run, exported, tmp_path):
    """What Stage 0 trains on: the same demos in the same order and split, the same chunk targets and
    states, the same normalization (to float32 precision); only the pixels went through video."""
    run, _ = imported_run(exported, tmp_path)
    config = load_config(environ={})
    a, b = EpisodeStore(source_run / "episodes"), EpisodeStore(run / "episodes")
    da, db = expert_demos(a), expert_demos(b)
    assert [m["episode_id"] for m in da] == [m["episode_id"] for m in db] and len(da) == N_DEMOS
    na, nb = normalizer_from_demos(a, da, config), normalizer_from_demos(b, db, config)
    for name in ("action_mean", "action_std", "state_mean", "state_std"):
        np.testing.assert_allclose(getattr(nb, name), getattr(na, name), rtol=1e-5, atol=1e-7)
    sa = build_sft_data(a, da, config.model.chunk, 0.34, seed=0)
    sb = build_sft_data(b, db, config.model.chunk, 0.34, seed=0)
    assert (len(sa.train), len(sa.eval)) == (len(sb.train), len(sb.eval))
    for x, y in zip(sa.train + sa.eval, sb.train + sb.eval, strict=True):
        assert (x.step, x.instruction) == (y.step, y.instruction)
        np.testing.assert_allclose(y.chunk, x.chunk, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(y.state, x.state, rtol=1e-6, atol=1e-7)


def test_episodes_spread_over_many_files_come_back(source_run, tmp_path):
    """File limits 0: every episode starts a new data and video file (file-001, ...), so an episode
    is found by its own chunk/file index and from_timestamp 0."""
    ds = tmp_path / "ds"
    export_run(source_run, ds, ExportConfig(data_file_mb=0, video_file_mb=0, progress=False))
    assert len(list((ds / "data/chunk-000").iterdir())) == N_DEMOS + 1
    assert len(list((ds / "videos/observation.images.front/chunk-000").iterdir())) == N_DEMOS + 1
    run, summary = imported_run(ds, tmp_path)
    a, b = EpisodeStore(source_run / "episodes"), EpisodeStore(run / "episodes")
    for m in a.list_episodes():
        ea, eb = a.load(m["robot_id"], m["episode_id"]), b.load(m["robot_id"], m["episode_id"])
        np.testing.assert_allclose([s["action"] for s in eb.steps], [s["action"] for s in ea.steps], rtol=1e-6, atol=1e-7)
        err = np.abs(ea.frame(ea.steps[-1]["step"], "wrist").astype(int) - eb.frame(eb.steps[-1]["step"], "wrist"))
        assert err.mean() <= MEAN_TOLERANCE


def test_importing_again_skips_what_is_there(exported, tmp_path, capsys):
    run, _ = imported_run(exported, tmp_path)
    before = tree_digest(run / "episodes")
    assert vlaloop_main(["import", "--format", "lerobot", str(exported), str(run)]) == 0
    assert f"{N_DEMOS + 1} were already there" in capsys.readouterr().out
    assert tree_digest(run / "episodes") == before
    assert not [p for p in run.iterdir() if p.name.startswith(".import")]


def foreign_copy(exported, tmp_path):
    """The export made foreign: other state names, positions in mm, the gripper as 0..100."""
    ds = tmp_path / "foreign"
    shutil.copytree(exported, ds)
    info = json.loads((ds / layout.INFO_PATH).read_text())
    info["features"]["observation.state"]["names"] = [f"s{i}" for i in range(7)]
    (ds / layout.INFO_PATH).write_text(json.dumps(info))
    path = ds / "data/chunk-000/file-000.parquet"
    table = pq.read_table(path)
    states = np.array(table.column("observation.state").to_pylist()) * [1000, 1000, 1000, 1, 1, 1, 100]
    col = table.schema.get_field_index("observation.state")
    flat = pa.array(states.astype(np.float32).reshape(-1), pa.float32())
    table = table.set_column(col, table.schema.field(col), pa.FixedSizeListArray.from_arrays(flat, 7))
    pq.write_table(table, path)
    return ds


def test_a_foreign_dataset_needs_a_mapping_and_the_error_says_what_to_write(exported, tmp_path, capsys):
    ds = foreign_copy(exported, tmp_path)
    run = tmp_path / "run"
    with pytest.raises(MappingError, match="pass --mapping map.yaml") as e:
        import_dataset(ds, run, ImportConfig(progress=False))
    suggested = yaml.safe_load(str(e.value).split("\n\n", 1)[1])
    assert suggested["cameras"] == {"front": "observation.images.front", "wrist": "observation.images.wrist"}
    assert "positions of x y z roll pitch yaw gripper" in str(e.value)  # names unknown: says what to find
    assert not run.exists()

    mapping = {**suggested, "robot_id": "lab", "state": {"key": "observation.state", "indices": list(range(7)),
                                                         "position_unit": "mm", "gripper": [0, 100]}}
    (tmp_path / "map.yaml").write_text(yaml.safe_dump(mapping))
    rc = vlaloop_main(["import", "--format", "lerobot", str(ds), str(run), "--mapping", str(tmp_path / "map.yaml")])
    assert rc == 0, capsys.readouterr().err
    metas = EpisodeStore(run / "episodes").list_episodes()
    assert {m["robot_id"] for m in metas} == {"lab"} and metas[0]["episode_id"] == "foreign-000000"
    ours = EpisodeStore(tmp_path / "ours" / "episodes")
    import_dataset(exported, tmp_path / "ours", ImportConfig(progress=False))
    a = ours.load(ours.list_episodes()[0]["robot_id"], ours.list_episodes()[0]["episode_id"])
    b = EpisodeStore(run / "episodes").load("lab", "foreign-000000")
    np.testing.assert_allclose([s["state"] for s in b.steps], [s["state"] for s in a.steps], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("change", "says"), [
    ({"cameras": {"front": "observation.images.top"}}, "'observation.images.top' is not an image or video key"),
    ({"action": {"key": "action", "indices": [0, 1, 2, 3, 4, 5, 9]}}, "each index must be in 0..6"),
    ({"state": {"key": "observation.joints", "indices": list(range(7))}}, "is not in the dataset"),
    ({"fps": 30}, "recorded at 10 fps, the mapping says fps: 30"),
    ({"action": {"key": "joints", "indices": list(range(7))}}, "joints has 6 entries .* joint-space data cannot"),
])
def test_a_mapping_that_does_not_fit_is_refused(exported, tmp_path, change, says):
    base = {"cameras": {"front": "observation.images.front"},
            "state": {"key": "observation.state", "indices": list(range(7))},
            "action": {"key": "action", "indices": list(range(7))}}
    ds = tmp_path / "ds"
    shutil.copytree(exported, ds)  # with a 6-joint vector beside the end-effector ones
    info = json.loads((ds / layout.INFO_PATH).read_text())
    info["features"]["joints"] = {"dtype": "float32", "shape": [6], "names": [f"joint{i}" for i in range(6)]}
    (ds / layout.INFO_PATH).write_text(json.dumps(info))
    with pytest.raises(MappingError, match=says):
        import_dataset(ds, tmp_path / "run", ImportConfig(mapping=parse({**base, **change}), progress=False))
    assert not (tmp_path / "run").exists()


def _drop_action(ds):
    path = ds / "data/chunk-000/file-000.parquet"
    pq.write_table(pq.read_table(path).drop_columns(["action"]), path)


def _wrong_fps(ds):
    info = json.loads((ds / layout.INFO_PATH).read_text())
    info["fps"] = 15
    (ds / layout.INFO_PATH).write_text(json.dumps(info))


def _truncate_video(ds):
    path = ds / "videos/observation.images.wrist/chunk-000/file-000.mp4"
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])


def _lose_tasks(ds):
    (ds / layout.TASKS_PATH).unlink()


@pytest.mark.parametrize(("damage", "says"), [
    (_drop_action, r"lacks column\(s\) \['action'\]"),
    (_wrong_fps, "fps 15 puts it at .* info.json's fps is wrong"),
    (_truncate_video, "video .*wrist.* (truncated or corrupt|cannot be decoded)"),
    (_lose_tasks, "task table"),
])
def test_bad_input_is_a_clear_error_and_the_store_is_untouched(exported, tmp_path, damage, says):
    ds = tmp_path / "ds"
    shutil.copytree(exported, ds)
    damage(ds)
    run = tmp_path / "run"
    record_demos(EpisodeStore(run / "episodes"), n=1, seed=50)  # a store with an episode already
    before = tree_digest(run)
    with pytest.raises(FormatError, match=says):
        import_dataset(ds, run, ImportConfig(progress=False))
    assert tree_digest(run) == before
    assert sorted(p.name for p in run.iterdir()) == ["episodes"]  # no staging left


def test_import_refuses_while_a_learner_writes_the_store(exported, tmp_path, learner_factory):
    run = tmp_path / "run"
    learner_factory("--no-train", run_dir=run)
    before = tree_digest(run / "episodes")
    with pytest.raises(StoreBusy, match="Stop the learner first"):
        import_dataset(exported, run, ImportConfig(progress=False))
    assert tree_digest(run / "episodes") == before


def as_v21(v3: Path, out: Path) -> Path:
    """The same dataset in LeRobot's previous layout, v2.1: a parquet file and an mp4 per episode,
    episodes and tasks as JSON lines (what convert_dataset_v21_to_v30 reads)."""
    reader = LeRobotReader(v3)
    info = {**reader.info, "codebase_version": "v2.1",
            "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
            "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4"}
    layout.write_json(out / layout.INFO_PATH, info)
    (out / "meta/tasks.jsonl").write_text("".join(json.dumps({"task_index": i, "task": t}) + "\n"
                                                  for i, t in reader.tasks.items()))
    (out / "meta/episodes.jsonl").write_text("".join(json.dumps({"episode_index": e.index, "tasks": e.row["tasks"],
                                                                 "length": e.length}) + "\n" for e in reader.episodes))
    table = pq.read_table(v3 / "data/chunk-000/file-000.parquet")
    for ep in reader.episodes:
        path = out / info["data_path"].format(episode_chunk=0, episode_index=ep.index)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table.filter(pc.equal(table.column("episode_index"), ep.index)), path)
        for key in ep.videos:
            tmp = out / "tmp"
            video = CameraVideos(tmp, key, reader.fps, 96, 96)
            video.start_episode()
            for img in reader.images(ep, key):
                video.add(img)
            video.close()
            dest = out / info["video_path"].format(episode_chunk=0, video_key=key, episode_index=ep.index)
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(tmp / layout.VIDEO_PATH.format(video_key=key, chunk_index=0, file_index=0), dest)
            shutil.rmtree(tmp)
    return out


def test_a_v21_dataset_imports_too(source_run, exported, tmp_path):
    ds = as_v21(exported, tmp_path / "v21")
    run, summary = imported_run(ds, tmp_path)
    assert summary["imported"] == N_DEMOS + 1
    a, b = EpisodeStore(source_run / "episodes"), EpisodeStore(run / "episodes")
    for k, m in enumerate(a.list_episodes()):  # v2.1 has no episode columns of ours: ids from the dir name
        ea, eb = a.load(m["robot_id"], m["episode_id"]), b.load("lerobot", f"v21-{k:06d}")
        assert eb.meta["outcome"] == "success" and eb.meta["label_source"] == "import"  # demos, by definition
        np.testing.assert_allclose([s["state"] for s in eb.steps], [s["state"] for s in ea.steps], rtol=1e-6, atol=1e-7)
        assert [s["instruction"] for s in eb.steps] == [s["instruction"] for s in ea.steps]
        # decoded and encoded twice: a little further off than one round trip
        err = np.abs(ea.frame(ea.steps[-1]["step"], "front").astype(int) - eb.frame(eb.steps[-1]["step"], "front"))
        assert err.mean() <= 2 * MEAN_TOLERANCE


def as_image_dataset(v3: Path, out: Path) -> Path:
    """The same dataset with its frames as PNG images inside the parquet rows (LeRobot's `image`
    dtype: a struct of bytes and path) instead of videos."""
    reader = LeRobotReader(v3)
    shutil.copytree(v3, out, ignore=shutil.ignore_patterns("videos"))
    table = pq.read_table(v3 / "data/chunk-000/file-000.parquet")
    info = json.loads((v3 / layout.INFO_PATH).read_text())
    for key in [k for k, f in reader.features.items() if f["dtype"] == "video"]:
        cells = []
        for ep in reader.episodes:
            for img in reader.images(ep, key):
                buf = io.BytesIO()
                Image.fromarray(img).save(buf, format="PNG")
                cells.append({"bytes": buf.getvalue(), "path": None})
        table = table.append_column(key, pa.array(cells, pa.struct([("bytes", pa.binary()), ("path", pa.string())])))
        info["features"][key] = {"dtype": "image", "shape": [96, 96, 3], "names": ["height", "width", "channel"]}
    pq.write_table(table, out / "data/chunk-000/file-000.parquet")
    layout.write_json(out / layout.INFO_PATH, info)
    return out


def test_images_stored_in_the_rows_import_too(source_run, exported, tmp_path):
    ds = as_image_dataset(exported, tmp_path / "images")
    run, summary = imported_run(ds, tmp_path)
    assert summary["imported"] == N_DEMOS + 1
    a, b = EpisodeStore(source_run / "episodes"), EpisodeStore(run / "episodes")
    for m in a.list_episodes():
        ea, eb = a.load(m["robot_id"], m["episode_id"]), b.load(m["robot_id"], m["episode_id"])
        for cam in CAMERAS:
            err = np.abs(ea.frame(ea.steps[0]["step"], cam).astype(int) - eb.frame(eb.steps[0]["step"], cam))
            assert err.mean() <= MEAN_TOLERANCE


# ---- hostile datasets: only files inside, sizes checked first, one-line refusals ---------------

EPISODES_FILE = "meta/episodes/chunk-000/file-000.parquet"
DATA_FILE = "data/chunk-000/file-000.parquet"


def _info(ds, **changes):
    info = json.loads((ds / layout.INFO_PATH).read_text())
    info.update(changes)
    (ds / layout.INFO_PATH).write_text(json.dumps(info))


def _data_outside(ds):
    outside = ds.parent / "outside_data"
    outside.mkdir()
    shutil.copy(ds / DATA_FILE, outside / "file.parquet")
    _info(ds, data_path="../outside_data/file.parquet")


def _video_symlinked_outside(ds):
    video = ds / "videos/observation.images.wrist/chunk-000/file-000.mp4"
    outside = ds.parent / "outside.mp4"
    shutil.move(video, outside)
    video.symlink_to(outside)


def _extra_rows(ds):
    table = pq.read_table(ds / DATA_FILE)
    pq.write_table(pa.concat_tables([table] * 50), ds / DATA_FILE)


def _huge_declared_video(ds):
    info = json.loads((ds / layout.INFO_PATH).read_text())
    info["features"]["observation.images.wrist"]["shape"] = [6000, 6000, 3]
    (ds / layout.INFO_PATH).write_text(json.dumps(info))


def _video_not_its_declared_size(ds):
    info = json.loads((ds / layout.INFO_PATH).read_text())
    info["features"]["observation.images.wrist"]["shape"] = [48, 48, 3]
    (ds / layout.INFO_PATH).write_text(json.dumps(info))


def _episode_meta(ds, change):
    table = pq.read_table(ds / EPISODES_FILE)
    metas = [json.dumps(change(json.loads(m))) if m else m for m in table.column("vlaloop/meta").to_pylist()]
    i = table.column_names.index("vlaloop/meta")
    pq.write_table(table.set_column(i, "vlaloop/meta", pa.array(metas, pa.string())), ds / EPISODES_FILE)


@pytest.mark.parametrize(("damage", "says"), [
    (_data_outside, "data_path '../outside_data/file.parquet' points outside the dataset"),
    (_video_symlinked_outside, "video_path .* points outside the dataset"),
    (_extra_rows, r"has \d+ rows, the episode table puts \d+ in it"),
    (lambda ds: _info(ds, data_path="{chunk_index:>100000000}"), "a field must be one of"),
    (lambda ds: _info(ds, data_path="data/{0}.parquet"), "a field must be one of"),
    (lambda ds: _info(ds, data_path="data/\0.parquet"), "not a path template"),  # found by bench.fuzz_hostile
    (lambda ds: _info(ds, video_path="videos/{video_key}/../../../x/{chunk_index}/{file_index}.mp4"),
     "points outside the dataset"),
    (_huge_declared_video, "declared 6000x6000 exceeds 4096 px"),
    (_video_not_its_declared_size, "is 96x96, its feature declares 48x48"),
    (lambda ds: _episode_meta(ds, lambda m: {**m, "outcome": "pwned"}), "vlaloop/meta outcome"),
    (lambda ds: _episode_meta(ds, lambda m: {**m, "policy_version": "abc"}), "vlaloop/meta policy_version"),
    (lambda ds: _episode_meta(ds, lambda m: {**m, "notes": "x" * 5_000_000}), "vlaloop/meta is not a JSON text"),
    (lambda ds: _episode_meta(ds, lambda m: {**m, "notes": "x" * 10_000}), "field 'notes' exceeds"),
    (lambda ds: _episode_meta(ds, lambda m: [m]), "vlaloop/meta is not a JSON object"),
])
def test_a_hostile_dataset_is_refused_in_one_line_and_the_store_is_untouched(exported, tmp_path, damage, says,
                                                                            capsys):
    ds = tmp_path / "ds"
    shutil.copytree(exported, ds)
    damage(ds)
    run = tmp_path / "run"
    record_demos(EpisodeStore(run / "episodes"), n=1, seed=50)
    before = tree_digest(run)
    with pytest.raises(FormatError, match=says):
        import_dataset(ds, run, ImportConfig(progress=False))
    assert tree_digest(run) == before
    assert vlaloop_main(["import", "--format", "lerobot", str(ds), str(run)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vlaloop import: ") and "\n" not in err and len(err) < 1000, err[:2000]
    assert tree_digest(run) == before


def test_an_embedded_image_is_checked_against_its_declared_size_before_decoding():
    from lerobot_format.reader import EpisodeRef, _decode_image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    import struct
    import zlib
    struct.pack_into(">II", data, 16, 6000, 6000)  # the header claims 6000x6000
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    ep = EpisodeRef(index=0, length=1, data_path=Path("x"))
    with pytest.raises(FormatError, match="image is 6000x6000, the feature declares 96x96"):
        _decode_image({"bytes": bytes(data)}, "observation.images.front", ep, (96, 96))
    with pytest.raises(FormatError, match="cannot be decoded"):
        _decode_image({"bytes": b"\x89PNG garbage"}, "observation.images.front", ep, (96, 96))


def test_garbage_anywhere_in_the_dataset_is_one_line(exported, tmp_path, capsys):
    ds = tmp_path / "ds"
    shutil.copytree(exported, ds)
    (ds / EPISODES_FILE).write_bytes(b"PAR1 garbage PAR1")
    assert vlaloop_main(["import", "--format", "lerobot", str(ds), str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("vlaloop import: ") and "\n" not in err and "Traceback" not in err, err[:2000]
