"""A scripted operator inside the robot client: the simulator's expert takes the arm when the policy
goes wrong, through the same path as a person's gamepad (docs/interventions.md, docs/demo.md).

It is an ``interface.teleop.InterventionSource``: the control loop asks it every tick with the arm
state and the action the policy proposes for that tick. The decision is ``sim.intervener``'s rules
(the tube: the proposed translation too far off the expert's for a few steps, or a stall), with
its budget (a share of all steps seen, at most a few takeovers per episode). While it drives, its
action is the expert's for the scene as it is now; the loop passes it through the SafetyFilter,
stores the step with ``intervention: true``, ``intervention_source: "scripted"`` and the policy's
proposal, exactly as for the page or a gamepad. It never drives a greedy (evaluation) episode.

Only a simulator backend has an expert (``Rig.expert``); ``robot.teleop: scripted`` on a real arm
is refused at start.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import fields

import numpy as np

from interface.robot import ArmState
from interface.teleop import SOURCE_SCRIPTED, TeleopAction
from sim.intervener import InterventionConfig, ScriptedIntervener


def intervention_config(overrides: dict) -> InterventionConfig:
    """``robot.scripted_operator`` (field -> value) over the defaults; an unknown field is an error."""
    known = {f.name for f in fields(InterventionConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"robot.scripted_operator: unknown field(s) {unknown}; known: {sorted(known)}")
    return InterventionConfig(**overrides)


class ScriptedOperator:
    """The expert as an intervention source, deciding with ``ScriptedIntervener`` on one scene."""

    name = SOURCE_SCRIPTED

    def __init__(self, expert: Callable[[float], np.ndarray], cfg: InterventionConfig | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.expert = expert  # noise -> the expert's action [7] for the scene as it is now
        self.intervener = ScriptedIntervener(cfg)
        self.clock = clock
        self.active = False  # sampled episodes only: a greedy evaluation is never helped

    @property
    def cfg(self) -> InterventionConfig:
        return self.intervener.cfg

    def start_episode(self, episode_id: str, mode: str) -> None:
        """Called by the loop before an episode's first tick; the budget carries over."""
        self.active = mode == "sample"
        self.intervener.start(1)

    def command(self, state: ArmState, proposed: np.ndarray | None = None) -> TeleopAction | None:
        if not self.active:
            return None
        driving = bool(self.intervener.driving[0])
        if proposed is None and not driving:
            return None  # the arm holds this tick (no policy action yet): not a step to judge
        expert = np.asarray(self.expert(self.cfg.expert_noise), dtype=np.float64).reshape(-1)
        plan = expert if proposed is None else np.asarray(proposed, dtype=np.float64).reshape(-1)
        driven = self.intervener.decide(plan[None], expert[None], np.asarray(state.position, np.float64)[None],
                                        np.ones(1, bool), decision_boundary=True)
        if not driven[0]:
            return None
        return TeleopAction(expert, SOURCE_SCRIPTED, self.clock())

    def stats(self) -> dict:
        return self.intervener.stats()
