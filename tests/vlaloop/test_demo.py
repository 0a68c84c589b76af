"""`vlaloop demo` end to end at toy size: real processes and sockets, the learner's phase record, a
report segmented by it, the SFT-only control and a curve at the end. (The full-size run is
`make demo`; this checks the orchestration and the bookkeeping, not the learning.)"""

import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from episodes.status import PhaseLog, read_phase_log
from episodes.store import EpisodeStore
from vlaloop.report import attribute, headline, phase_table, summarize

pytestmark = pytest.mark.slow  # minutes, not seconds: `pytest -m "not slow"` skips it


def _meta(i, first, versions=None, source="online", outcome="success", finished=0.0):
    return {"robot_id": "r", "episode_id": f"e{i}", "source": source, "outcome": outcome,
            "mode": "greedy" if source == "eval" else "sample", "first_policy_version": first,
            "policy_versions": versions or [first], "finished": finished}


def test_episodes_are_counted_once_in_the_phase_whose_policy_started_them(tmp_path):
    log = PhaseLog(tmp_path / "phases.jsonl")
    t = 100.0
    for phase, it, rnd, serving, version, collected in (
            ("bootstrap", 0, 0, None, 1, []), ("rl", 0, 0, 1, 2, ["r/e0", "r/e1"]),
            ("rl", 0, 1, 2, 3, ["r/e2", "r/e3"]), ("sft", 0, 2, 3, 4, ["r/e4", "r/e5"])):
        log.append({"event": "start", "phase": phase, "iteration": it, "round": rnd, "serving_version": serving,
                    "time": t})
        log.append({"event": "end", "phase": phase, "iteration": it, "round": rnd, "version": version,
                    "trained_on": [], "collected": collected, "time": t + 10})
        t += 10
    log.append({"event": "done", "iterations": 1, "version": 4, "collected": ["r/e6"], "time": t})
    with open(tmp_path / "phases.jsonl", "a") as f:
        f.write('{"event": "start", "pha')  # a torn last line (crash mid-append) is skipped
    metas = [_meta(0, 1), _meta(1, 1, outcome="failure"),
             _meta(2, 1, [1, 2]),  # started under v1, hot-swapped to v2, ended in round 1: counted in round 0
             _meta(3, 2), _meta(4, 3, source="eval"), _meta(5, 3, [3, 4], source="eval", outcome="failure"),
             _meta(6, 4), _meta(7, 99)]  # v4 served after the last phase; v99 by no phase
    rows = summarize(attribute(read_phase_log(tmp_path / "phases.jsonl"), metas), rl_rounds=2)
    got = [(r["phase"], r["serving_version"], r["version"], r["sampled"], r["sampled_successes"], r["greedy"])
           for r in rows]
    assert got == [("bootstrap", None, 1, 0, 0, 0), ("rl", 1, 2, 3, 2, 0), ("rl", 2, 3, 1, 1, 0),
                   ("sft", 3, 4, 0, 0, 2), ("after", 4, None, 1, 1, 0), ("unattributed", None, None, 1, 1, 0)]
    keys = [k for r in rows for k in r["episodes"]]
    assert sorted(keys) == sorted(f"r/e{i}" for i in range(8))  # every episode exactly once
    assert rows[1]["hot_swapped"] == 1 and rows[1]["ended_in_a_later_phase"] == 1
    table = phase_table(rows)
    assert "| 1 | RL round 1/2 | v1 | v2 | 3 (67%) | - |" in table
    assert "| 1 | SFT | v3 | v4 | - | 2 (50%) |" in table


def test_headline_states_the_online_gain_next_to_the_sft_only_control():
    before = {"version": 1, "n": 50, "success_rate": 0.2}
    after = {"version": 9, "n": 50, "success_rate": 0.5}
    control = {"n": 50, "success_rate": 0.46, "phases": 2, "sft_steps": 300, "demos": 40}
    text = headline(before, after, control, "2 iterations")
    assert "20% -> 50% (+30 points)" in text and "gave +26 points" in text and "added **+4 points**" in text
    assert "within noise" in text
    assert "No SFT-only control" in headline(before, after, None, "2 iterations")


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_toy_demo_report_matches_the_learners_history(tmp_path, tiny_dir):
    run_dir = tmp_path / "demo"
    iterations, rounds = 2, 2
    # 5 Hz: room for a slow reply on a loaded machine (the bookkeeping, not the control rate, is tested)
    env = {**os.environ, "VLALOOP_LEARNER__BOOTSTRAP_STEPS": "10", "VLALOOP_LEARNER__EPISODES_PER_ROUND": "2",
           "VLALOOP_LEARNER__RL_ROUNDS_PER_PHASE": str(rounds), "VLALOOP_LEARNER__SFT_STEPS": "5",
           "VLALOOP_MODEL__TINY_CACHE_DIR": str(tiny_dir), "VLALOOP_ROBOT__RATE_HZ": "5"}
    out = subprocess.run([sys.executable, "-m", "vlaloop.cli", "--run-dir", str(run_dir), "demo", "--robots", "1",
                          "--iterations", str(iterations), "--demos", "4", "--eval-episodes", "2"],
                         env=env, capture_output=True, text=True, timeout=860)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "ETA" in out.stdout
    assert (run_dir / "success_curve.png").stat().st_size > 10_000
    report = json.loads((run_dir / "report.json").read_text())
    state = json.loads((run_dir / "learner_state.json").read_text())
    assert report["complete"] and report["control"]["phases"] == iterations
    phases = [r for r in report["phases"] if r["phase"] in ("rl", "sft")]
    # exactly the configured iterations and rounds, each with the version the learner committed
    assert [(r["phase"], r["iteration"], r["round"], r["version"]) for r in phases] == [
        (e["phase"], e["iteration"], e["round"], e["version"]) for e in state["rounds"]]
    assert Counter((r["phase"], r["iteration"]) for r in phases) == {
        **{("rl", i): rounds for i in range(iterations)}, **{("sft", i): 1 for i in range(iterations)}}
    # each phase served what the one before it published (Stage 0 first)
    chain = [r for r in report["phases"] if r["phase"] in ("bootstrap", "rl", "sft")]
    assert chain[0]["phase"] == "bootstrap"
    assert [r["serving_version"] for r in chain[1:]] == [r["version"] for r in chain[:-1]]
    # every labelled robot episode of the store counted exactly once
    store = EpisodeStore(run_dir / "episodes")
    labelled = {f"{m['robot_id']}/{m['episode_id']}" for m in store.list_episodes()
                if m.get("source") in ("online", "eval") and m.get("outcome") in ("success", "failure")}
    counted = [k for r in report["phases"] for k in r["episodes"]]
    assert len(counted) == len(set(counted)) and set(counted) == labelled
    md = (run_dir / "report.md").read_text()
    assert md.count("| RL round") == iterations * rounds and md.count("| SFT |") == iterations
    assert "What the loop did" in md and "control: SFT phases alone" in md
    assert sorted(p.name for p in Path(run_dir, "logs").iterdir()) == ["learner.log", "robot0.log", "server.log"]
