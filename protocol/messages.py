"""Typed messages at every process boundary (docs/architecture.md, "Wire protocol").

HTTP (robot -> server): ``ActRequest`` / ``ActResponse``.
ZeroMQ (robot -> learner): ``Hello``, ``StepMsg``, ``EpisodeEnd``; learner -> robot: ``Ack``.
Every message carries ``schema``; a mismatch is refused with a clear error.
"""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal, Union

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, field_validator

from interface.action import ACTION_DIM
from protocol.codec import CodecError, packb, unpackb

SCHEMA_VERSION = 1

# robot_id and episode_id become directory names in the episode store: a strict pattern keeps
# them from escaping the run directory ("..", "/", NUL are impossible).
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,63}$"
RobotId = Annotated[str, Field(pattern=ID_PATTERN)]
EpisodeId = Annotated[str, Field(pattern=ID_PATTERN)]

Mode = Literal["sample", "greedy"]
Command = Literal["run", "end_episode", "pause"]
Outcome = Literal["success", "failure", "aborted"]
LabelSource = Literal["operator", "auto", "timeout", "reward_model"]


class SchemaError(CodecError):
    """The peer speaks another schema version."""


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid", arbitrary_types_allowed=True)
    schema_version: int = Field(default=SCHEMA_VERSION, alias="schema")

    @field_validator("schema_version")
    @classmethod
    def _schema_matches(cls, v: int) -> int:
        if v != SCHEMA_VERSION:
            raise ValueError(f"schema version {v} is not supported (this side speaks {SCHEMA_VERSION})")
        return v

    def to_wire(self) -> dict:
        return self.model_dump(by_alias=True)


# The accepted range of every state value a policy is asked about (robot units: metres, radians,
# gripper width). Far beyond any arm, far below what overflows the policy's float32 arithmetic
# ([1e308]*7 or 3e38 made the action distribution's mean infinite: a 500 instead of a 422).
STATE_ABS_MAX = 1e4


def _finite_list(values: Any, name: str) -> list[float]:
    if isinstance(values, (dict, str, bytes)) or values is None:
        raise ValueError(f"{name} must be a list of numbers, got {type(values).__name__}")
    try:
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError, OverflowError) as e:  # ragged, non-numeric, a 4000-digit int: a 4xx
        raise ValueError(f"{name} must be a flat list of numbers: {str(e)[:80]}") from None
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains NaN or inf")
    return arr.tolist()


def state_in_range(values: list[float], name: str) -> list[float]:
    """Refuse a state value outside [-STATE_ABS_MAX, STATE_ABS_MAX] (finite but absurd)."""
    if any(abs(x) > STATE_ABS_MAX for x in values):
        raise ValueError(f"{name} values must lie within +-{STATE_ABS_MAX:g} (robot units)")
    return values


# ---------------------------------------------------------------- HTTP: /v1/act


def intent_axes(values: Any, name: str) -> list[float]:
    """A teleop intent: 3 finite numbers, each in [-1, 1]."""
    out = _finite_list(values, name)
    if len(out) != 3 or any(abs(x) > 1.0 for x in out):
        raise ValueError(f"{name} must be 3 numbers in [-1, 1], got {out}")
    return out


class TeleopAck(BaseModel):
    """The robot executed the operator page's teleop command ``seq``; how long after the server got it."""

    model_config = ConfigDict(extra="forbid")
    seq: int = Field(ge=0)
    server_to_exec_ms: float = Field(ge=0, le=1e6, description="server received the command -> the arm "
                                     "was told to move (estimated on the robot's clock)")


