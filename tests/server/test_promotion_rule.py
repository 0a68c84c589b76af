"""The promotion rule (server/promotion.py): the posterior probability against a Monte Carlo
estimate, each branch of the decision, the cap; the canary gate's assignment and label counting;
the registry's durable markers and the learner's resume version."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from deployment.promotion import PromotionConfig
from server.promotion import Canary, CanaryGate, Tally, decide, prob_not_worse


def monte_carlo(canary: Tally, control: Tally, margin: float, n: int = 400_000) -> float:
    rng = np.random.default_rng(0)
    pc = rng.beta(1 + canary.successes, 1 + canary.failures, n)
    pp = rng.beta(1 + control.successes, 1 + control.failures, n)
    return float(np.mean(pc >= pp - margin))


@pytest.mark.parametrize("canary,control,margin", [
    (Tally(0, 0), Tally(0, 0), 0.0), (Tally(3, 7), Tally(6, 4), 0.1), (Tally(0, 10), Tally(12, 8), 0.1),
    (Tally(30, 30), Tally(31, 29), 0.1), (Tally(55, 5), Tally(2, 58), 0.0), (Tally(1, 59), Tally(59, 1), 0.2)])
def test_prob_not_worse_matches_monte_carlo(canary, control, margin):
    assert prob_not_worse(canary, control, margin) == pytest.approx(monte_carlo(canary, control, margin), abs=4e-3)


def test_prob_not_worse_is_one_half_for_equal_tallies_and_grows_with_the_margin():
    t = Tally(8, 12)
    assert prob_not_worse(t, t, 0.0) == pytest.approx(0.5, abs=1e-3)
    qs = [prob_not_worse(t, t, m) for m in (0.0, 0.05, 0.1, 0.2)]
    assert qs == sorted(qs) and qs[-1] > 0.85


CONFIG = PromotionConfig(enabled=True, min_episodes=10, max_canary_episodes=40, margin=0.1,
                         promote_confidence=0.8, rollback_confidence=0.95)


def test_no_decision_before_min_episodes_per_arm():
    assert decide(Tally(0, 9), Tally(9, 0), CONFIG).action == "continue"   # canary short of 10
    assert decide(Tally(0, 10), Tally(9, 0), CONFIG).action == "continue"  # control short of 10


def test_a_clearly_worse_canary_is_rolled_back_at_the_minimum():
    d = decide(Tally(0, 10), Tally(7, 3), CONFIG)
    assert d.action == "rollback" and d.prob_not_worse < 0.05 and "worse by more than 0.1" in d.reason


def test_a_canary_as_good_is_promoted():
    d = decide(Tally(14, 6), Tally(13, 7), CONFIG)
    assert d.action == "promote" and d.prob_not_worse >= 0.8


def test_undecided_continues_until_the_cap_then_rolls_back():
    # slightly worse: neither promote nor clear rollback at 20 episodes
    d = decide(Tally(9, 11), Tally(12, 8), CONFIG)
    assert d.action == "continue" and 0.05 < d.prob_not_worse < 0.8
    d = decide(Tally(16, 24), Tally(20, 20), CONFIG)  # the cap (40 canary labels)
    assert d.action == "rollback" and "cap of 40" in d.reason


def test_at_the_cap_a_control_short_of_the_minimum_does_not_block_the_decision():
    assert decide(Tally(0, 40), Tally(3, 2), CONFIG).action == "rollback"


def test_config_is_checked():
    with pytest.raises(ValidationError):
        PromotionConfig(min_episodes=20, max_canary_episodes=10)
    with pytest.raises(ValidationError):
        PromotionConfig(canary_fraction=0.8)  # the control must get at least as many episodes
    with pytest.raises(ValidationError):
        PromotionConfig(margni=0.1)
    assert all(f.description for f in PromotionConfig.model_fields.values()), "every field documented"


def test_gate_assigns_each_episode_once_and_counts_only_its_window():
    gate = CanaryGate(PromotionConfig(enabled=True, canary_fraction=0.5, seed=1))
    assert gate.assign("r0", "before", 1) == 1       # no canary: the promoted version
    gate.start(Canary(version=2, control=1))
    drawn = [gate.assign("r0", f"e{i}", 1) for i in range(200)]
    assert set(drawn) == {1, 2} and 70 < drawn.count(2) < 130
    assert all(gate.assign("r0", f"e{i}", 1) == v for i, v in enumerate(drawn))  # sticky per episode
    gate.record_label("r0", "before", "success")      # assigned before the canary: not counted
    for i, v in enumerate(drawn[:20]):
        gate.record_label("r0", f"e{i}", "failure" if v == 2 else "success")
    gate.record_label("r0", "e0", "success")          # a second label for an episode never counts
    gate.record_label("r0", "e21", "discard")
    snap = gate.snapshot()
    assert snap.canary == Tally(0, drawn[:20].count(2)) and snap.promoted == Tally(drawn[:20].count(1), 0)
    gate.pause(True)                                  # an operator pin: nothing counts meanwhile
    assert gate.decision() is None
    gate.record_label("r0", "e30", "success")
    gate.pause(False)
    gate.record_label("r0", "e31", "success")         # assigned before the pause: not counted
    assert gate.snapshot().promoted.n + gate.snapshot().canary.n == 20


def test_gate_serves_the_promoted_version_when_the_canary_was_drawn_against_another_control():
    gate = CanaryGate(PromotionConfig(enabled=True, canary_fraction=0.5))
    gate.start(Canary(version=5, control=3))
    assert {gate.assign("r", f"e{i}", 4) for i in range(30)} == {4}


# ---------------------------------------------------------------- registry markers


def _fake_versions(registry, parents: dict[int, int | None]) -> None:
    """meta.json only: enough for the markers and the parent walk."""
    import json

    for v, parent in parents.items():
        d = registry.path(v)
        d.mkdir(parents=True)
        meta = {"version": v, "kind": "head", "parent": parent, "base_version": 1, "backbone_id": "x",
                "backbone_hash": "h", "created": "", "phase": "rl", "metrics": {}, "model_config": {}, "files": {}}
        (d / "meta.json").write_text(json.dumps(meta))
    registry._write_latest(max(parents))


def test_registry_markers_and_the_learners_resume_version(tmp_path):
    from vla.registry import CheckpointRegistry

    reg = CheckpointRegistry(tmp_path / "checkpoints")
    _fake_versions(reg, {1: None, 2: 1, 3: 2, 4: 3, 5: 2})
    assert reg.resume_version() == 5 and reg.promoted() is None and reg.refused() == {}
    reg.set_promoted(2)
    reg.mark_refused(3, "worse", canary={"successes": 0, "failures": 10})
    assert reg.refused()[3]["reason"] == "worse" and reg.is_refused(3) and not reg.is_refused(4)
    assert reg.refused_ancestor(4) == 3 and reg.refused_ancestor(5) is None and reg.refused_ancestor(2) is None
    assert reg.resume_version() == 5                   # LATEST (v5) descends from the promoted v2 only
    reg._write_latest(4)
    assert reg.resume_version() == 2                   # LATEST descends from refused v3: the promoted one
    reg.set_pinned(4)
    assert reg.pinned() == 4
    reg.set_pinned(None)
    assert reg.pinned() is None
    assert reg.versions() == [1, 2, 3, 4, 5]          # markers are not versions
    reg.write_canary({"version": 5})
    assert reg.read_canary() == {"version": 5}
    reg.write_canary(None)
    assert reg.read_canary() is None
    (reg.root / "PROMOTED").write_text("x\n")
    with pytest.raises(Exception, match="not a version number"):
        reg.promoted()
