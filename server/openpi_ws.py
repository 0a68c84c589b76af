"""openpi's websocket policy protocol on the vlaloop server, for robot code that already runs
``openpi_client.websocket_client_policy.WebsocketClientPolicy`` (and ``ActionChunkBroker``).

The wire, as openpi's client speaks it (``ws://host:port``, the root path — the operator page's
``GET /`` is an HTTP route and is unaffected):

* on connect the server sends ONE binary frame: msgpack-numpy metadata (here: the serving policy's
  metadata, action horizon, the key mapping in use);
* then per step the client sends a binary frame, a msgpack-numpy observation dict, and the server
  answers a binary frame ``{"actions": float32 [H, D] (robot units), "server_timing": {...},
  "policy_timing": {...}, "vlaloop/policy_version": int, ...}``;
* an error is answered as a TEXT frame, which openpi's client raises as
  ``RuntimeError("Error in inference server:\n<text>")``. The text starts with an HTTP-like status
  and names the offending key (``422 observation/state: state contains NaN or inf``). Unlike
  openpi's own server, the connection stays open after a refused observation.

msgpack-numpy arrays are decoded here without openpi's code: only numeric dtypes, sizes checked
(``server.dropin.numeric_array``). Auth: openpi's client sends ``Authorization: Api-Key <key>``;
the robot token is accepted that way (or as ``Bearer``). Observation keys map onto vlaloop's
cameras/state/instruction through ``server.dropin.openpi`` (``server.dropin_config.OpenpiKeys``);
other keys are ignored, except unknown ``vlaloop/*`` keys, which are refused (typos).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import time
from typing import Any

import msgpack
import numpy as np
from fastapi import APIRouter, WebSocket, WebSocketDisconnect

from deployment.dropin import OpenpiKeys
from protocol.messages import ID_PATTERN
from server.act import serve_observation
from server.batcher import InferenceFailed
from server.decode import ImageLimit, InputError
from server.dropin import (
    as_image,
    as_state,
    client_robot_id,
    dropin_config,
    numeric_array,
    numeric_dtype,
)
from server.policy_holder import NoPolicyLoaded

log = logging.getLogger(__name__)
router = APIRouter(tags=["drop-in"])

EXTRAS = ("vlaloop/robot_id", "vlaloop/episode_id", "vlaloop/step", "vlaloop/mode")
POLICY_VIOLATION = 1008


# ---------------------------------------------------------------- msgpack-numpy, numeric only


class WireArray:
    """A msgpack-numpy array or scalar as it arrived; built (numeric dtypes only) when a mapped key is
    read, so a refusal names the key and keys the mapping ignores are never built."""

    def __init__(self, parts: dict) -> None:
        self.parts = parts

    def build(self, field: str) -> np.ndarray | np.generic:
        p = self.parts
        if b"__ndarray__" in p:
            return numeric_array(_str(p.get(b"dtype")), p.get(b"shape"), p.get(b"data"), field)
        data = p.get(b"data")
        if not isinstance(data, (bool, int, float)):
            raise InputError(422, field, "numpy scalar data must be a number")
        return numeric_dtype(_str(p.get(b"dtype")), field).type(data)


def _unpack_hook(obj: dict) -> Any:
    return WireArray(obj) if (b"__ndarray__" in obj or b"__npgeneric__" in obj) else obj


def built(value: Any, field: str) -> Any:
    return value.build(field) if isinstance(value, WireArray) else value


def _str(value: Any) -> Any:
    return value.decode() if isinstance(value, bytes) else value


def unpack_observation(frame: bytes) -> dict:
    try:
        obj = msgpack.unpackb(frame, raw=False, object_hook=_unpack_hook, strict_map_key=False)
    except Exception as e:  # msgpack raises several types for bad input
        raise InputError(400, "observation", f"malformed msgpack: {type(e).__name__}: {e}") from None
    if not isinstance(obj, dict):
        raise InputError(400, "observation", f"must be a dict, got {type(obj).__name__}")
    return obj


def _pack_default(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        return {b"__ndarray__": True, b"data": obj.tobytes(), b"dtype": obj.dtype.str, b"shape": obj.shape}
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise TypeError(f"cannot pack {type(obj).__name__}")


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, default=_pack_default, use_bin_type=True)


# ---------------------------------------------------------------- observation -> vlaloop


def lookup(obs: dict, key: str) -> Any:
    """``obs[key]``, else ``key`` as a ``/``-separated path into nested dicts; KeyError if neither."""
    if key in obs:
        return obs[key]
    node: Any = obs
    for part in key.split("/"):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(key)
        node = node[part]
    return node


def _required(obs: dict, key: str, what: str) -> Any:
    try:
        return built(lookup(obs, key), key)
    except KeyError:
        raise InputError(422, key, f"missing ({what}); the observation has keys {sorted(map(str, obs))[:20]}") from None


def _extra_id(obs: dict, key: str) -> str | None:
    value = built(obs.get(key), key)
    if value is None:
        return None
    if not isinstance(value, str) or not re.match(ID_PATTERN, value):
        raise InputError(422, key, f"must be a string matching {ID_PATTERN}")
    return value


def _extras(obs: dict) -> dict:
    unknown = [k for k in obs if isinstance(k, str) and k.startswith("vlaloop/") and k not in EXTRAS]
    if unknown:
        raise InputError(422, unknown[0], f"unknown vlaloop key (known: {list(EXTRAS)})")
    step = built(obs.get("vlaloop/step"), "vlaloop/step")
    if step is not None:
        if isinstance(step, np.generic):
            step = step.item()
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise InputError(422, "vlaloop/step", "must be a non-negative int")
    mode = built(obs.get("vlaloop/mode", "greedy"), "vlaloop/mode")
    if mode not in ("greedy", "sample"):
        raise InputError(422, "vlaloop/mode", "must be 'greedy' or 'sample'")
    return {"robot_id": _extra_id(obs, "vlaloop/robot_id"), "episode_id": _extra_id(obs, "vlaloop/episode_id"),
            "step": step, "mode": mode}


def to_observation(obs: dict, keys: OpenpiKeys, cameras: list[str], state_dim: int,
                   limit: ImageLimit | int) -> tuple[dict[str, np.ndarray], np.ndarray, str, dict]:
    """openpi observation dict -> (images by camera, state, instruction, extras). Raises InputError."""
    extras = _extras(obs)
    images = {}
    for cam in cameras:
        key = keys.cameras.get(cam)
        if key is None:
            raise InputError(500, "server.dropin.openpi.cameras",
                             f"no openpi key configured for camera {cam!r} (policy cameras: {cameras})")
        images[cam] = as_image(_required(obs, key, f"image for camera {cam!r}"), key, limit)
    state = as_state([(k, _required(obs, k, "state")) for k in keys.state], state_dim)
    instruction = _required(obs, keys.instruction, "instruction")
    if isinstance(instruction, bytes):
        instruction = instruction.decode("utf-8", "replace")
    if not isinstance(instruction, str) or not instruction.strip():
        raise InputError(422, keys.instruction, "instruction must be a non-empty string")
    return images, state, instruction, extras


# ---------------------------------------------------------------- the session


def _authorized(ws: WebSocket) -> bool:
    token = ws.app.state.config.server.robot_token
    if not token:
        return True  # auth off (loopback only, enforced at startup)
    header = ws.headers.get("authorization", "")
    scheme, _, key = header.partition(" ")
    if scheme.lower() not in ("api-key", "bearer") or not key:
        return False
    return hmac.compare_digest(key.strip().encode(), token.encode())


def metadata(app: Any, keys: OpenpiKeys) -> dict:
    policy = app.state.holder.policy
    meta: dict[str, Any] = {"server": "vlaloop", "protocol": "openpi-websocket",
                            "openpi_keys": keys.model_dump(), "extras": list(EXTRAS),
                            "policy_version": None if policy is None else int(policy.version)}
    if policy is not None:
        spec = policy.spec
        meta.update(action_horizon=int(spec.chunk), action_dim=int(spec.action_dim),
                    cameras=list(spec.cameras), image_size=int(spec.image_size), state_dim=int(spec.state_dim),
                    policy=policy.metadata())
    return meta


async def _answer(ws: WebSocket, frame: bytes, keys: OpenpiKeys, default_robot: str,
                  prev_total_ms: float | None) -> float:
    """Decode, run and answer one observation frame; returns this step's total ms."""
    t0 = time.perf_counter()
    app = ws.app
    config = app.state.config.server
    policy = app.state.holder.require()
    if len(frame) > config.max_body_bytes:
        raise InputError(413, "observation", f"{len(frame)} bytes exceeds the limit of {config.max_body_bytes}")
    spec = policy.spec

    def decode():
        return to_observation(unpack_observation(frame), keys, list(spec.cameras), int(spec.state_dim),
                              app.state.image_limit)

    images, state, instruction, extras = await asyncio.get_running_loop().run_in_executor(
        app.state.decode_pool, decode)
    served = await serve_observation(
        app, t0, time.perf_counter() - t0, images=images, state=state, instruction=instruction,
        mode=extras["mode"], robot_id=extras["robot_id"] or default_robot, episode_id=extras["episode_id"],
        step=extras["step"], encoding="openpi")
    r = served.result
    timing = {"infer_ms": r.infer_s * 1e3, "decode_ms": served.decode_s * 1e3, "queue_ms": r.queue_s * 1e3,
              "total_ms": served.total_s * 1e3}
    if prev_total_ms is not None:
        timing["prev_total_ms"] = prev_total_ms
    out = {"actions": np.asarray(r.output.actions, dtype=np.float32),
           "server_timing": timing, "policy_timing": {"infer_ms": r.infer_s * 1e3},
           "vlaloop/policy_version": r.version, "vlaloop/log_prob": float(r.output.log_prob),
           "vlaloop/value": float(r.output.value), "vlaloop/command": served.command,
           "vlaloop/batch_size": r.batch_size}
    await ws.send_bytes(pack(out))
    return (time.perf_counter() - t0) * 1e3


