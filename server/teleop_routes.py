"""The operator page's teleop routes (operator token); the state and models are in ``server.teleop``."""

from __future__ import annotations

import asyncio
import time

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request
from fastapi import Path as PathParam
from pydantic import BaseModel, Field

from protocol.messages import ID_PATTERN
from server.auth import require_operator, require_robot
from server.robots import RobotView
from server.teleop import DEFAULT_OPERATOR, OPERATOR_PATTERN, TeleopAccepted, TeleopIn, TeleopRefused

router = APIRouter(prefix="/v1", tags=["teleop"])
RobotIdParam = PathParam(pattern=ID_PATTERN)
_errors = {404: {"description": "unknown robot"},
           409: {"description": "no episode running / not taken over / held by another operator"},
           422: {"description": "a field is wrong (NaN, wrong length, out of [-1, 1])"}}


async def operator_name(x_operator: str = Header(default=DEFAULT_OPERATOR, pattern=OPERATOR_PATTERN,
                                                 description="who drives: one operator holds a robot at a time "
                                                             "(server.teleop)")) -> str:
    return x_operator


def _call(request: Request, method: str, robot_id: str, *args):
    robots = request.app.state.robots
    try:
        return getattr(robots, method)(robot_id, *args)
    except KeyError:
        raise HTTPException(404, f"robot_id: unknown robot {robot_id!r} (not seen yet)") from None
    except TeleopRefused as e:
        raise HTTPException(409, str(e)) from None


@router.post("/robots/{robot_id}/teleop/take_over", dependencies=[Depends(require_operator)], responses=_errors)
async def take_over(request: Request, robot_id: str = RobotIdParam, operator: str = Depends(operator_name)) -> RobotView:
    """The operator drives this robot from its next /v1/act reply on, until hand back or the episode
    ends. 409 while another operator holds it (see server.teleop)."""
    return request.app.state.robots.view(_call(request, "take_over", robot_id, operator))


@router.post("/robots/{robot_id}/teleop/hand_back", dependencies=[Depends(require_operator)], responses=_errors)
async def hand_back(request: Request, robot_id: str = RobotIdParam, operator: str = Depends(operator_name)) -> RobotView:
    """The policy drives again (the robot asks it afresh; nothing planned before is executed)."""
    return request.app.state.robots.view(_call(request, "hand_back", robot_id, "operator", operator))


@router.post("/robots/{robot_id}/teleop", dependencies=[Depends(require_operator)], responses=_errors)
async def teleop_command(body: TeleopIn, request: Request, robot_id: str = RobotIdParam,
                         operator: str = Depends(operator_name)) -> TeleopAccepted:
    """One command: the page sends one on every key change and every 50 ms while driving."""
    accepted = _call(request, "teleop_command", robot_id, body, operator)
    return TeleopAccepted(seq=body.seq, accepted=accepted, received=time.time())


class TakeoverState(BaseModel):
    driving: bool = Field(description="an operator has taken over this episode from the page")


TAKEOVER_POLL_S = 0.01  # how often a waiting long-poll looks: a take-over reaches the robot within this


@router.get("/robots/{robot_id}/teleop/wanted", dependencies=[Depends(require_robot)])
async def takeover_wanted(request: Request, robot_id: str = RobotIdParam,
                          episode_id: str = Query(pattern=ID_PATTERN),
                          driving: bool = Query(default=False, description="what the robot knows now"),
                          wait_s: float = Query(default=2.0, ge=0.0, le=10.0)) -> TakeoverState:
    """Long-poll for the robot: answers as soon as the take-over state of ``episode_id`` differs from
    ``driving`` (or after ``wait_s``, with the state as it is). A robot executing a chunk open loop
    asks the policy once per chunk; this lets a take-over pre-empt the chunk within one control
    period instead of up to a chunk later (robot_client.teleop.TakeoverWatch)."""
    robots = request.app.state.robots
    deadline = time.monotonic() + wait_s
    while True:
        now = robots.teleop_driving(robot_id, episode_id)
        if now != driving or time.monotonic() >= deadline:
            return TakeoverState(driving=now)
        await asyncio.sleep(TAKEOVER_POLL_S)
