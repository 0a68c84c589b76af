"""Learner configuration (section `learner`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class LearnerConfig(BaseModel):
    bind: str = "tcp://127.0.0.1:5555"
    token: str = Field(default="", description="token robots present in hello; empty = none required")
    algorithm: Literal["ppo", "sac"] = "ppo"
    episodes_per_round: int = 8
    rl_rounds_per_phase: int = 3
    sft_steps: int = 300
    seed: int = 0
