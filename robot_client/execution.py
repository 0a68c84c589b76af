"""How the loop turns the policy's action chunks into one action per tick: the execution strategies.

A strategy holds the episode's adopted chunks and answers four questions for the loop: is a query
due (when the policy drives), does this tick have its own action yet, how a fresh chunk is adopted,
and which action this tick executes. One class per ``RobotConfig.execution`` value, chosen once per
episode by ``execution_strategy`` (docs/robot_client.md, "Chunks").
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from deployment.robot import RobotConfig
from interface.robot import ArmState
from interface.teleop import TeleopAction
from robot_client.safety import SafeAction


@dataclass
class Observation:
    """What one tick captured: the arm state and the cameras' JPEGs."""
    state: ArmState
    state_vec: np.ndarray
    jpegs: dict[str, bytes]
    t_capture: float


@dataclass
class Chunk:
    actions: np.ndarray  # [H, 7] robot units, as the server sent them (before safety)
    start_tick: int  # actions[i] belongs to tick start_tick + i
    request_id: str
    log_prob: float
    value: float
    policy_version: int
    obs_tick: int  # the tick whose observation produced it (== start_tick unless obs is set)
    recorded: bool = False  # its action_chunk/log_prob went into a step record already
    obs: Observation | None = None  # set when it starts later than its observation (the arm held meanwhile)

    def covers(self, tick: int) -> bool:
        return 0 <= tick - self.start_tick < len(self.actions)

    def ends(self) -> int:
        """The first tick this chunk has no action for."""
        return self.start_tick + len(self.actions)


@dataclass
class Planned:
    """This tick's action before safety, where it comes from, and (after acting) what safety made of it."""
    raw: np.ndarray
    chunk: Chunk | None  # None only for an operator's step while the policy had nothing for the tick
    index: int
    on_policy: bool  # the executed action is this chunk's own action (not an ensemble average)
    safe: SafeAction | None = None
    teleop: TeleopAction | None = None  # an operator's action (then raw is teleop.action)
    proposed: np.ndarray | None = None  # with teleop: what the policy would have done this tick


class ExecutionStrategy(ABC):
    """One episode's chunks and the rule that executes them."""

    def __init__(self, cfg: RobotConfig):
        self.cfg = cfg

    @abstractmethod
    def wants_query(self, tick: int, last_query_tick: int, waiting: bool) -> bool:
        """Is a query due at ``tick`` while the policy drives? ``waiting``: a query is in flight."""

    @abstractmethod
    def has_action(self, tick: int) -> bool:
        """Does ``tick`` have the action it should execute (no point waiting for a reply)?"""

    @abstractmethod
    def adopt(self, chunk: Chunk, tick: int) -> None:
        """Take a fresh chunk that arrived at ``tick``."""

    @abstractmethod
    def action_for(self, tick: int) -> Planned | None:
        """The policy's action for ``tick``, or None if no chunk covers it."""

    @abstractmethod
    def chunks(self) -> list[Chunk]:
        """The chunks held now."""

    @abstractmethod
    def clear(self) -> None:
        """Forget every chunk (an operator handed the arm back: nothing planned before is executed)."""

    def longest_chunk(self) -> int:
        return max((len(c.actions) for c in self.chunks()), default=0)


class OpenLoop(ExecutionStrategy):
    """Each chunk runs to its end; the next query goes out when it runs out (or ``prefetch_steps``
    before), one query at a time. A newer chunk replaces the current one."""

    def __init__(self, cfg: RobotConfig):
        super().__init__(cfg)
        self.chunk: Chunk | None = None

    def wants_query(self, tick: int, last_query_tick: int, waiting: bool) -> bool:
        if waiting:
            return False  # one query per chunk
        if self.chunk is None:
            return True
        remaining = self.chunk.ends() - tick  # actions left, this one included
        return remaining <= 0 or (remaining <= self.cfg.prefetch_steps and last_query_tick <= self.chunk.start_tick)

    def has_action(self, tick: int) -> bool:
        return self.chunk is not None and self.chunk.covers(tick)

    def adopt(self, chunk: Chunk, tick: int) -> None:
        if self.chunk is None or chunk.obs_tick >= self.chunk.obs_tick:
            self.chunk = chunk

    def action_for(self, tick: int) -> Planned | None:
        if self.chunk is None or not self.chunk.covers(tick):
            return None
        i = tick - self.chunk.start_tick
        return Planned(self.chunk.actions[i], self.chunk, i, on_policy=True)

    def chunks(self) -> list[Chunk]:
        return [] if self.chunk is None else [self.chunk]

    def clear(self) -> None:
        self.chunk = None


class TemporalEnsemble(ExecutionStrategy):
    """ACT temporal ensembling: a query every tick, and each tick executes the weighted average of
    every chunk covering it, ``w_i = exp(-ensemble_decay * i)`` with ``i = 0`` the oldest."""

    def __init__(self, cfg: RobotConfig):
        super().__init__(cfg)
        self.ensemble: list[Chunk] = []  # oldest first

    def wants_query(self, tick: int, last_query_tick: int, waiting: bool) -> bool:
        return True  # the link sends the newest one as soon as the last reply is in

    def has_action(self, tick: int) -> bool:
        return any(c.start_tick == tick for c in self.ensemble)  # give this tick's own observation its chance

    def adopt(self, chunk: Chunk, tick: int) -> None:
        self.ensemble = [c for c in self.ensemble if c.ends() > tick] + [chunk]

    def action_for(self, tick: int) -> Planned | None:
        covering = [c for c in self.ensemble if c.covers(tick)]
        if not covering:
            return None
        weights = np.exp(-self.cfg.ensemble_decay * np.arange(len(covering)))
        stacked = np.stack([c.actions[tick - c.start_tick] for c in covering])
        with np.errstate(invalid="ignore"):
            action = (weights[:, None] * stacked).sum(0) / weights.sum()
        newest = covering[-1]
        # The executed action is an average of several sampled chunks: no single chunk's log-prob
        # describes it, so the step is recorded as not on-policy (the learner's PPO skips it).
        return Planned(action, newest, tick - newest.start_tick, on_policy=False)

    def chunks(self) -> list[Chunk]:
        return list(self.ensemble)

    def clear(self) -> None:
        self.ensemble = []


STRATEGIES: dict[str, type[ExecutionStrategy]] = {"open_loop": OpenLoop, "ensemble": TemporalEnsemble}


def execution_strategy(cfg: RobotConfig) -> ExecutionStrategy:
    """A fresh strategy for one episode, the one ``cfg.execution`` names."""
    return STRATEGIES[cfg.execution](cfg)
