"""Configuration of the drop-in protocols (section ``server.dropin``): how openpi's observation keys
and OpenVLA's request fields map onto a vlaloop observation. Pydantic only, so the server config can
import it cheaply.

    server:
      dropin:
        openpi:
          cameras: {front: observation/image}       # vlaloop camera -> openpi key
          state: [observation/state]                # concatenated in this order
          instruction: prompt
        openvla:
          unnorm_keys: [vlaloop]
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class OpenpiKeys(BaseModel):
    """openpi observation keys -> vlaloop camera / state / instruction. A key containing ``/`` is
    looked up literally first (``observation/state``), then as a path into nested dicts
    (``images/cam_high`` for ALOHA-style observations)."""

    model_config = ConfigDict(extra="forbid")
    cameras: dict[str, str] = Field(
        default_factory=lambda: {"front": "observation/exterior_image_1_left"},
        description="vlaloop camera name -> openpi observation key (uint8 HWC or CHW image)")
    state: list[str] = Field(
        default_factory=lambda: ["observation/state"],
        description="openpi keys whose arrays, concatenated in order, form the vlaloop state")
    instruction: str = Field(default="prompt", description="openpi key holding the language instruction")


class OpenvlaConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    unnorm_keys: list[str] = Field(
        default_factory=lambda: ["vlaloop"],
        description="values of OpenVLA's unnorm_key that are accepted (the checkpoint carries its own "
                    "normalization; any other value is refused)")
    camera: str | None = Field(default=None, description="camera the single image feeds (default: the policy's first)")


class DropinConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    openpi: OpenpiKeys = Field(default_factory=OpenpiKeys)
    openvla: OpenvlaConfig = Field(default_factory=OpenvlaConfig)
