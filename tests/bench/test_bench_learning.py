"""The results bench (bench/learning.py) end to end at smoke size: every method from one Stage 0,
the demo/rl/held-out split, results saved per job (and reused on a rerun), table, summary, PNG."""

import json

import pytest

from bench.learning import METHODS, SMOKE, SPLITS, LearningBenchConfig, format_table, run
from episodes.store import EpisodeStore
from sim.mock.tasks import sample_episode
from vla.advantage import META_KEY
from vla.registry import CheckpointRegistry

pytestmark = pytest.mark.slow  # minutes, not seconds: `pytest -m "not slow"` skips it


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-learning")
    cfg = LearningBenchConfig(**SMOKE)
    return cfg, out, run(cfg, out)


def test_every_method_runs_from_the_same_stage0(smoke):
    cfg, out, summary = smoke
    assert set(summary) == set(METHODS)
    results = {m: json.loads((out / "results" / f"{m}-s0.json").read_text()) for m in METHODS}
    starts = {json.dumps({s: r["curve"][0][s] for s in SPLITS}) for r in results.values()}
    assert len(starts) == 1  # one Stage 0, evaluated on the same seeds, for every method
    for m, r in results.items():
        assert r["curve"][-1]["episodes"] == cfg.budget, m
        assert all(0.0 <= p[s] <= 1.0 for p in r["curve"] for s in SPLITS)
        assert r["train_s"] > 0 and r["n_updates"] > 0 and r["updates_per_s"] > 0
    assert len(results["rl_only"]["curve"]) == 1 + cfg.iterations * cfg.rounds  # a point per round
    assert len(results["irevla_ppo"]["curve"]) == 1 + cfg.iterations * (cfg.rounds + 1)  # + one per SFT
    assert len(results["sft_only"]["curve"]) == 1 + cfg.iterations
    assert all(r["logprob_mismatch"] == 0 for r in results["irevla_ppo"]["rounds"])
    online = summary["rl_only"]["online"]  # read back from the run's episode store
    assert online["demo"]["episodes"] + online["rl"]["episodes"] == cfg.budget and online["held_out"]["episodes"] == 0
    assert "online" not in summary["sft_only"]


def test_methods_train_what_they_claim(smoke):
    cfg, out, _ = smoke
    demo_tasks = {sample_episode(s, cfg.task, "demo").task.color for s in range(40)}
    stage0 = EpisodeStore(out / "stage0" / "s0" / "episodes").list_episodes(source="expert")
    colours = [m["instruction"].split()[-2] for m in stage0]
    assert demo_tasks == {"red", "green"}
    assert sum(c in demo_tasks for c in colours) == cfg.demos  # the demo split ...
    assert colours.count("blue") == cfg.rl_task_demos  # ... a few of the RL-only task, never yellow
    runs = out / "runs"
    extra = EpisodeStore(runs / "sft_extra_demos-s0" / "episodes").list_episodes(source="expert")
    assert len(extra) == cfg.demos + cfg.rl_task_demos + cfg.budget  # as many extra demos as the others got episodes
    only = EpisodeStore(runs / "sft_only-s0" / "episodes").list_episodes()
    assert len(only) == cfg.demos + cfg.rl_task_demos  # no new data at all
    whole = CheckpointRegistry(runs / "ppo_whole-s0" / "checkpoints")
    head = CheckpointRegistry(runs / "rl_only-s0" / "checkpoints")
    rounds = cfg.iterations * cfg.rounds
    assert [whole.read_meta(v)["kind"] for v in whole.versions()][1:] == ["full"] * rounds  # backbone moved
    assert [head.read_meta(v)["kind"] for v in head.versions()][1:] == ["head"] * rounds
    recap, awr = (CheckpointRegistry(runs / f"{m}-s0" / "checkpoints") for m in ("recap", "awr"))
    assert META_KEY in recap.read_meta(recap.latest())  # RECAP: served with the indicator
    assert META_KEY not in awr.read_meta(awr.latest())  # AWR on the same data: an ordinary policy


def test_outputs_and_resume(smoke, capsys):
    cfg, out, summary = smoke
    png = (out / "learning_curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    table = (out / "table.md").read_text()
    assert table.startswith(format_table(summary, cfg))  # the table, then a row per method and seed
    assert "Per seed (" in table and all(f"| `{m}` | 0 | {cfg.iterations} / {cfg.iterations} |" in table
                                         for m in METHODS)
    assert all(f"`{m}`" in table for m in METHODS)
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "results").iterdir()}
    again = run(cfg, out)  # every job has a saved result: nothing reruns
    assert {p.name: p.stat().st_mtime_ns for p in (out / "results").iterdir()} == stamps
    assert again == summary
    with pytest.raises(SystemExit, match="another configuration"):
        run(LearningBenchConfig(**{**SMOKE, "sft_steps": 5}), out)
    with pytest.raises(ValueError, match="unknown method"):
        run(LearningBenchConfig(**{**SMOKE, "methods": ("sft_only", "magic")}), out / "x")


def test_vlaloop_bench_passes_options_through():
    from vlaloop.cli import build_parser

    args = build_parser("bench").parse_args(["bench", "learning", "--smoke", "--out", "x", "--seeds", "1", "2"])
    assert args.name == "learning" and args.rest == ["--smoke", "--out", "x", "--seeds", "1", "2"]
