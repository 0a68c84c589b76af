"""`vlaloop demo` end to end at toy size: real processes and sockets, a report and a curve at the end.
(The full-size run is `make demo`; this checks the orchestration, not the learning.)"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vlaloop.report import format_table, phase_blocks

pytestmark = pytest.mark.slow  # minutes, not seconds: `pytest -m "not slow"` skips it


def test_phase_blocks_split_rl_and_sft_runs():
    metas = ([{"source": "online", "outcome": "success", "policy_versions": [1]}] * 2
             + [{"source": "online", "outcome": "failure", "policy_versions": [2]}] * 2
             + [{"source": "eval", "outcome": "success", "policy_versions": [3]}] * 3
             + [{"source": "online", "outcome": "aborted", "policy_versions": [4]}]  # never counted
             + [{"source": "online", "outcome": "success", "policy_versions": [4]}])
    blocks = phase_blocks(metas)
    assert [(b["iteration"], b["phase"], b["episodes"], b["successes"]) for b in blocks] == [
        (1, "RL (sampled)", 4, 2), (1, "SFT (greedy eval)", 3, 3), (2, "RL (sampled)", 1, 1)]
    assert blocks[0]["versions"] == [1, 2]
    table = format_table({"version": 1, "n": 10, "success_rate": 0.2}, {"version": 5, "n": 10, "success_rate": 0.5},
                         blocks)
    assert "20% -> 50% (+30%)" in table and "iteration 2: RL (sampled)" in table


@pytest.mark.timeout(600)
def test_demo_runs_end_to_end_at_toy_size(tmp_path):
    run_dir = tmp_path / "demo"
    env = {**os.environ, "VLALOOP_LEARNER__BOOTSTRAP_STEPS": "30", "VLALOOP_LEARNER__EPISODES_PER_ROUND": "2",
           "VLALOOP_LEARNER__RL_ROUNDS_PER_PHASE": "1", "VLALOOP_LEARNER__SFT_STEPS": "10",
           "VLALOOP_MODEL__TINY_CACHE_DIR": str(tmp_path / "tiny"), "VLALOOP_ROBOT__RATE_HZ": "20"}
    out = subprocess.run([sys.executable, "-m", "vlaloop.cli", "--run-dir", str(run_dir), "demo", "--robots", "1",
                          "--iterations", "1", "--demos", "6", "--eval-episodes", "4", "--timeout-min", "6"],
                         env=env, capture_output=True, text=True, timeout=560)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "greedy success on the same 4 seeded episodes" in out.stdout
    assert (run_dir / "success_curve.png").stat().st_size > 10_000
    report = (run_dir / "report.md").read_text()
    assert "iteration 1: RL (sampled)" in report
    status = json.loads((run_dir / "status.json").read_text())
    assert status["iteration"] >= 1
    assert sorted(p.name for p in Path(run_dir, "logs").iterdir()) == ["learner.log", "robot0.log", "server.log"]
