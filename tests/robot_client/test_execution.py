"""The control loop's parts on their own: the tick schedule and the two execution strategies
(the loop around them: test_robot_client.py, test_robot_decisions.py)."""

from __future__ import annotations

import numpy as np
import pytest

from deployment.robot import RobotConfig
from robot_client.execution import Chunk, OpenLoop, TemporalEnsemble, execution_strategy
from robot_client.timing import TickSchedule


def chunk(start: int, value: float, n: int = 4, obs_tick: int | None = None) -> Chunk:
    return Chunk(np.full((n, 7), value), start, f"r{start}", -1.0, 0.0, 1, start if obs_tick is None else obs_tick)


def test_the_schedule_is_absolute_and_an_overrun_skips_the_missed_slots():
    s = TickSchedule(0.1, t0=10.0)
    assert s.deadline == 10.0
    assert s.advance(now=10.05) == 0 and s.tick == 1 and s.deadline == pytest.approx(10.1)
    assert s.advance(now=10.37) == 1 and s.tick == 3  # tick 2's slot (10.2) passed a whole period ago
    assert s.deadline == pytest.approx(10.3)


def test_the_config_picks_one_strategy_per_episode():
    assert isinstance(execution_strategy(RobotConfig(execution="open_loop")), OpenLoop)
    assert isinstance(execution_strategy(RobotConfig(execution="ensemble")), TemporalEnsemble)
    a, b = execution_strategy(RobotConfig()), execution_strategy(RobotConfig())
    a.adopt(chunk(0, 0.1), 0)
    assert b.chunks() == []  # each episode starts with no chunk


def test_open_loop_runs_one_chunk_asks_once_and_keeps_the_newest_observation():
    ex = OpenLoop(RobotConfig(execution="open_loop", prefetch_steps=1))
    assert ex.wants_query(0, -(10**9), waiting=False) and not ex.wants_query(0, 0, waiting=True)
    ex.adopt(chunk(2, 0.1), 2)
    assert not ex.has_action(1) and ex.has_action(2) and ex.has_action(5) and not ex.has_action(6)
    p = ex.action_for(3)
    assert p.on_policy and p.index == 1 and p.raw[0] == 0.1
    assert not ex.wants_query(4, 2, waiting=False) and ex.wants_query(5, 2, waiting=False)  # prefetch 1
    ex.adopt(chunk(1, 0.9), 5)  # computed from an older observation: not adopted
    assert ex.action_for(5).raw[0] == 0.1
    ex.clear()
    assert ex.action_for(3) is None and ex.longest_chunk() == 0


def test_the_ensemble_averages_every_covering_chunk_oldest_heaviest_and_is_not_on_policy():
    ex = TemporalEnsemble(RobotConfig(execution="ensemble", ensemble_decay=0.5))
    ex.adopt(chunk(0, 1.0), 0)
    ex.adopt(chunk(1, 3.0), 1)
    assert ex.has_action(1) and not ex.has_action(2)  # waits for the tick's own chunk
    w = np.exp(-0.5 * np.arange(2))
    p = ex.action_for(2)
    assert p.raw[0] == pytest.approx((w[0] * 1.0 + w[1] * 3.0) / w.sum())
    assert not p.on_policy and p.chunk.start_tick == 1 and p.index == 1
    ex.adopt(chunk(4, 5.0), 4)  # the first chunk (ticks 0..3) is over: dropped
    assert [c.start_tick for c in ex.chunks()] == [1, 4] and ex.action_for(4).raw[0] == pytest.approx(
        (w[0] * 3.0 + w[1] * 5.0) / w.sum())
