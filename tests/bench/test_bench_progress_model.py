"""The progress-model bench (bench/progress_model.py) at smoke size: demos, a pool and policy
episodes on the mock, the variant table with its controls, the stall table, summary.json; a rerun
reuses the recorded store."""

import json

import pytest

from bench.progress_model import RULES, VARIANTS, main

pytestmark = pytest.mark.slow  # about 30 s: `pytest -m "not slow"` skips it


def test_smoke_run_prints_both_tables(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["--smoke", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    for name in VARIANTS:
        assert f"| {name} |" in table
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["variants"]) == set(VARIANTS)
    assert len(summary["stall"]) == len(RULES)
    assert all(0 <= s["cut"] <= s["episodes"] == summary["counts"]["held"] for s in summary["stall"])
    assert summary["variants"]["model"]["voc_per_task"]["reach"]["episodes"] >= 1
    episodes = sorted(p.name for p in (out / "run" / "episodes" / "pool").iterdir())
    assert main(["--smoke", "--out", str(out)]) == 0  # the rerun records nothing new
    assert sorted(p.name for p in (out / "run" / "episodes" / "pool").iterdir()) == episodes


def test_smoke_run_on_a_stage0_policy(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["--smoke", "--stage0-steps", "4", "--out", str(out)]) == 0
    assert "Stage 0: 4 SFT steps" in capsys.readouterr().out
    meta = json.loads((out / "run-stage0-4" / "checkpoints" / "v000001" / "meta.json").read_text())
    assert meta["phase"] == "bootstrap"
    assert json.loads((out / "summary.json").read_text())["config"]["stage0_steps"] == 4
