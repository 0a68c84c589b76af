"""The reward-model bench (bench/reward_model.py) end to end at smoke size: Stage 0, a pool of mock
episodes with their classifier inputs, the table with the model and both baselines per labelled-set
size, summary.json and the curve PNG; a rerun reuses the cached inputs."""

import json

import pytest

from bench.reward_model import SMOKE, RewardBenchConfig, main

pytestmark = pytest.mark.slow  # about a minute: `pytest -m "not slow"` skips it


def test_smoke_run_prints_the_table_and_writes_the_curve(tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(["--smoke", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    cfg = RewardBenchConfig(**SMOKE)
    for n in cfg.sizes:
        for method in ("model", "prior", "majority"):
            assert f"| {n} | {method} |" in table
    summary = json.loads((out / "summary.json").read_text())
    rows = summary["rows"]
    assert len(rows) == 3 * len(cfg.sizes)
    assert all(0.0 <= r["auto_fraction"] <= 1.0 and 0.0 <= r["label_error"] <= r["auto_fraction"] for r in rows)
    majority = [r for r in rows if r["method"] == "majority"]
    assert all(r["auto_fraction"] == 1.0 for r in majority)  # labels everything, by definition
    assert (out / "reward_model.png").stat().st_size > 10_000
    inputs = sorted(p.name for p in out.glob("inputs-s*.npz"))
    assert inputs == ["inputs-s0.npz"]
    mtime = (out / "inputs-s0.npz").stat().st_mtime_ns
    assert main(["--smoke", "--out", str(out)]) == 0  # the rerun reuses the pool
    assert (out / "inputs-s0.npz").stat().st_mtime_ns == mtime
