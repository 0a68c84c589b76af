"""The results bench survives a kill: `python -m bench.learning` (a real process group) is killed
with SIGKILL in the middle of a job, rerun with the same command, and finishes the table without
redoing what was done: the finished job's result file is untouched, the cut job goes on from its
last finished iteration, and the episodes of the iteration that was cut short are not kept twice."""

import dataclasses
import json
import os
import signal
import subprocess

import pytest
from standins import PY, ROOT

from bench.learning import (
    SMOKE,
    LearningBenchConfig,
    _config_differences,
    format_per_seed,
    partial_curves,
    plot,
)
from episodes.store import EpisodeStore

pytestmark = pytest.mark.slow  # ~1 min on two busy cores: two bench processes, Stage 0 and 2 jobs


def _cmd(out):
    return [PY, "-m", "bench.learning", "--smoke", "--out", str(out), "--methods", "sft_only", "irevla_ppo",
            "--iterations", "2"]


def test_a_killed_table_resumes_where_it_stopped(tmp_path):
    out = tmp_path / "table"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(_cmd(out), cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    seen, saved_iteration = [], False
    try:
        for line in proc.stdout:
            seen.append(line)
            saved_iteration |= "last: irevla_ppo seed 0 iteration 0" in line
            if saved_iteration and "[irevla_ppo s0] {" in line and "'it1 rl0'" in line:
                # a second run on the same OUT is refused while this one runs ...
                second = subprocess.run(_cmd(out), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
                assert second.returncode != 0 and "in use by another bench.learning run" in second.stderr
                break  # ... which is killed here, mid-iteration 1 (a round collected and trained)
        else:
            pytest.fail("the bench ended before the point to kill it:\n" + "".join(seen))
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the bench and its worker process, as a crash would
        proc.wait()
    finished = (out / "results" / "sft_only-s0.json").read_bytes()
    assert not (out / "results" / "irevla_ppo-s0.json").exists()
    cfg = LearningBenchConfig(**{**SMOKE, "methods": ("sft_only", "irevla_ppo"), "iterations": 2})
    per_seed = format_per_seed(cfg, out)  # `--report`'s rows per seed, a job still running marked
    assert "4 of 5 cells done" in per_seed and "| `irevla_ppo` | 0 | 1 / 2 (running) |" in per_seed
    assert "| `sft_only` | 0 | 2 / 2 |" in per_seed
    running = partial_curves(cfg, out)  # the cut job's curve so far, for the plot of a running table
    assert [(r["method"], r["curve"][0]["phase"], r["curve"][-1]["phase"]) for r in running] == [
        ("irevla_ppo", "stage0", "it0 sft")]
    plot(running, cfg, tmp_path / "running.png")
    assert (tmp_path / "running.png").stat().st_size > 0
    rerun = subprocess.run(_cmd(out), cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    assert "[irevla_ppo s0] resumed after iteration 1 of 2" in rerun.stdout
    assert "[sft_only s0]" not in rerun.stdout
    assert (out / "results" / "sft_only-s0.json").read_bytes() == finished  # not redone
    r = json.loads((out / "results" / "irevla_ppo-s0.json").read_text())
    cfg = r["config"]
    budget = cfg["iterations"] * cfg["rounds"] * cfg["episodes_per_round"]
    phases = [p["phase"] for p in r["curve"]]
    assert phases == ["stage0"] + [f"it{i} {ph}" for i in range(2) for ph in ("rl0", "rl1", "sft")]
    assert [p["episodes"] for p in r["curve"]][-1] == budget
    online = EpisodeStore(out / "runs" / "irevla_ppo-s0" / "episodes").list_episodes(source="online")
    assert len(online) == budget  # the cut iteration's episodes were dropped, then made once
    cells = [json.loads(x) for x in (out / "progress.jsonl").read_text().splitlines()]
    keys = [(c["method"], c["seed"], c["iteration"]) for c in cells]
    assert len(keys) == len(set(keys)) == 1 + 2 * 2  # Stage 0 + 2 methods x 2 iterations, each once
    assert "ETA" in rerun.stdout


def test_a_table_resumes_with_a_method_or_seed_added_but_not_with_other_settings():
    saved = json.loads(json.dumps(dataclasses.asdict(LearningBenchConfig(**SMOKE))))
    more = LearningBenchConfig(**{**SMOKE, "methods": ("sft_only", "recap"), "seeds": (0, 1), "jobs": 2})
    assert _config_differences(saved, more) == []  # which cells, and how many at once: not what a cell holds
    other = LearningBenchConfig(**{**SMOKE, "sft_steps": SMOKE["sft_steps"] + 1, "methods": ("recap",)})
    assert _config_differences(saved, other) == ["sft_steps"]
