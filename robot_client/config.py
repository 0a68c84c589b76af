"""Robot client configuration (section `robot`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field


class RobotConfig(BaseModel):
    robot_id: str = "mock0"
    backend: Literal["mock", "franka"] = "mock"
    server_url: str = "http://127.0.0.1:8000"
    learner_addr: str = "tcp://127.0.0.1:5555"
    token: str = ""
    rate_hz: float = 10.0
    max_steps: int = 60
    mode: Literal["sample", "greedy"] = "sample"
    task: str = "reach"
    calibration: str | None = Field(default=None, description="path to calibration.yaml")
    label_timeout_s: float = 120.0
    franka_host: str = "172.16.0.2"
    camera_serials: list[str] = Field(default_factory=list)
