"""Model configuration (part of the deployment YAML, section `model`)."""

from __future__ import annotations

from pydantic import BaseModel, Field


class ModelConfig(BaseModel):
    backbone_dir: str | None = Field(
        default=None, description="local Hugging Face model dir; None = the embedded tiny PaliGemma")
    trust_remote_code: bool = False
    cameras: list[str] = Field(default_factory=lambda: ["front"])
    image_size: int = 96
    chunk: int = Field(default=4, description="action chunk length H")
    action_dim: int = 7
    state_dim: int = 7
    device: str = "cpu"
    seed: int = 0
