"""`vlaloop demo` end to end at toy size: real processes and sockets, the scripted operator in the
robot client, the learner's phase record, a report segmented by it, the control and a curve at the
end. (The full-size run is `make demo`; this checks the orchestration and the bookkeeping, not the
learning: docs/demo.md has the measured runs.)"""

import json
import os
import re
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from episodes.status import PhaseLog, read_phase_log
from episodes.store import EpisodeStore
from vlaloop.report import attribute, headline, operator_rows, phase_table, success_table, summarize


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


def test_operator_work_per_round_and_the_headline_on_the_new_task():
    rows = [{"phase": "rl", "iteration": 0, "round": 0, "episodes": ["r/e0", "r/e1", "r/e2"]},
            {"phase": "sft", "iteration": 0, "round": 1, "episodes": ["r/e3"]},
            {"phase": "rl", "iteration": 1, "round": 0, "episodes": ["r/e4", "r/e5"]}]

    def meta(i, instruction, takeovers, driven, n_steps, outcome="failure", source="online"):
        return {"robot_id": "r", "episode_id": f"e{i}", "instruction": instruction, "outcome": outcome,
                "source": source, "mode": "greedy" if source == "eval" else "sample", "n_steps": n_steps,
                "intervention_steps": driven, "extra": {"counters": {"takeovers": takeovers}}}

    metas = [meta(0, "reach the blue block", 2, 16, 30), meta(1, "reach the red block", 1, 8, 20, "success"),
             meta(2, "reach the blue block", 0, 0, 30, "success"), meta(3, "reach the blue block", 0, 0, 9, "success",
                                                                        source="eval"),
             meta(4, "reach the blue block", 1, 8, 12, "success"), meta(5, "reach the green block", 0, 0, 7, "success")]
    ops = operator_rows(rows, metas, ("blue",), period_s=0.1)
    assert [(o["episodes"], o["takeovers"], o["intervention_steps"], o["steps"]) for o in ops] == [(3, 3, 24, 80),
                                                                                                    (2, 1, 8, 19)]
    assert ops[0]["takeovers_per_episode"] == 1.0 and ops[1]["takeovers_per_episode"] == 0.5
    assert abs(ops[0]["operator_s"] - (2.4 + 3 * 2.0)) < 1e-9 and abs(ops[1]["operator_s_total"] - 11.2) < 1e-9
    assert [(o["new_task_episodes"], o["new_task_driven"], o["new_task_successes"], o["new_task_alone"])
            for o in ops] == [(2, 1, 1, 1), (1, 1, 1, 0)]
    curve = [{"phase": "bootstrap", "iteration": None, "episodes": 0, "version": 1, "n": 50, "demo": 0.3, "rl": 0.0},
             {"phase": "rl", "iteration": 0, "episodes": 3, "version": 4, "n": 50, "demo": 0.2, "rl": 0.1},
             {"phase": "sft", "iteration": 0, "episodes": 3, "version": 5, "n": 50, "demo": 0.5, "rl": 0.62}]
    control = {"curve": [{"phase": 1, "n": 50, "demo": 0.48, "rl": 0.0}], "phases": 1, "n": 50}
    text = headline(curve, control, ops, ("blue",), "scripted")
    assert text.startswith("**The new task (blue block, no demos): greedy success 0% -> 62% after 3 sampled robot episodes (5 collected)")
    assert "stepping in 4 times (32 of 99 steps, 32.3%; 11 operator-seconds)" in text and "operator) 0%.**" in text
    table = success_table(curve, control, 3)
    assert "| iteration 1, after SFT (v5) | 3 | 62% | 50% | 0% | 48% |" in table
    assert "| Stage 0 (v1) | 0 | 0% | 30% | 0% | 30% |" in table


