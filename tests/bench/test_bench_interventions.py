"""The interventions bench (bench/interventions.py) end to end at smoke size: every method from one
Stage 0 with no demos of the RL task, interventions within the budget, the demo-matched controls
spending no more operator seconds than the HIL run they match, the table, and resume."""

import json

import pytest

from bench.interventions import METHODS, SMOKE, SMOKE_INTERVENTION, InterventionBenchConfig, format_table, run
from episodes.store import EpisodeStore
from sim.intervener import InterventionConfig

pytestmark = pytest.mark.slow  # ~1 min on two loaded cores (5 methods from one Stage 0)


@pytest.fixture(scope="module")
def smoke(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-interventions")
    cfg = InterventionBenchConfig(**SMOKE, intervention=InterventionConfig(**SMOKE_INTERVENTION))
    return cfg, out, run(cfg, out)


def test_methods_and_operator_time(smoke):
    cfg, out, summary = smoke
    assert set(summary) == set(METHODS) and cfg.rl_task_demos == 0
    hil = json.loads((out / "results" / "irevla_ppo_hil-s0.json").read_text())
    assert 0 < hil["ops"]["intervention_steps"] <= cfg.intervention.budget_fraction * hil["ops"]["steps"] + 4
    assert hil["curve"][-1]["episodes"] == cfg.budget
    plain = json.loads((out / "results" / "irevla_ppo-s0.json").read_text())
    assert plain["ops"]["intervention_steps"] == 0 and plain["ops"]["teleop_s"] == 0
    stores = {m: EpisodeStore(out / "runs" / f"{m}-s0" / "episodes") for m in METHODS}
    steps = [s for m in stores["irevla_ppo_hil"].list_episodes(source="online")
             for s in stores["irevla_ppo_hil"].load(m["robot_id"], m["episode_id"]).steps if s.get("intervention")]
    assert len(steps) == hil["ops"]["intervention_steps"]
    for method, key in (("demos_same_time", "operator_s"), ("demos_same_teleop", "teleop_s")):
        r = json.loads((out / "results" / f"{method}-s0.json").read_text())
        spent, target = r["curve"][-1]["operator_s"], hil["curve"][-1][key]
        blue = [m for m in stores[method].list_episodes(source="expert") if "blue" in m["instruction"]]
        assert r["ops"]["demos"] == len(blue) > 0  # demos of the RL task, none before
        assert not stores[method].list_episodes(source="online")
        assert spent <= target + cfg.cost.demo_overhead_s + 30 * cfg.cost.control_period_s  # at most one demo over


def test_table_and_resume(smoke):
    cfg, out, summary = smoke
    png = (out / "curves.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    table = (out / "table.md").read_text()
    assert table.strip() == format_table(summary, cfg)
    assert all(f"`{m}`" in table for m in METHODS) and "Costing:" in table
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "results").iterdir()}
    assert run(cfg, out) == summary  # every job saved: nothing reruns
    assert {p.name: p.stat().st_mtime_ns for p in (out / "results").iterdir()} == stamps
    with pytest.raises(ValueError, match="need irevla_ppo_hil"):
        run(InterventionBenchConfig(**{**SMOKE, "methods": ("demos_same_time",)}), out / "x")
