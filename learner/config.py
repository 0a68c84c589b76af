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
    # service (learner/loop.py, learner/ingest.py)
    max_iterations: int = Field(default=0, ge=0, description="RL+SFT iterations before the learner exits; 0 = forever")
    rl_schedule: Literal["fixed", "plateau"] = Field(
        default="fixed", description="fixed: rl_rounds_per_phase rounds; plateau: also stop early when success stalls")
    plateau_rounds: int = Field(default=2, ge=1, description="rounds without improvement that count as a plateau")
    plateau_delta: float = Field(default=0.05, ge=0, description="success-rate gain that counts as improvement")
    max_message_bytes: int = Field(default=32 * 1024 * 1024, ge=1024, description="ZeroMQ MAXMSGSIZE on ingest")
    status_interval_s: float = Field(default=1.0, gt=0, description="status.json refresh while only ingesting")