@pytest.mark.slow  # 196 s at load 12 on 2 cores: five processes importing torch, the control, 9 evaluations
@pytest.mark.timeout(900)
def test_toy_demo_report_matches_the_learners_history(tmp_path, tiny_dir):
    run_dir = tmp_path / "demo"
    iterations, rounds = 2, 1
    # 5 Hz: room for a slow reply on a loaded machine (the bookkeeping, not the control rate, is tested);
    # a looser operator budget, so the scripted operator surely takes over within the toy's few steps
    env = {**os.environ, "VLALOOP_LEARNER__EPISODES_PER_ROUND": "2", "VLALOOP_LEARNER__RL_ROUNDS_PER_PHASE": str(rounds),
           "VLALOOP_LEARNER__SFT_STEPS": "3", "VLALOOP_LEARNER__SAC_UPDATES_PER_EPISODE": "2",
           "VLALOOP_MODEL__TINY_CACHE_DIR": str(tiny_dir), "VLALOOP_ROBOT__RATE_HZ": "5",
           "VLALOOP_ROBOT__MAX_STEPS": "12",  # short episodes: 2.4 s at 5 Hz
           "VLALOOP_ROBOT__SCRIPTED_OPERATOR": "{budget_fraction: 0.5, grace_steps: 1}"}
    out = subprocess.run([sys.executable, "-m", "vlaloop.cli", "--run-dir", str(run_dir), "demo", "--robots", "1",
                          "--iterations", str(iterations), "--demos", "4", "--bootstrap-steps", "5",
                          "--eval-episodes", "2", "--seed", "3"],
                         env=env, capture_output=True, text=True, timeout=860)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    assert "ETA" in out.stdout
    assert (run_dir / "success_curve.png").stat().st_size > 10_000
    report = json.loads((run_dir / "report.json").read_text())
    state = json.loads((run_dir / "learner_state.json").read_text())
    assert report["complete"] and report["seed"] == 3 and len(report["control"]["curve"]) == iterations
    # Stage 0, then the end of each RL phase and each SFT phase, evaluated per task on the same seeds
    assert [(p["phase"], p["version"]) for p in report["curve"]] == [("bootstrap", 1)] + [
        (e["phase"], e["version"]) for e in state["rounds"]]  # one RL round per phase here
    assert all(set(p) >= {"demo", "rl", "n"} for p in report["curve"] + report["control"]["curve"])
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
    robot = [m for m in store.list_episodes() if m.get("source") in ("online", "eval")]
    labelled = {f"{m['robot_id']}/{m['episode_id']}" for m in robot if m.get("outcome") in ("success", "failure")}
    counted = [k for r in report["phases"] for k in r["episodes"]]
    assert len(counted) == len(set(counted)) and set(counted) == labelled
    # no demo of the new task; the operator's work in the report is what the store holds
    assert not [m for m in store.list_episodes(source="expert") if "blue" in m["instruction"].split()]
    ops = report["operator_rounds"]
    in_rounds = {k for r in report["phases"] if r["phase"] == "rl" for k in r["episodes"]}
    sampled = [m for m in robot if f"{m['robot_id']}/{m['episode_id']}" in in_rounds and m.get("mode") == "sample"]
    assert sum(o["intervention_steps"] for o in ops) == sum(m["intervention_steps"] for m in sampled)
    assert sum(o["takeovers"] for o in ops) == sum(m["extra"]["counters"].get("takeovers", 0) for m in sampled) >= 1
    assert all(m["extra"]["counters"].get("takeovers", 0) <= 2 for m in robot)
    assert not [m for m in robot if m.get("mode") == "greedy" and m["intervention_steps"]]
    md = (run_dir / "report.md").read_text()
    assert len(re.findall(r"\| RL round \d+/", md)) == iterations * rounds and md.count("| SFT |") == iterations
    assert "**The new task (blue block, no demos): greedy success" in md and "the control (the same" in md
    assert sorted(p.name for p in Path(run_dir, "logs").iterdir()) == ["learner.log", "robot0.log", "server.log"]
