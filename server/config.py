"""Server configuration (section `server`)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ServerConfig(BaseModel):
    host: str = "127.0.0.1"
    port: int = 8000
    robot_token: str = Field(default="", description="bearer token for robots and the learner")
    operator_token: str = Field(default="", description="bearer token for the operator page")
    max_batch: int = 8
    max_wait_ms: float = 2.0
    max_body_bytes: int = 8 * 1024 * 1024
    watch_interval_s: float = 0.5
