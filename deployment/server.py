"""Server configuration (section `server`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from deployment.dropin import DropinConfig
from deployment.promotion import PromotionConfig


class ServerConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key in the YAML or env is an error
    host: str = "127.0.0.1"
    port: int = 8000
    robot_token: str = Field(default="", description="bearer token for robots and the learner")
    operator_token: str = Field(default="", description="bearer token for the operator page")
    max_batch: int = Field(default=8, ge=1, description="most observations run in one forward pass")
    max_wait_ms: float = Field(
        default=5.0, ge=0.0,
        description="a batch waits (after the worker is free) for robots expected back within "
                    "this window or one forward pass, whichever is longer; robots not expected "
                    "that soon are never waited for")
    max_body_bytes: int = Field(default=8 * 1024 * 1024, description="larger /v1/act bodies get 413")
    max_image_side: int | None = Field(
        default=None, ge=1, description="images wider or taller than this are refused (checked from the header, "
                                        "before decoding); None: the robot cameras' configured size "
                                        "(robot.camera_width x robot.camera_height)")
    header_timeout_s: float = Field(default=10.0, gt=0, description="a connection whose request headers are not "
                                    "complete this long after its first byte is answered 408 and closed")
    body_timeout_s: float = Field(default=30.0, gt=0, description="a request body not fully received this long "
                                  "after its headers closes the connection")
    keep_alive_s: float = Field(default=5.0, gt=0, description="an idle keep-alive connection is closed after this")
    watch_interval_s: float = Field(default=0.5, gt=0.0, description="how often checkpoints/LATEST is polled")
    auto_label: bool = Field(
        default=False,
        description="demo/test mode: answer a robot's label wait with its own auto outcome "
                    "(the mock's success predicate stands in for the operator)")
    label_poll_max_s: float = Field(default=60.0, gt=0.0, description="longest single label long-poll")
    robot_stale_s: float = Field(default=10.0, description="a robot not seen for this long is shown as stale")
    robot_forget_s: float = Field(default=300.0, gt=0, description="a robot not heard from for this long is "
                                  "forgotten (frames freed; /v1/robots lists it as gone)")
    max_robots: int = Field(default=64, ge=1, description="robots tracked at once; a new one evicts the least "
                            "recently seen robot that is not paused, driven or awaiting a label")
    teleop_lock_s: float = Field(default=10.0, gt=0.0,
                                 description="an operator holding a robot who has sent nothing for this long no "
                                             "longer blocks another operator's take-over (docs/teleop.md)")
    dropin: DropinConfig = Field(default_factory=DropinConfig,
                                 description="key mapping of the drop-in openpi/OpenVLA protocols (docs/dropin.md)")
    promotion: PromotionConfig = Field(default_factory=PromotionConfig,
                                       description="canary gating of new versions and automatic rollback "
                                                   "(docs/promotion.md)")
