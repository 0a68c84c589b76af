"""`vlaloop report RUN_DIR` (the real CLI, a subprocess) on a lab's own run: the robots' episodes
in a real store, the learner's phase record and its status.json, none of the demo's files. It
writes report.md, report.json and a success curve; a demo's run gets the demo's report again; a
directory that is not a run gets one clear line."""

from __future__ import annotations

import json
import struct
import subprocess

import pytest
from standins import PY, ROOT

from episodes.status import PHASE_LOG, PhaseLog, StatusBoard
from episodes.store import EpisodeStore

# (episode, first version, outcome, mode, operator steps, takeovers): v1 served RL round 1, v2 round 2
EPISODES = [("e0", 1, "success", "sample", 4, 1), ("e1", 1, "failure", "sample", 0, 0),
            ("e2", 1, "failure", "sample", 6, 2), ("e3", 2, "success", "sample", 0, 0),
            ("e4", 2, "success", "sample", 2, 1), ("e5", 3, "failure", "greedy", 0, 0),
            ("e6", 2, "aborted", "sample", 0, 0)]


def _lab_run(run_dir):
    store = EpisodeStore(run_dir / "episodes")
    for episode, version, outcome, mode, driven, takeovers in EPISODES:
        for step in range(10):
            store.append_step("arm0", episode, step, {"policy_version": version, "intervention": step < driven},
                              {"wrist": b"\xff\xd8 not decoded here"})
        store.finish("arm0", episode, {
            "source": "eval" if mode == "greedy" else "online", "outcome": outcome, "label_source": "operator",
            "n_steps": 10, "instruction": "put the cup on the plate", "mode": mode, "first_policy_version": version,
            "policy_versions": [version], "intervention_steps": driven, "extra": {"counters": {"takeovers": takeovers}}})
    log, t = PhaseLog(run_dir / PHASE_LOG), 1000.0
    for phase, rnd, serving, version in (("bootstrap", 0, None, 1), ("rl", 0, 1, 2), ("rl", 1, 2, 3), ("sft", 2, 3, 4)):
        log.append({"event": "start", "phase": phase, "iteration": 0, "round": rnd, "serving_version": serving, "time": t})
        log.append({"event": "end", "phase": phase, "iteration": 0, "round": rnd, "version": version,
                    "trained_on": [], "collected": [], "time": t + 60})
        t += 60
    StatusBoard(run_dir / "status.json").set(phase="sft", iteration=0, policy_version=4, detail="SFT phase")


def _report(cwd, *argv):
    return subprocess.run([PY, "-m", "vlaloop.cli", *argv], cwd=cwd, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})


def _png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", data[16:24])


def test_a_labs_own_run_gets_a_report_and_a_curve(tmp_path):
    run_dir = tmp_path / "demo"  # named like a subcommand: `--run-dir demo report` is still the report
    _lab_run(run_dir)
    r = _report(tmp_path, "--run-dir", "demo", "report")
    assert r.returncode == 0, r.stderr[-3000:]
    md = (run_dir / "report.md").read_text()
    assert md.startswith("# vlaloop run report")
    assert ("**6 labelled robot episodes (5 sampled, 1 greedy), 3 successes; sampled-episode success 33% in the "
            "first phase with any -> 100% in the last;") in md
    assert "took over 4 times in RL rounds (12 steps" in md and "policy v4" in md
    assert "| 1 | RL round 1/2 | v1 | v2 | 3 (33%) | - |" in md and "| 1 | SFT | v3 | v4 | - | 1 (0%) |" in md
    assert "| 1 | 1/2 | 3 | 3 (1.00) | 10 (33.3%) |" in md and "new task" not in md
    assert "1 episodes without a success/failure label" in md  # the aborted one
    assert _png_size(run_dir / "success_curve.png") == (1320, 528)
    report = json.loads((run_dir / "report.json").read_text())
    assert report["kind"] == "run" and sum(r["sampled"] + r["greedy"] for r in report["phases"]) == 6
    # robot time: all 7 robot episodes (the aborted one too) x 10 steps at 0.1 s + a 10 s reset each;
    # operator: 12 driven steps at 0.1 s + 4 takeovers x 2 s
    spent = report["robot_time"]
    assert (spent["episodes"], spent["steps"]) == (7, 70)
    assert spent["robot_s"] == pytest.approx(7.0 + 70.0) and spent["operator_s"] == pytest.approx(1.2 + 8.0)
    assert "**1.3 robot-minutes** (0.1 min of control + 1.2 min of resets" in md
    assert "**0.2 operator-minutes**" in md


def test_a_demo_run_gets_the_demos_report_again(tmp_path):
    run_dir = tmp_path / "run"
    _lab_run(run_dir)
    curve = [{"phase": "bootstrap", "iteration": None, "episodes": 0, "version": 1, "n": 10, "rl": 0.0, "demo": 0.5},
             {"phase": "sft", "iteration": 0, "episodes": 5, "version": 4, "n": 10, "rl": 0.4, "demo": 0.6}]
    control = {"curve": [{"phase": 1, "version": 5, "n": 10, "rl": 0.1, "demo": 0.55}], "phases": 1}
    (run_dir / "report.json").write_text(json.dumps({"complete": True, "seed": 0, "wall_s": 100.0,
                                                     "operator": "scripted", "new_task": ["blue"], "period_s": 0.1,
                                                     "rl_rounds": 2, "curve": curve, "control": control}))
    r = _report(tmp_path, "report", str(run_dir))
    assert r.returncode == 0, r.stderr[-3000:]
    md = (run_dir / "report.md").read_text()
    assert md.startswith("# vlaloop demo report") and "greedy success 0% -> 40%" in md and "control" in md
    assert json.loads((run_dir / "report.json").read_text())["curve"] == curve
    assert "**1.3 robot-minutes**" in md and "**0.2 operator-minutes**" in md  # the demo's report counts them too
    assert json.loads((run_dir / "report.json").read_text())["robot_time"]["robot_s"] == pytest.approx(77.0)


@pytest.mark.parametrize("make, why", [(lambda d: d.mkdir(), "is not a run dir: it has no episodes/"),
                                       (lambda d: None, "does not exist")])
def test_a_directory_that_is_not_a_run_gets_one_line(tmp_path, make, why):
    make(tmp_path / "x")
    r = _report(tmp_path, "report", str(tmp_path / "x"))
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0
    assert r.stderr.startswith("vlaloop report: ") and why in r.stderr
