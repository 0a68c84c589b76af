"""A short run of bench/faults.py on the real processes: two mock robots, `vlaloop serve` and
`vlaloop learn --no-train`, with a kill -9 of the server, of the learner and of a robot, a ZeroMQ
black hole and a slow server. Nothing may be lost or duplicated and the arm may never move on a
stale or missing action. Then the audit itself is shown to fail on doctored evidence (a reply that
came too late, a reply that never came), so its zeros mean something."""

from __future__ import annotations

import json

import pytest

from bench.faults import Options, audit, run

pytestmark = pytest.mark.slow  # minutes, not seconds: `pytest -m "not slow"` skips it


@pytest.fixture(scope="module")
def fault_run(tmp_path_factory):
    opt = Options(robots=2, cycles=5, seed=1, sequential=True, rate_hz=10.0, max_steps=20,
                  faults=("kill_server", "blackhole", "kill_learner", "slow_server", "kill_robot"),
                  fault_s=(1.5, 2.0), gap_s=(1.0, 1.5), healthy_end_s=3.0,
                  run_dir=tmp_path_factory.mktemp("faults") / "run")
    return opt, run(opt)


def test_nothing_lost_duplicated_or_moved_on_stale_actions(fault_run):
    opt, r = fault_run
    print("\n" + json.dumps({k: v for k, v in r.items() if k not in ("cycles", "lost")}, indent=None))
    assert [c["fault"] for c in r["cycles"]] == list(opt.faults)
    assert r["episodes_started"] >= 4 and r["moves"] >= 100
    assert r["episodes_lost"] == 0, r["lost"]
    assert r["episodes_stored"] == r["episodes_started"]
    assert r["duplicated_steps"] == 0 and r["step_gaps"] == 0 and r["episodes_short"] == 0
    assert r["moved_on_stale"] == 0 and r["moved_on_missing"] == 0
    assert r["act_replies_delayed"] > 0  # the slow server did delay replies past the deadline
    assert r["unexpected_exits"] == []
    # the killed robot's open episode was closed as aborted on its restart
    assert r["end_reasons"].get("client_crashed", 0) >= 1


def test_the_audit_catches_late_and_missing_replies(fault_run):
    opt, r = fault_run
    act_log = json.loads((opt.run_dir / "act_log.json").read_text())
    events = json.loads((opt.run_dir / "events.json").read_text())
    used = [e for e in act_log if e["actions"] and e["delay_s"] == 0]
    # a reply that left the server after the deadline, had the robot executed it
    late = [dict(e) for e in act_log]
    target = next(i for i, e in enumerate(late) if e is not None and e["actions"] and e["delay_s"] == 0
                  and e["request_id"] == used[len(used) // 2]["request_id"])
    late[target]["t_reply"] = late[target]["t_capture"] + opt.reply_deadline_s + 0.5
    assert audit(opt.run_dir, late, opt, events)["moved_on_stale"] >= 1
    # a chunk no reply carried (the reply is missing from the evidence)
    missing = [e for i, e in enumerate(act_log) if i != target]
    assert audit(opt.run_dir, missing, opt, events)["moved_on_missing"] >= 1
