"""A full disk under the episode store loses nothing: the real learner (`vlaloop learn --no-train`)
writes to a 1 MB tmpfs; the robot's real Streamer + Outbox sends it an episode that does not fit.
The learner must not ack what it could not write (an ok=False ack would make the robot delete the
step from its outbox), and once the disk has room again every step is stored exactly once.
Needs root for `mount -t tmpfs` (skipped otherwise; bench/faults.py --disk-full does the same with
three mock robots)."""

from __future__ import annotations

import subprocess
import time

import numpy as np
import pytest
from ingest_harness import CONFIG_HASH

from bench.learner_ingest import make_step
from episodes.store import STEPS, EpisodeStore, _read_records
from protocol.messages import EpisodeEnd
from robot_client.outbox import Outbox
from robot_client.streamer import Streamer

N_STEPS = 60


@pytest.fixture
def small_disk(tmp_path):
    episodes = tmp_path / "run" / "episodes"
    episodes.mkdir(parents=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(episodes)], capture_output=True,
                       text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
    try:
        yield episodes
    finally:
        subprocess.run(["umount", "-l", str(episodes)], capture_output=True)


def test_full_disk_steps_stay_in_the_outbox_and_arrive_once_space_is_back(small_disk, learner_factory, tmp_path):
    lr = learner_factory("--no-train", run_dir=small_disk.parent)
    rng = np.random.default_rng(0)
    frames = {"front": rng.integers(0, 255, 40_000, dtype=np.uint8).tobytes()}  # 40 KB: 60 steps need 2.4 MB
    streamer = Streamer(Outbox(tmp_path / "outbox"), lr.endpoint, "r1", CONFIG_HASH, ack_timeout_s=1.0).start()
    try:
        for i in range(N_STEPS):
            streamer.submit(make_step("r1", "e1", i, frames))
        streamer.submit(EpisodeEnd(robot_id="r1", episode_id="e1", outcome="failure", label_source="auto",
                                   n_steps=N_STEPS, instruction="reach the red block", task="reach"))
        deadline = time.time() + 30
        while "No space left" not in lr.log.read_text() and time.time() < deadline:
            time.sleep(0.1)
        assert "No space left" in lr.log.read_text(), "the disk never filled"
        time.sleep(3.0)  # a few ack timeouts and resends against the full disk
        assert streamer.rejected == 0, streamer.last_error  # nothing refused, so nothing deleted
        assert len(streamer.outbox) > 0 and not streamer.idle()
        stored_while_full = len(_read_records(small_disk / "r1" / "e1" / STEPS)[0])
        assert stored_while_full < N_STEPS  # (0 when the first group commit already did not fit)
        subprocess.run(["mount", "-o", "remount,size=64m", str(small_disk)], check=True)  # space is back
        assert streamer.flush(60), f"{len(streamer.outbox)} messages never acked"
    finally:
        streamer.stop()
    raw, _ = _read_records(small_disk / "r1" / "e1" / STEPS)
    assert sorted(int(r["step"]) for r in raw) == list(range(N_STEPS))  # every step once, none torn
    ep = EpisodeStore(small_disk).load("r1", "e1")
    assert ep.meta["n_steps"] == N_STEPS and ep.meta["n_stored_steps"] == N_STEPS
    assert all(ep.frame_bytes(i, "front") == frames["front"] for i in range(N_STEPS))
    print(f"\nstored {stored_while_full} of {N_STEPS} steps before the disk was full; the rest after it grew")
