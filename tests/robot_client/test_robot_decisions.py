"""What the robot records is what it executed: late chunks and ensembled actions as the learner's
PPO sees them (learner.dataset.online_decisions), on the real robot client against the scripted
stand-in server (every reply later than the reply budget) and the stand-in learner (real store)."""

from __future__ import annotations

import httpx
import numpy as np
from standins import standin_learner, standin_server
from test_robot_client import make_client, run_in_thread, stored_episodes

from episodes.store import EpisodeStore
from learner.dataset import online_decisions


def _run(tmp_path, procs, **overrides):
    # 20 Hz, reply budget 0.6 x 50 ms = 30 ms; every reply takes 80 ms: it lands 1-2 ticks late.
    server = standin_server(tmp_path, delay_s=0.08, mark=True)
    procs.append(server)
    learner = standin_learner(tmp_path, tmp_path / "episodes")
    procs.append(learner)
    client, arm, _ = make_client(tmp_path, server.port, learner.port, max_steps=24, reply_deadline_s=0.5,
                                 **overrides)
    thread, results = run_in_thread(client, episodes=1)
    thread.join(90)
    assert client.close(15)
    (result, end), = results
    assert not result.aborted, result
    log = httpx.get(f"http://127.0.0.1:{server.port}/_test/log").json()["act"]
    store = EpisodeStore(tmp_path / "episodes")
    meta = store.read_meta("r1", end.episode_id)
    return meta, store.load("r1", end.episode_id), stored_episodes(tmp_path / "episodes")[end.episode_id]["records"], \
        log, result


def _request_of(action: list[float]) -> int:
    """The stand-in marks every action of request i with droll = 1e-4 (i + 1)."""
    return int(round(action[3] / 1e-4)) - 1


def test_late_chunks_are_decisions_on_the_observation_that_produced_them(tmp_path, procs):
    meta, episode, recs, log, result = _run(tmp_path, procs, execution="open_loop")
    assert result.counters.get("hold_no_action", 0) >= 4  # the replies really came late: the arm waited
    firsts = [r for r in recs if r["action_chunk"] is not None]
    assert len(firsts) >= 4
    d = online_decisions(meta, episode, chunk=4)
    # every executed chunk is a PPO decision (the old code recorded them at chunk_index 1-2: none)
    assert len(d) == len(firsts)
    assert result.counters.get("chunk_retimed_after_hold", 0) >= 2
    requests = {i: state for i, _, _, _, _, state in log}
    for k, first in enumerate(firsts):
        i = _request_of(first["action_chunk"][0])
        # the decision's observation is the one the server computed the chunk from
        np.testing.assert_allclose(d.states[k], requests[i], atol=1e-6)
        assert d.steps[k] == first["step"] and first["obs_step"] == first["step"]
        assert first["chunk_index"] == 0 and first["on_policy"]
    # and the chunk ran from its first action, in order: step t executes chunk[t - decision step]
    for r in recs:
        owner = max((f for f in firsts if f["step"] <= r["step"]), key=lambda f: f["step"])
        assert r["chunk_index"] == r["step"] - owner["step"]
        np.testing.assert_allclose(r["action"], owner["action_chunk"][r["chunk_index"]], atol=1e-9)


def test_ensembled_steps_are_recorded_as_not_on_policy(tmp_path, procs):
    meta, episode, recs, _, _ = _run(tmp_path, procs, execution="ensemble")
    # the executed action is an average of several requests' chunks, so no chunk's log-prob
    # describes it: PPO must not take these as decisions (the old code took every index-0 step)
    assert len(online_decisions(meta, episode, chunk=4)) == 0
    assert recs and all(not r["on_policy"] for r in recs)
    mixed = [r for r in recs if abs(r["action"][3] / 1e-4 - round(r["action"][3] / 1e-4)) > 1e-6]
    assert mixed, "no step executed an average of two chunks: the test did not exercise ensembling"
