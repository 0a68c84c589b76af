"""The progress part in the live phase loop (learner/loop.py, the real Trainer on the tiny VLA,
episodes through the real ingest code): refitted before each RL round, published as
progress_model.json, and status.json says whether it shaped the rewards and why not."""

from __future__ import annotations

import json

from test_learner_loop import add_episode, config_for, run_dir, run_in_thread, template  # noqa: F401

from episodes.status import StatusBoard
from learner.loop import PhaseLoop
from vla.progress_model import read_published


def test_a_model_that_fails_its_check_shapes_nothing_and_status_says_why(run_dir):  # noqa: F811
    config = config_for(run_dir, rl_rounds_per_phase=1,
                        progress={"enabled": True, "held_out_every": 2, "min_held_out": 1000})
    loop = PhaseLoop(config, run_dir, status=StatusBoard(run_dir / "status.json", 0.05), poll_s=0.05)
    t, out = run_in_thread(loop)
    for i, outcome in enumerate(["success", "failure"]):
        loop.episode_changed(add_episode(run_dir, f"e{i}", outcome))
    t.join(120)
    assert out == [0], out
    _, report = read_published(run_dir)
    assert report["state"] == "fitted" and report["quality"]["usable"] is False
    st = json.loads((run_dir / "status.json").read_text())["progress_model"]
    assert st["usable"] is False and "held-out successful episodes" in st["reason"]
    assert st["shaped_sets"] == 0 and st["sparse_sets"] > 0
    assert any(r.startswith("sparse reward: progress model unusable") for r in st["sparse_reasons"])