class TeleopCommand(BaseModel):
    """The operator page's latest teleop command for this robot (in ``ActResponse.teleop`` while the
    operator drives it). A velocity intent, each axis in [-1, 1]; the robot turns it into one tick's
    action with its own speeds and rate, then the SafetyFilter has the last word."""

    model_config = ConfigDict(extra="forbid")
    seq: int = Field(ge=-1, description="the page's sequence number; -1: taken over, no command yet")
    translation: list[float] = Field(description="x, y, z intent in the base frame, each in [-1, 1]")
    rotation: list[float] = Field(description="rotation intent about x, y, z (base frame), each in [-1, 1]")
    gripper: float | None = Field(default=None, ge=0, le=1, description="0 close .. 1 open; None: keep")
    age_s: float = Field(ge=0, description="seconds since the server received it, when this reply was built")
    source: str = "page"
    operator: str | None = Field(default=None, max_length=64, description="who drives (the page's X-Operator "
                                 "name); sent only to a robot recording demonstrations (ActRequest.teleop_only)")

    def to_wire(self) -> dict:
        return self.model_dump(exclude={"operator"} if self.operator is None else None)

    @field_validator("translation", "rotation", mode="before")
    @classmethod
    def _axes(cls, v: Any, info) -> list[float]:
        return intent_axes(v, info.field_name)


class ActRequest(_Msg):
    """One observation from a robot; the server answers with an action chunk."""

    request_id: str = Field(min_length=1, max_length=128)
    robot_id: RobotId
    episode_id: EpisodeId
    step: int = Field(ge=0)
    t_capture: float = Field(description="capture time of the frames, unix seconds")
    instruction: str = Field(min_length=1, max_length=512)
    images: dict[str, Any] = Field(description="camera name -> JPEG bytes or uint8 HxWx3 array")
    state: list[float] = Field(description="proprioceptive state in robot units")
    mode: Mode = "greedy"
    teleop_ack: TeleopAck | None = Field(default=None, description="the last operator-page teleop command "
                                         "this robot executed (only while the page drives it)")
    teleop_only: bool = Field(default=False, description="a robot recording demonstrations: no inference, the "
                              "reply carries no actions, only the operator's command (served with no checkpoint)")

    @field_validator("state", mode="before")
    @classmethod
    def _state_finite(cls, v: Any) -> list[float]:
        return state_in_range(_finite_list(v, "state"), "state")

    def to_wire(self) -> dict:
        # teleop_ack only while a page drives, which only a server that knows the field offers;
        # teleop_only only while recording demonstrations, which needs a server that knows it
        exclude = {name for name, unset in (("teleop_ack", self.teleop_ack is None),
                                            ("teleop_only", not self.teleop_only)) if unset}
        return self.model_dump(by_alias=True, exclude=exclude or None)

    @field_validator("images")
    @classmethod
    def _images_typed(cls, v: dict[str, Any]) -> dict[str, Any]:
        if not v:
            raise ValueError("at least one camera image is required")
        for name, img in v.items():
            if not isinstance(img, (bytes, bytearray, np.ndarray)):
                raise ValueError(f"image {name!r} must be JPEG bytes or a uint8 array")
        return v


class Timing(BaseModel):
    decode_ms: float
    queue_ms: float
    infer_ms: float
    total_ms: float


class ActResponse(_Msg):
    request_id: str
    actions: list[list[float]] = Field(description="[H][7] action chunk in robot units; empty in the answer to "
                                       "a teleop_only request")
    log_prob: float = Field(description="log-prob of the whole chunk under the policy (sum over dims)")
    value: float
    policy_version: int
    timing: Timing
    command: Command = "run"
    teleop: TeleopCommand | None = Field(default=None, description="set while the operator drives this robot "
                                         "from the page: the latest command; absent otherwise")

    def to_wire(self) -> dict:
        # Without an operator driving, the reply is byte-for-byte what older robot clients expect
        # (their ActResponse forbids unknown keys).
        wire = self.model_dump(by_alias=True, exclude={"teleop"} if self.teleop is None else None)
        if self.teleop is not None:
            wire["teleop"] = self.teleop.to_wire()
        return wire


# ---------------------------------------------------------------- ZeroMQ: robot -> learner


class Hello(_Msg):
    type: Literal["hello"] = "hello"
    robot_id: RobotId
    config_hash: str
    token: str = ""


