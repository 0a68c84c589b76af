"""Robot time on the learning bench's curves and table (bench/learning.py), checked against the
run's own episode store: executed steps x the control period + 10 s of reset per episode."""

import json

import pytest

from bench.learning import SMOKE, LearningBenchConfig, format_table, run
from episodes.store import EpisodeStore


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-robot-time")
    cfg = LearningBenchConfig(**{**SMOKE, "methods": ("irevla_ppo", "sft_extra_demos"), "rounds": 1})
    return cfg, out, run(cfg, out)


def _stored_robot_s(store: EpisodeStore, source: str, skip: int = 0) -> float:
    metas = sorted(store.list_episodes(source=source), key=lambda m: m["finished"])[skip:]
    return sum(m["n_steps"] * 0.1 + 10.0 for m in metas)  # mock: 10 Hz, charged a real arm's 10 s reset


def test_the_curve_counts_robot_hours_of_the_stored_episodes(bench):
    cfg, out, summary = bench
    r = json.loads((out / "results" / "irevla_ppo-s0.json").read_text())
    assert r["curve"][0]["robot_h"] == 0.0  # Stage 0: no robot episode yet (its demos come before the clock)
    store = EpisodeStore(out / "runs" / "irevla_ppo-s0" / "episodes")
    expected = _stored_robot_s(store, "online")
    assert len(store.list_episodes(source="online")) == cfg.budget
    assert r["curve"][-1]["robot_h"] == pytest.approx(expected / 3600)
    assert expected > cfg.budget * 10.0  # the control steps count, not only the resets
    assert summary["irevla_ppo"]["robot_h"] == pytest.approx(expected / 3600)


def test_extra_demos_cost_robot_time_too(bench):
    cfg, out, summary = bench
    store = EpisodeStore(out / "runs" / "sft_extra_demos-s0" / "episodes")
    # the Stage 0 demos are before the clock; the extra ones are teleoperated on the arm's time
    expected = _stored_robot_s(store, "expert", skip=cfg.demos + cfg.rl_task_demos)
    assert summary["sft_extra_demos"]["robot_h"] == pytest.approx(expected / 3600)
    table = format_table(summary, cfg)
    assert "robot h" in table and f"{expected / 3600:.2f}" in table
    png = (out / "learning_curves_robot_h.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
