"""Robot time from a real EpisodeStore: control steps x period + reset per episode, operator time
where an operator drove, demos apart, the robot's own recorded period preferred."""

from __future__ import annotations

import pytest

from episodes.robot_time import RESET_S, RobotTimeConfig, cumulative_robot_s, robot_time
from episodes.store import EpisodeStore
from protocol.images import encode_jpeg


def _store_episode(store: EpisodeStore, robot: str, episode: str, n: int, driven: set[int] = frozenset(),
                   **meta) -> dict:
    import numpy as np

    jpg = encode_jpeg(np.zeros((8, 8, 3), np.uint8))
    for step in range(n):
        store.append_step(robot, episode, step, {"state": [0.0] * 7, "action": [0.0] * 7,
                                                 "intervention": step in driven}, {"front": jpg})
    store.finish(robot, episode, {"n_steps": n, "intervention_steps": len(driven), **meta})
    return store.read_meta(robot, episode)


@pytest.fixture
def store(tmp_path):
    s = EpisodeStore(tmp_path / "episodes")
    _store_episode(s, "expert", "demo0", 20, source="expert", outcome="success", task="reach")
    _store_episode(s, "sim0", "a", 30, outcome="failure", task="reach")
    # an operator drove steps 5..9 and 20..21: two takeovers, 7 steps, not counted by the robot
    _store_episode(s, "sim0", "b", 40, driven={5, 6, 7, 8, 9, 20, 21}, outcome="success", task="push",
                   label_source="operator")
    # a real robot records its loop period (20 Hz here) and its takeover counter
    _store_episode(s, "arm1", "c", 100, driven=set(range(10)), outcome="aborted", task="push",
                   extra={"timing": {"period_ms": 50.0}, "counters": {"takeovers": 1}})
    return s


def test_robot_and_operator_seconds_of_a_stored_run(store):
    t = robot_time(store.list_episodes(), RobotTimeConfig(period_s=0.1, reset_s=10.0, takeover_s=2.0), store)
    assert t.episodes == 3 and t.steps == 170
    assert t.control_s == pytest.approx(30 * 0.1 + 40 * 0.1 + 100 * 0.05)  # the arm's own 20 Hz period
    assert t.reset_s == pytest.approx(30.0)  # aborted episodes cost their reset too
    assert t.robot_s == pytest.approx(42.0) and t.robot_h == pytest.approx(42.0 / 3600)
    assert t.operator_s == pytest.approx(7 * 0.1 + 2 * 2.0 + 10 * 0.05 + 1 * 2.0)
    assert t.demo_episodes == 1 and t.demo_s == pytest.approx(20 * 0.1 + 10.0)
    assert t.per_task["push"]["episodes"] == 2
    assert t.per_task["push"]["robot_s"] == pytest.approx(4.0 + 10 + 5.0 + 10)
    assert t.per_task["reach"]["operator_s"] == 0.0


def test_labelling_counts_when_asked_and_without_a_store_a_driven_episode_is_one_takeover(store):
    metas = store.list_episodes()
    labelled = robot_time(metas, RobotTimeConfig(label_s=5.0), store).operator_s
    plain = robot_time(metas, RobotTimeConfig(), store).operator_s
    assert labelled - plain == pytest.approx(5.0)  # one operator-labelled episode
    no_store = robot_time(metas, RobotTimeConfig()).operator_s
    assert plain - no_store == pytest.approx(2.0)  # episode b: 1 takeover assumed instead of 2


def test_cumulative_robot_time_is_the_curve_axis(store):
    metas = store.list_episodes()
    axis = cumulative_robot_s(metas, RobotTimeConfig(period_s=0.1, reset_s=0.0))
    assert axis == pytest.approx([0.0, 3.0, 7.0, 12.0])  # the demo first (free), then a, b, c


def test_settings_per_backend_and_bad_settings():
    assert RESET_S == {"franka": 10.0, "mock": 10.0, "metaworld": 10.0}
    cfg = RobotTimeConfig.for_backend("metaworld", rate_hz=20.0, reset_s=0.0)
    assert cfg.period_s == 0.05 and cfg.reset_s == 0.0
    with pytest.raises(ValueError, match="unknown backend 'ur5' \\(known: franka, metaworld, mock\\)"):
        RobotTimeConfig.for_backend("ur5")
    with pytest.raises(ValueError, match="reset_s must be >= 0"):
        RobotTimeConfig(reset_s=-1.0)


def test_command_prints_the_run_table(store, tmp_path, capsys):
    from episodes.robot_time import main

    assert main(["--run-dir", str(tmp_path), "--reset-s", "10"]) == 0
    out = capsys.readouterr().out
    assert "| push | 2 | 0.1 | 0.3 | 0.5 | 0.1 |" in out  # 9 s control, 20 s reset, 7.2 s operator
    assert "| **all** | 3 | 0.2 | 0.5 | 0.7 | 0.1 |" in out and "170 executed steps" in out
    assert main(["--run-dir", str(tmp_path / "nowhere")]) == 2
    assert "no episode store at" in capsys.readouterr().out