class StepMsg(_Msg):
    """One control step. A step that carries ``action_chunk`` (with ``log_prob``/``value``) is the
    first to execute that chunk, at ``chunk_index``; ``obs_step`` names the step whose observation
    produced it (this step itself when ``chunk_index == 0``; an earlier one when the reply came
    while the arm kept moving). Later steps execute the rest of the chunk. ``on_policy`` is False
    when the executed action is not the chunk's own (an ensemble average, or an operator's
    action): not a PPO decision. ``intervention`` is True when a human (or, in a simulator, the
    scripted intervener) drove this step: ``action`` is then the operator's action as executed and
    ``proposed_action`` what the policy would have done (None if it had nothing for this tick)."""

    type: Literal["step"] = "step"
    robot_id: RobotId
    episode_id: EpisodeId
    step: int = Field(ge=0)
    images: dict[str, bytes]
    state: list[float]
    action: list[float] = Field(description="the 7-D action actually executed (after safety)")
    action_chunk: list[list[float]] | None = None
    chunk_index: int = 0
    obs_step: int | None = Field(default=None, ge=0, description="the step whose observation produced "
                                 "action_chunk (None: unknown, or no chunk on this step)")
    on_policy: bool = True
    intervention: bool = False
    intervention_source: str | None = Field(default=None, description="who drove an intervention step: "
                                            "'page' (operator page keyboard), 'gamepad', 'scripted'")
    proposed_action: list[float] | None = Field(default=None, description="intervention steps: the "
                                                "policy's 7-D action for this tick, not executed")
    log_prob: float | None = None
    value: float | None = None
    policy_version: int = -1
    instruction: str = ""
    t_capture: float = 0.0
    t_act: float = 0.0
    safety: dict[str, int] = Field(default_factory=dict, description="clamp/hold counters")

    @field_validator("action")
    @classmethod
    def _action_shape(cls, v: list[float]) -> list[float]:
        if len(v) != ACTION_DIM:
            raise ValueError(f"action must have {ACTION_DIM} values, got {len(v)}")
        if not all(math.isfinite(x) for x in v):
            raise ValueError("action contains NaN or inf")
        return v

    @field_validator("proposed_action")
    @classmethod
    def _proposed_shape(cls, v: list[float] | None) -> list[float] | None:
        return None if v is None else cls._action_shape(v)


class EpisodeEnd(_Msg):
    type: Literal["episode_end"] = "episode_end"
    robot_id: RobotId
    episode_id: EpisodeId
    outcome: Outcome
    label_source: LabelSource
    n_steps: int = Field(ge=0)
    instruction: str
    task: str = ""
    extra: dict[str, Any] = Field(default_factory=dict)


class Relabel(_Msg):
    """The operator corrected an episode's label after the fact."""

    type: Literal["relabel"] = "relabel"
    robot_id: RobotId
    episode_id: EpisodeId
    outcome: Outcome


class Ack(_Msg):
    type: Literal["ack"] = "ack"
    seq: int
    ok: bool = True
    duplicate: bool = False
    error: str = ""


RobotToLearner = Union[Hello, StepMsg, EpisodeEnd, Relabel]
_BY_TYPE: dict[str, type[_Msg]] = {"hello": Hello, "step": StepMsg, "episode_end": EpisodeEnd,
                                   "relabel": Relabel, "ack": Ack}


def encode_message(msg: _Msg) -> bytes:
    return packb(msg.to_wire())


def decode_message(data: bytes) -> _Msg:
    """Decode a ZeroMQ message to its typed model; raises CodecError/SchemaError with the reason."""
    obj = unpackb(data)
    if not isinstance(obj, dict):
        raise CodecError("message is not a map")
    schema = obj.get("schema")
    if schema != SCHEMA_VERSION:
        raise SchemaError(f"schema version {schema!r} is not supported (this side speaks {SCHEMA_VERSION})")
    kind = obj.get("type")
    cls = _BY_TYPE.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise CodecError(f"unknown message type {kind!r}")
    try:
        return cls.model_validate(obj)
    except Exception as e:  # pydantic.ValidationError: keep the field names in the message
        raise CodecError(f"invalid {kind} message: {e}") from None
