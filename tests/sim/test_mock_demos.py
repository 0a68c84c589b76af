"""Expert demonstrations recorded into the learner's episode store (`vlaloop demos`)."""

from __future__ import annotations

import numpy as np

from episodes.store import EpisodeStore
from sim.mock.demos import record_demos
from sim.mock.sim import MAX_TRANSLATION
from vlaloop.cli import main


def test_record_demos_into_store(tmp_path):
    store = EpisodeStore(tmp_path / "episodes")
    metas = record_demos(store, "pick_place", n=3, seed=10, noise=0.1, image_size=64)
    assert len(metas) == 3
    listed = store.list_episodes(source="expert")
    assert [m["episode_id"] for m in listed] == [m["episode_id"] for m in metas]
    for meta in listed:
        assert meta["outcome"] == "success" and meta["label_source"] == "auto"
        assert meta["task"] == "pick_place" and meta["robot_id"] == "expert"
        assert meta["n_steps"] == meta["n_stored_steps"] > 5 and not meta["task_spec"]["held_out"]
        ep = store.load("expert", meta["episode_id"])
        assert [s["step"] for s in ep.steps] == list(range(meta["n_steps"]))
        for s in ep.steps:
            assert len(s["state"]) == 7 and len(s["action"]) == 7 and s["chunk_index"] == 0
            assert s["action_chunk"] is None and s["instruction"] == meta["instruction"]
            assert np.linalg.norm(s["action"][:3]) <= MAX_TRANSLATION + 1e-9 and s["t_capture"] > 0
        assert ep.frame(0, "front").shape == (64, 64, 3)
        # closing then opening the gripper happened: the block was picked and released
        grips = [s["action"][6] for s in ep.steps]
        assert 0.0 in grips and grips[-1] == 1.0
    again = record_demos(store, "pick_place", n=3, seed=10, noise=0.1, image_size=64)  # idempotent
    assert [m["episode_id"] for m in again] == [m["episode_id"] for m in metas]
    assert len(store.list_episodes()) == 3


def test_failures_are_dropped_unless_kept(tmp_path):
    # noise 1.0 makes the expert fail often
    all_kept = record_demos(EpisodeStore(tmp_path / "all"), "push", n=4, seed=0, noise=1.0,
                            image_size=32, keep_failures=True)
    failed = {m["episode_id"] for m in all_kept if m["outcome"] == "failure"}
    assert len(all_kept) == 4 and failed
    store = EpisodeStore(tmp_path / "episodes")
    kept = record_demos(store, "push", n=4, seed=0, noise=1.0, image_size=32, max_attempts=4)
    stored = {m["episode_id"] for m in store.list_episodes()}
    assert all(m["outcome"] == "success" for m in kept) and len(stored) == len(kept) == 4 - len(failed)
    assert not stored & failed


def test_vlaloop_demos_cli(tmp_path, capsys):
    rc = main(["--run-dir", str(tmp_path), "demos", "--task", "reach", "--n", "2", "--seed", "3"])
    assert rc == 0
    metas = EpisodeStore(tmp_path / "episodes").list_episodes(source="expert")
    assert [m["episode_id"] for m in metas] == ["reach-s3", "reach-s4"]
    assert metas[0]["image_size"] == 96 and "2 reach demos" in capsys.readouterr().out
