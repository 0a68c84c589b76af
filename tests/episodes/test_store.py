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
