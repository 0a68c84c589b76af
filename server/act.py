"""POST /v1/act: one observation in, one action chunk out (msgpack or JSON, answered in kind).

Stages, each timed and returned in ``timing``: decode (read body, parse, check fields, decode
JPEGs — in a thread), queue (waiting for a batch), infer (the batch's forward pass), total.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass

import numpy as np
from fastapi import APIRouter, Depends, FastAPI, Request, Response

from interface.policy import Observation
from protocol.codec import packb
from protocol.messages import ActRequest, ActResponse, Timing
from server.auth import require_robot
from server.batcher import BatchResult
from server.decode import InputError, decode_act, encoding_of

router = APIRouter(tags=["act"])

_OPENAPI_BODY = {
    "requestBody": {
        "required": True,
        "description": "ActRequest. msgpack (images: JPEG bytes or uint8 arrays) or JSON (images: base64 "
                       "JPEG/PNG strings). Images up to the configured camera size; the policy resizes.",
        "content": {
            "application/msgpack": {"schema": ActRequest.model_json_schema(by_alias=True)},
            "application/json": {"schema": ActRequest.model_json_schema(by_alias=True)},
        },
    }
}


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it exceeds ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise InputError(413, "body", f"{declared} bytes exceeds the limit of {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise InputError(413, "body", f"more than {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def encode_response(resp: ActResponse, encoding: str) -> Response:
    wire = resp.to_wire()
    if encoding == "msgpack":
        return Response(packb(wire), media_type="application/msgpack")
    return Response(json.dumps(wire), media_type="application/json")


@dataclass
class Served:
    result: BatchResult
    command: str
    decode_s: float
    total_s: float


async def serve_observation(app: FastAPI, t0: float, decode_s: float, *, images: dict[str, np.ndarray],
                            state: np.ndarray, instruction: str, mode: str, robot_id: str,
                            episode_id: str | None, step: int | None, encoding: str,
                            frames: dict | None = None) -> Served:
    """Run one checked observation through the shared batcher (the version gate sees its episode);
    keep it for the reward model; feed the operator page (`frames`: what to show, default the
    images); count it. /v1/act and both drop-ins go through here."""
    obs = Observation(images=images, state=state, instruction=instruction)
    result = await app.state.batcher.submit(obs, mode, robot_id, episode_id)
    if episode_id:
        app.state.reward_scorer.observe(robot_id, episode_id, obs)
    robots = app.state.robots
    command = robots.command_for(robot_id, episode_id or "")
    robots.observe_act(robot_id, episode_id, step, instruction, frames if frames is not None else dict(images),
                       result.version)
    total_s = time.perf_counter() - t0
    metrics = app.state.metrics
    metrics.observe_stages(decode_s, result.queue_s, result.infer_s, total_s)
    metrics.requests.labels(encoding=encoding).inc()
    return Served(result, command, decode_s, total_s)


@router.post("/v1/act", dependencies=[Depends(require_robot)], response_model=ActResponse,
             openapi_extra=_OPENAPI_BODY,
             responses={400: {"description": "malformed body"}, 413: {"description": "body too large"},
                        415: {"description": "not msgpack/JSON"}, 422: {"description": "a field is wrong"},
                        503: {"description": "no policy loaded yet"}})
async def act(request: Request) -> Response:
    t0 = time.perf_counter()
    app = request.app
    config = app.state.config.server
    encoding = encoding_of(request.headers.get("content-type"))
    policy = app.state.holder.policy
    body = await read_body(request, config.max_body_bytes)
    # with no checkpoint yet, only a teleop_only request (a robot recording demonstrations) is served:
    # it is checked against the deployment's cameras and state size, which the first version will have
    model = app.state.config.model
    cameras, state_dim = ((list(policy.spec.cameras), int(policy.spec.state_dim)) if policy is not None
                          else (list(model.cameras), int(model.state_dim)))
    loop = asyncio.get_running_loop()
    decoded = await loop.run_in_executor(app.state.decode_pool, decode_act, body, encoding,
                                         cameras, state_dim, app.state.image_limit)
    req = decoded.request
    decode_s = time.perf_counter() - t0
    if req.teleop_only:
        return encode_response(teleop_only_reply(app, req, decoded.raw_images, t0, decode_s), encoding)
    app.state.holder.require()  # 503 while no checkpoint is loaded

    served = await serve_observation(
        app, t0, decode_s, images=decoded.images, state=np.asarray(req.state, dtype=np.float32),
        instruction=req.instruction, mode=req.mode, robot_id=req.robot_id, episode_id=req.episode_id,
        step=req.step, encoding=encoding, frames=decoded.raw_images)
    result = served.result
    resp = ActResponse(
        request_id=req.request_id,
        actions=np.asarray(result.output.actions, dtype=np.float64).tolist(),
        log_prob=float(result.output.log_prob), value=float(result.output.value),
        policy_version=result.version,
        timing=Timing(decode_ms=decode_s * 1e3, queue_ms=result.queue_s * 1e3,
                      infer_ms=result.infer_s * 1e3, total_ms=served.total_s * 1e3),
        command=served.command,
        teleop=app.state.robots.teleop_for(req.robot_id, req.episode_id, req.teleop_ack))
    return encode_response(resp, encoding)


def teleop_only_reply(app: FastAPI, req: ActRequest, frames: dict, t0: float, decode_s: float) -> ActResponse:
    """A robot recording a demonstration: no inference (there may be no checkpoint at all); the reply
    carries the operator's buttons and the page's newest driving command, with who drives."""
    robots = app.state.robots
    command = robots.command_for(req.robot_id, req.episode_id)
    robots.observe_act(req.robot_id, req.episode_id, req.step, req.instruction, frames, -1)
    teleop = robots.teleop_for(req.robot_id, req.episode_id, req.teleop_ack)
    if teleop is not None:
        teleop = teleop.model_copy(update={"operator": robots.robots[req.robot_id].teleop.operator})
    total_s = time.perf_counter() - t0
    return ActResponse(request_id=req.request_id, actions=[], log_prob=0.0, value=0.0, policy_version=-1,
                       timing=Timing(decode_ms=decode_s * 1e3, queue_ms=0.0, infer_ms=0.0, total_ms=total_s * 1e3),
                       command=command, teleop=teleop)
