"""One episode's step records for the learner (``StepMsg``, docs/robot_client.md "The control loop").

A chunk's action_chunk/log_prob/value go with the step that first executes it, with ``obs_step``:
the step whose observation produced the chunk. A chunk whose observation was taken while the arm
held (no step recorded since) starts at its index 0, and its first step records that observation
(see ``ControlLoop._adopt``). Non-finite chunks are left out (the safety counters say why), so no
NaN ever reaches the learner. An operator's step is never a policy decision: no chunk, no
log-prob, ``on_policy`` False, with the source and what the policy proposed for the tick.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np

from protocol.messages import StepMsg
from robot_client.execution import Observation, Planned

NO_STEP = -(10**9)  # the tick of "no step recorded yet"


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


class StepRecorder:
    """Numbers the episode's steps and emits each one (the Streamer's submit)."""

    def __init__(self, emit: Callable[[StepMsg], None], robot_id: str, episode_id: str, instruction: str):
        self.emit = emit
        self.robot_id = robot_id
        self.episode_id = episode_id
        self.instruction = instruction
        self.n_steps = 0
        self.step_of_tick: dict[int, int] = {}  # tick -> the step recorded in it (recent ticks only)

    @property
    def last_step_tick(self) -> int:
        return max(self.step_of_tick, default=NO_STEP)

    def forget_before(self, tick: int) -> None:
        for t in [t for t in self.step_of_tick if t < tick]:
            del self.step_of_tick[t]

    def record(self, tick: int, planned: Planned, obs: Observation, safety: dict[str, int]) -> None:
        """The policy's step; ``safety``: the counters of the ticks since the last record."""
        chunk = planned.chunk
        first_use = not chunk.recorded
        chunk.recorded = True
        finite_chunk = first_use and bool(np.all(np.isfinite(chunk.actions)))
        seen = chunk.obs if (first_use and chunk.obs is not None) else obs
        obs_step = None
        if first_use:
            obs_step = self.n_steps if chunk.obs is not None else self.step_of_tick.get(chunk.obs_tick)
        self._emit(tick, StepMsg(
            robot_id=self.robot_id, episode_id=self.episode_id, step=self.n_steps, images=seen.jpegs,
            state=seen.state_vec.astype(float).tolist(), action=planned.safe.action.astype(float).tolist(),
            action_chunk=chunk.actions.astype(float).tolist() if finite_chunk else None,
            chunk_index=planned.index, log_prob=_finite_or_none(chunk.log_prob) if first_use else None,
            value=_finite_or_none(chunk.value) if first_use else None, policy_version=chunk.policy_version,
            obs_step=obs_step, on_policy=planned.on_policy,
            instruction=self.instruction, t_capture=seen.t_capture, t_act=time.time(), safety=safety))

    def record_intervention(self, tick: int, planned: Planned, obs: Observation, safety: dict[str, int]) -> None:
        """An operator's step: the executed action (after safety), who drove, and what the policy
        proposed for this tick (None if it had nothing, or nothing finite)."""
        proposed = planned.proposed
        if proposed is not None and not np.all(np.isfinite(proposed)):
            proposed = None
        self._emit(tick, StepMsg(
            robot_id=self.robot_id, episode_id=self.episode_id, step=self.n_steps, images=obs.jpegs,
            state=obs.state_vec.astype(float).tolist(), action=planned.safe.action.astype(float).tolist(),
            policy_version=planned.chunk.policy_version if planned.chunk is not None else -1,
            on_policy=False, intervention=True, intervention_source=planned.teleop.source,
            proposed_action=None if proposed is None else np.asarray(proposed, dtype=float).tolist(),
            instruction=self.instruction, t_capture=obs.t_capture, t_act=time.time(), safety=safety))

    def _emit(self, tick: int, msg: StepMsg) -> None:
        self.emit(msg)
        self.step_of_tick[tick] = self.n_steps
        self.n_steps += 1
