"""The operator's pin: ``POST /v1/policy/pin`` serves one version to every robot and pauses the
promotion gate; ``DELETE /v1/policy/pin`` resumes it. Operator token. The gate's state is in
``GET /v1/policy`` (``promotion``)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field

from server.auth import require_operator
from server.policy_holder import PinRefused

router = APIRouter(prefix="/v1/policy", tags=["promotion"])


class PinIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    version: int = Field(ge=1, description="the version to serve to every robot")


@router.post("/pin", dependencies=[Depends(require_operator)],
             responses={409: {"description": "the version cannot be served (unknown, refused, invalid)"}})
async def pin(body: PinIn, request: Request) -> dict:
    holder = request.app.state.holder
    try:  # loading and validating a version blocks: off the event loop
        await asyncio.get_running_loop().run_in_executor(None, holder.pin, body.version)
    except PinRefused as e:
        raise HTTPException(409, f"version: {e}") from None
    return holder.promotion_status()


@router.delete("/pin", dependencies=[Depends(require_operator)])
async def unpin(request: Request) -> dict:
    holder = request.app.state.holder
    try:
        await asyncio.get_running_loop().run_in_executor(None, holder.unpin)
    except PinRefused as e:
        raise HTTPException(409, str(e)) from None
    return holder.promotion_status()