def _error_text(e: Exception) -> tuple[str, str]:
    """(text for the client, metrics kind)."""
    if isinstance(e, InputError):
        kind = {400: "malformed", 413: "too_large"}.get(e.status, "invalid_field")
        return f"{e.status} {e}", kind
    if isinstance(e, NoPolicyLoaded):
        return f"503 {e}: waiting for a checkpoint (see GET /v1/policy)", "no_policy"
    return f"500 inference failed: {e}", "inference"


@router.websocket("/")
async def openpi_session(ws: WebSocket) -> None:
    app = ws.app
    if not _authorized(ws):
        app.state.metrics.errors.labels(kind="auth").inc()
        await ws.close(code=POLICY_VIOLATION, reason="robot token required (Authorization: Api-Key <token>)")
        return
    await ws.accept()
    keys = dropin_config(app).openpi
    client = ws.client
    default_robot = client_robot_id("openpi", client.host if client else None, client.port if client else None)
    await ws.send_bytes(pack(metadata(app, keys)))
    prev_total_ms = None
    try:
        while True:
            message = await ws.receive()
            if message["type"] == "websocket.disconnect":
                return
            frame = message.get("bytes")
            try:
                if frame is None:
                    raise InputError(400, "observation", "send msgpack-numpy in a binary frame, not text")
                prev_total_ms = await _answer(ws, frame, keys, default_robot, prev_total_ms)
            except (InputError, NoPolicyLoaded, InferenceFailed) as e:
                text, kind = _error_text(e)
                app.state.metrics.errors.labels(kind=kind).inc()
                if kind == "inference":
                    log.error("openpi session %s: %s", default_robot, text)
                await ws.send_text(text)
    except WebSocketDisconnect:
        return
    except Exception as e:  # a bug, not the client's fault: say so as openpi's server does, then close
        log.exception("openpi session %s failed", default_robot)
        app.state.metrics.errors.labels(kind="internal").inc()
        await ws.send_text(f"500 internal server error: {type(e).__name__}: {e}")
        await ws.close(code=1011)
