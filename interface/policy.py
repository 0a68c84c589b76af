"""What a policy takes and returns, and the protocol every served policy follows (torch-free).

`vla.policy.Policy` implements `BasePolicy`; the server, the drop-in adapters and the learner's
evaluation are written against this protocol and these dataclasses, never against the model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np

ACT_MODES = ("greedy", "sample")


@dataclass
class Observation:
    images: dict[str, np.ndarray]  # camera name -> uint8 H x W x 3 RGB (any size; resized to spec.image_size)
    state: np.ndarray  # float32 [state_dim]: x, y, z, roll, pitch, yaw, gripper (robot units)
    instruction: str


@dataclass
class ActOutput:
    actions: np.ndarray  # [H, action_dim] float32, robot units (un-normalized): what the robot executes
    log_prob: float  # log-prob of the whole chunk in normalized space (sum over H*action_dim dims)
    value: float  # PPO critic V(features, state)


@dataclass
class PolicySpec:
    cameras: list[str]
    image_size: int
    chunk: int
    action_dim: int
    state_dim: int
    backbone_id: str
    backbone_hash: str
    feature_dim: int


@runtime_checkable
class BasePolicy(Protocol):
    """A loaded policy version: one forward pass turns a batch of observations into action chunks.

    `modes[i]` is "greedy" (execute the mean) or "sample" (mean + std * noise).
    """

    version: int
    spec: PolicySpec

    def act_batch(self, obs: list[Observation], modes: list[str]) -> list[ActOutput]: ...

    def metadata(self) -> dict: ...
