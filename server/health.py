"""Liveness, readiness, policy metadata and Prometheus metrics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import BaseModel, Field

from server.auth import require_any

router = APIRouter(tags=["health"])

ACTION_NAMES = ["dx", "dy", "dz", "droll", "dpitch", "dyaw", "gripper"]
ACTION_UNITS = ["m", "m", "m", "rad", "rad", "rad", "0 closed .. 1 open"]


class SwapInfo(BaseModel):
    version: int
    ok: bool
    at: float = Field(description="unix time of the attempt")
    load_ms: float
    validate_ms: float
    error: str = ""


class PolicyInfo(BaseModel):
    loaded: bool
    version: int | None
    backbone_id: str | None = None
    backbone_hash: str | None = None
    cameras: list[str] = []
    image_size: int | None = Field(default=None, description="the policy resizes every image to this")
    image_policy: str = ""
    chunk: int | None = Field(default=None, description="actions per response (H)")
    action_dim: int | None = None
    state_dim: int | None = None
    action_space: dict[str, Any] = {}
    normalization: Any = None
    loaded_at: float | None = None
    swaps: int = 0
    swap_failures: int = 0
    last_swap: SwapInfo | None = None
    last_swap_error: SwapInfo | None = None
    refused_versions: list[int] = []
    refused: dict[str, str] = Field(default_factory=dict, description="refused version -> why (load failure, "
                                    "or rolled back by the promotion gate: never served again)")
    promotion: dict[str, Any] = Field(
        default_factory=dict, description="the promotion gate (docs/promotion.md): enabled, promoted, pinned, "
                                          "the running canary with its tallies, recent decisions, config")
    batching: dict[str, float] = {}
    metadata: dict[str, Any] = Field(default_factory=dict, description="Policy.metadata() verbatim")
    learner_phase: str | None = Field(
        default=None, description="the learner's phase from status.json (bootstrap, rl, sft, idle, ...). "
                                  "Robots in mode `auto` run greedy evaluation episodes during `sft`")


def learner_phase(run_dir: Path) -> str | None:
    """The learner's current phase, read from the shared run dir (None if no learner wrote one)."""
    try:
        phase = json.loads((run_dir / "status.json").read_text()).get("phase")
    except (OSError, ValueError, AttributeError):
        return None
    return phase if isinstance(phase, str) else None


@router.get("/healthz")
async def healthz() -> dict:
    return {"ok": True}


@router.get("/readyz", responses={503: {"description": "no policy loaded yet"}})
async def readyz(request: Request) -> Response:
    holder = request.app.state.holder
    policy = holder.policy
    if policy is None:
        err = holder.last_swap_error
        # No token here (orchestrators probe it): say that a load failed, not why (the error names
        # local paths); GET /v1/policy, behind a token, has the whole story.
        reason = "no checkpoint loaded yet" + (f"; loading version {err.version} failed (see /v1/policy)"
                                               if err else "")
        # robots recording demonstrations by teleop are served already (ActRequest.teleop_only)
        return JSONResponse({"ready": False, "teleop_only": True, "reason": f"teleop only: {reason}"},
                            status_code=503)
    return JSONResponse({"ready": True, "version": int(policy.version)})


def _metadata(request: Request, policy: Any) -> dict:
    cache = request.app.state.metadata_cache
    version = int(policy.version)
    if cache.get("version") != version:
        cache.clear()
        cache.update(version=version, metadata=policy.metadata())
    return cache["metadata"]


@router.get("/v1/policy", dependencies=[Depends(require_any)])
async def policy_info(request: Request) -> PolicyInfo:
    app = request.app
    holder = app.state.holder
    server = app.state.config.server
    status = holder.status()
    info = PolicyInfo(
        loaded=holder.policy is not None, version=status["version"], loaded_at=status["loaded_at"],
        swaps=status["swaps"], swap_failures=status["swap_failures"], last_swap=status["last_swap"],
        last_swap_error=status["last_swap_error"], refused_versions=status["refused_versions"],
        refused=status["refused"], promotion=status["promotion"],
        batching={"max_batch": server.max_batch, "max_wait_ms": server.max_wait_ms},
        learner_phase=learner_phase(Path(app.state.config.run_dir)),
        image_policy=f"JPEG/PNG or uint8 HxWx3, 3-channel RGB, up to {app.state.image_limit.max_side} px a "
                     f"side and {app.state.image_limit.max_pixels} pixels (checked before decoding); "
                     f"resized by the policy")
    policy = holder.policy
    if policy is not None:
        spec = policy.spec
        meta = _metadata(request, policy)
        dims = int(spec.action_dim)
        info = info.model_copy(update=dict(
            backbone_id=spec.backbone_id, backbone_hash=spec.backbone_hash, cameras=list(spec.cameras),
            image_size=int(spec.image_size), chunk=int(spec.chunk), action_dim=dims,
            state_dim=int(spec.state_dim),
            action_space={"shape": [int(spec.chunk), dims], "frame": "end-effector deltas, robot units",
                          "names": ACTION_NAMES[:dims] if dims == 7 else None,
                          "units": ACTION_UNITS[:dims] if dims == 7 else None},
            normalization=meta.get("normalization", meta.get("norm")), metadata=meta))
    return info


@router.get("/metrics", response_class=Response)
async def metrics(request: Request) -> Response:
    return Response(request.app.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)
