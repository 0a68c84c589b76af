import os

import numpy as np
import pytest

from episodes.store import EpisodeStore, StoreError
from protocol import encode_jpeg


def _jpg(v=100):
    return encode_jpeg(np.full((16, 16, 3), v, np.uint8))


def test_append_finish_load_and_duplicates(tmp_path):
    s = EpisodeStore(tmp_path)
    for step in range(3):
        assert s.append_step("r1", "e1", step, {"action": [0.0] * 7}, {"front": _jpg(step * 50)})
    assert not s.append_step("r1", "e1", 1, {"action": [1.0] * 7}, {"front": _jpg()})  # duplicate
    assert s.list_episodes() == []  # incomplete episodes are invisible
    assert s.finish("r1", "e1", {"outcome": "success", "n_steps": 3})
    assert not s.finish("r1", "e1", {"outcome": "failure"})
    assert not s.append_step("r1", "e1", 3, {}, {})  # after the end: dropped
    ep = s.load("r1", "e1")
    assert [r["step"] for r in ep.steps] == [0, 1, 2] and ep.meta["n_stored_steps"] == 3
    assert ep.steps[1]["action"] == [0.0] * 7 and ep.frame(2, "front").mean() == pytest.approx(100, abs=3)
    assert [m["episode_id"] for m in s.list_episodes()] == ["e1"]


def test_torn_tail_is_truncated_and_duplicates_survive_restart(tmp_path):
    s = EpisodeStore(tmp_path)
    s.append_step("r1", "e1", 0, {"a": 1}, {"front": _jpg()})
    s.append_step("r1", "e1", 1, {"a": 2}, {"front": _jpg()})
    log = tmp_path / "r1" / "e1" / "steps.log"
    with open(log, "ab") as f:
        f.write(b"\x40\x00\x00\x00\x01\x02")  # a crash mid-append
    s2 = EpisodeStore(tmp_path)  # a restarted learner
    assert not s2.append_step("r1", "e1", 1, {"a": 2}, {"front": _jpg()})
    assert s2.append_step("r1", "e1", 2, {"a": 3}, {"front": _jpg()})
    assert [r["a"] for r in s2.load("r1", "e1").steps] == [1, 2, 3]


@pytest.mark.parametrize("bad", ["..", "../x", "a/b", "", "x" * 100])
def test_ids_cannot_escape(tmp_path, bad):
    with pytest.raises(StoreError):
        EpisodeStore(tmp_path).append_step(bad, "e1", 0, {}, {})
    with pytest.raises(StoreError):
        EpisodeStore(tmp_path).append_step("r1", bad, 0, {}, {})


def test_relabel(tmp_path):
    s = EpisodeStore(tmp_path)
    s.append_step("r1", "e1", 0, {}, {"front": _jpg()})
    with pytest.raises(StoreError, match="not ended"):
        s.relabel("r1", "e1", "failure")
    s.finish("r1", "e1", {"outcome": "success", "label_source": "auto"})
    meta = s.relabel("r1", "e1", "failure")
    assert meta["outcome"] == "failure" and meta["original_outcome"] == "success"
    assert not any(p.name.endswith(".tmp") for p in (tmp_path / "r1" / "e1").iterdir())
    assert os.path.exists(tmp_path / "r1" / "e1" / "meta.json")


def _write_one_episode(store: EpisodeStore, episode_id: str) -> None:
    store.append_step("r1", episode_id, 0, {"a": 0}, {"front": _jpg(10)})
    store.append_steps([("r1", episode_id, s, {"a": s}, {"front": _jpg(10 * s)}) for s in (1, 2)])
    store.finish("r1", episode_id, {"outcome": "success", "n_steps": 3})
    store.relabel("r1", episode_id, "failure")


def test_a_store_that_is_not_durable_writes_the_same_episodes_without_fsync(tmp_path, monkeypatch):
    """durable=False (regenerable simulated rollouts) skips every fsync and nothing else: the durable
    default still fsyncs, and both stores' episodes read back alike."""
    calls = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(fd), real_fsync(fd))[1])
    _write_one_episode(EpisodeStore(tmp_path / "durable"), "e1")
    assert calls, "the default store must fsync"
    calls.clear()
    _write_one_episode(EpisodeStore(tmp_path / "fast", durable=False), "e1")
    assert calls == []
    a, b = EpisodeStore(tmp_path / "durable").load("r1", "e1"), EpisodeStore(tmp_path / "fast").load("r1", "e1")
    assert [r["a"] for r in a.steps] == [r["a"] for r in b.steps] == [0, 1, 2]
    assert a.frame_bytes(2, "front") == b.frame_bytes(2, "front")
    assert a.meta["outcome"] == b.meta["outcome"] == "failure" and b.meta["n_stored_steps"] == 3
