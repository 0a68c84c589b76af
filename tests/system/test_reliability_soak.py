"""A 20-second version of bench/soak.py: two mock robots at 10 Hz against a real `vlaloop serve` and
`vlaloop learn --no-train`. Every episode a robot ended is stored, the robots keep (close to) their
rate and /v1/act answers well inside the robots' reply deadline."""

from __future__ import annotations

import pytest

from bench.soak import run, table

pytestmark = pytest.mark.slow  # minutes, not seconds: `pytest -m "not slow"` skips it


def test_short_soak_loses_nothing_and_keeps_the_rate(tmp_path):
    r = run(robots=2, rate=10.0, minutes=20 / 60, run_dir=tmp_path / "soak", sample_s=2.0)
    print("\n" + table(r))
    assert r["episodes_ended"] >= 4
    assert r["episodes_lost"] == 0 and r["episodes_stored"] == r["episodes_ended"]
    assert r["steps_per_s_per_robot"] >= 7.0  # 10 Hz target; generous for a loaded 2-core test machine
    assert r["latency_p99_ms_median"] is not None and r["latency_p99_ms_median"] < 1000.0  # reply deadline
    for name, m in r["memory"].items():
        assert m["end_mb"] is not None and m["end_mb"] < 2048, name
