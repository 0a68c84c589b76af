"""The results bench on MetaWorld at smoke size: demos of the `demo` task set, Stage 0, SFT-only and
iRe-VLA-PPO from it, online episodes on the demo and RL tasks only, the table with the paper's
figures (real MuJoCo; episodes capped at a few steps)."""

import json

import pytest

import sim.metaworld  # noqa: F401  (sets MUJOCO_GL before mujoco is imported)

pytest.importorskip("metaworld")

from bench.learning import METAWORLD, METAWORLD_SMOKE, SMOKE, SPLITS, LearningBenchConfig, format_table, run  # noqa: E402
from bench.online_data import format_report, run_stats  # noqa: E402
from bench.per_task_eval import evaluate_version, pooled_report, runs_to_evaluate, wilson  # noqa: E402
from bench.per_task_eval import main as per_task_eval  # noqa: E402
from episodes.store import EpisodeStore  # noqa: E402
from sim.metaworld.tasks import TASK_SETS  # noqa: E402


@pytest.mark.slow
def test_metaworld_smoke_runs_the_protocol(tmp_path, capsys):
    cfg = LearningBenchConfig(**{**METAWORLD, **SMOKE, **METAWORLD_SMOKE})
    summary = run(cfg, tmp_path)
    assert set(summary) == {"sft_only", "irevla_ppo"}
    sets = TASK_SETS["bench"]
    demos = EpisodeStore(tmp_path / "stage0" / "s0" / "episodes").list_episodes(source="expert")
    assert len(demos) == cfg.demos + cfg.rl_task_demos
    assert {m["task"] for m in demos} <= set(sets["train"]) and all(m["backend"] == "metaworld" for m in demos)
    online = EpisodeStore(tmp_path / "runs" / "irevla_ppo-s0" / "episodes").list_episodes(source="online")
    assert len(online) == cfg.budget and {m["task"] for m in online} <= set(sets["train"])
    assert all(m["n_steps"] <= cfg.max_steps for m in online)
    r = json.loads((tmp_path / "results" / "irevla_ppo-s0.json").read_text())
    assert all(0.0 <= p[s] <= 1.0 for p in r["curve"] for s in SPLITS)
    table = format_table(summary, cfg)
    assert "iRe-VLA paper" in table and "metaworld" in table
    cells = [json.loads(x) for x in (tmp_path / "progress.jsonl").read_text().splitlines()]
    assert [(c["method"], c["iteration"]) for c in cells] == [("stage0", 0), ("sft_only", 0), ("irevla_ppo", 0)]
    # what the online episodes gave the SFT phase, per task, read back from the same store
    stats = run_stats(tmp_path / "runs" / "irevla_ppo-s0", per_iteration=cfg.budget)
    sampled = {t: s["iterations"][0]["episodes"] for t, s in stats.items() if s["iterations"]}
    assert sum(sampled.values()) == len(online) and set(sampled) == {m["task"] for m in online}
    for task, s in stats.items():
        assert s["demos"] == sum(m["task"] == task and m["outcome"] == "success" for m in demos)
        if s["iterations"]:
            wins = [m for m in online if m["task"] == task and m["outcome"] == "success"]
            assert s["iterations"][0]["successes"] == len(wins)
    report = format_report(tmp_path, cfg.budget)
    wins = sum(m["outcome"] == "success" for m in online)
    assert "`irevla_ppo-s0`" in report
    assert f"| `irevla_ppo-s0` | **all tasks** | {len(demos)} | {wins} / {len(online)} (" in report
    # the final versions task by task (bench.per_task_eval): Stage 0 first, then every finished job
    rows = runs_to_evaluate(tmp_path, None, None)
    assert [label for label, _ in rows] == ["Stage 0 s0", "irevla_ppo s0", "sft_only s0"]
    wins = evaluate_version(rows[1][1], sets["rl"], n=1, seed=20_000, max_steps=cfg.max_steps)
    assert set(wins) == set(sets["rl"]) and all(v in (0, 1) for v in wins.values())
    # the command keeps each version's counts: a second run evaluates nothing and prints the same
    capsys.readouterr()
    assert per_task_eval(["--out", str(tmp_path), "--n", "1"]) == 0
    cached = sorted((tmp_path / "per_task_eval" / "n1-from20000").glob("*.json"))
    assert [p.stem for p in cached] == ["Stage_0_s0", "irevla_ppo_s0", "sft_only_s0"]
    assert json.loads(cached[1].read_text())["wins"] == wins  # the same episodes: the same outcome
    stamps = [p.stat().st_mtime_ns for p in cached]
    first = capsys.readouterr().out
    assert per_task_eval(["--out", str(tmp_path), "--n", "1"]) == 0
    assert [p.stat().st_mtime_ns for p in cached] == stamps and capsys.readouterr().out == first


def test_wilson_interval():
    assert wilson(0, 40)[0] == 0.0 and 0.08 < wilson(0, 40)[1] < 0.09  # 0 of 40: up to ~9 %
    lo, hi = wilson(30, 40)
    assert lo < 0.75 < hi and round(lo, 2) == 0.60 and round(hi, 2) == 0.86


def test_pooled_report_sums_seeds_and_differences_from_the_control():
    counts = {"Stage 0 s0": {"a": 1, "b": 0}, "sft_only s0": {"a": 2, "b": 2}, "irevla_sac s0": {"a": 4, "b": 3},
              "Stage 0 s1": {"a": 0, "b": 1}, "sft_only s1": {"a": 3, "b": 1}, "irevla_sac s1": {"a": 4, "b": 2}}
    report = pooled_report(counts, n=4)
    # irevla_sac: 4+4 of 8 on a, 3+2 of 8 on b, 13 of 16 in all
    assert "| irevla_sac | 0, 1 | 8/8 | 5/8 | **0.81** (" in report
    assert "| sft_only | 0, 1 | 5/8 | 3/8 | **0.50** (" in report
    # per seed, in points of all-task success: (7 - 4) / 8 and (6 - 4) / 8; mean 31.2, smallest 25
    assert "| irevla_sac | +38 | +25 | +31.2 | +25 |" in report
    assert "| Stage 0 | -38 | -38 | -37.5 | -38 |" in report
