"""OpenVLA's REST convention (``vla-scripts/deploy.py``) on the vlaloop server: ``POST /act`` with JSON
``{"image", "instruction", "unnorm_key"?}``, answered with ONE action (the first of the chunk, robot
units) encoded the way json_numpy encodes it, so robot code written for OpenVLA's server —
``json_numpy.patch()`` then ``requests.post(url + "/act", json={...}).json()`` — gets an ndarray back.

* ``image``: a json_numpy array ``{"__numpy__": base64, "dtype", "shape"}`` (decoded here without
  json_numpy or pickle: only numeric dtypes) or a nested list, uint8 HxWx3 (CHW is transposed).
* ``unnorm_key``: absent, or one of ``server.dropin.openvla.unnorm_keys`` (default ``["vlaloop"]``):
  the checkpoint carries its own action statistics, so a dataset name from another model is refused
  rather than silently ignored.
* vlaloop extras (optional): ``robot_id``, ``episode_id``, ``step`` (the operator page shows them),
  ``state`` (7 numbers; OpenVLA sends none, and without it the policy sees the demonstrations' mean
  state — no proprioception), ``mode`` ("greedy" default, as OpenVLA; or "sample").
* OpenVLA's ``{"encoded": "<json string>"}`` double encoding is accepted and answered in kind.
* Any other field, a missing one or a wrong value gets a 4xx ``{"detail", "field"}`` naming it
  (OpenVLA's own server answers the string "error" with HTTP 200).

Response headers carry what the body (a bare action) cannot: ``X-Vlaloop-Policy-Version``,
``X-Vlaloop-Command`` (the operator's run/pause/end_episode) and ``X-Vlaloop-Robot-Id``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import time
from typing import Any, Literal

import numpy as np
from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deployment.dropin import OpenvlaConfig
from protocol.messages import EpisodeId, RobotId
from server.act import read_body, serve_observation
from server.auth import require_robot
from server.decode import ImageLimit, InputError
from server.dropin import as_image, as_state, client_robot_id, dropin_config, numeric_array

router = APIRouter(tags=["drop-in"])

# Private codec objects: json_numpy.patch() in the same process replaces json.loads/json.dumps,
# never these classes, so what we parse and write does not depend on who patched what.
_DECODER = json.JSONDecoder()
_ENCODER = json.JSONEncoder(allow_nan=False, separators=(",", ":"))
JSON_NUMPY_KEYS = {"__numpy__", "dtype", "shape"}


class OpenvlaActIn(BaseModel):
    """The body of ``POST /act``: OpenVLA's fields plus vlaloop's optional extras."""

    model_config = ConfigDict(extra="forbid")
    image: Any = Field(description="json_numpy array or nested list, uint8 HxWx3")
    instruction: str = Field(min_length=1, max_length=512)
    unnorm_key: str | None = None
    robot_id: RobotId | None = None
    episode_id: EpisodeId | None = None
    step: int | None = Field(default=None, ge=0)
    state: Any = Field(default=None, description="7 numbers (list or json_numpy); default: the mean demo state")
    mode: Literal["greedy", "sample"] = "greedy"


def from_json_numpy(value: Any, field: str) -> Any:
    """A json_numpy dict -> ndarray (numeric dtypes only), a list -> ndarray, anything else unchanged."""
    if isinstance(value, dict):
        if set(value) != JSON_NUMPY_KEYS:
            raise InputError(422, field, f"expected a json_numpy array with keys {sorted(JSON_NUMPY_KEYS)}")
        try:
            data = base64.b64decode(value["__numpy__"], validate=True)
        except (binascii.Error, ValueError, TypeError):
            raise InputError(422, field, "__numpy__ is not valid base64") from None
        return numeric_array(value["dtype"], value["shape"], data, field)
    if isinstance(value, list):
        try:
            return np.asarray(value)
        except ValueError:
            raise InputError(422, field, "nested list is ragged") from None
    return value


def _image(value: Any, limit: ImageLimit | int) -> np.ndarray:
    arr = from_json_numpy(value, "image")
    if isinstance(arr, np.ndarray) and arr.dtype.kind in "iu" and arr.dtype != np.uint8:
        if arr.size and (arr.min() < 0 or arr.max() > 255):  # nested lists of ints arrive as int64
            raise InputError(422, "image", "pixel values must be 0..255")
        arr = arr.astype(np.uint8)
    return as_image(arr, "image", limit)


def _validation_error(e: ValidationError) -> InputError:
    err = e.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "body"
    msg = {"extra_forbidden": "unknown field (OpenVLA fields: image, instruction, unnorm_key; vlaloop "
                              "extras: robot_id, episode_id, step, state, mode)",
           "missing": "field required"}.get(err["type"], err["msg"])
    return InputError(422, field, msg)


def parse_act(body: bytes, config: OpenvlaConfig, state_dim: int, mean_state: np.ndarray,
              limit: ImageLimit | int) -> tuple[OpenvlaActIn, np.ndarray, np.ndarray, bool]:
    """-> (request, image, state, double_encoded). Raises InputError."""
    try:
        obj = _DECODER.decode(body.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise InputError(400, "body", f"malformed JSON: {e}") from None
    except RecursionError:
        raise InputError(400, "body", "malformed JSON: nested too deeply") from None
    double = isinstance(obj, dict) and "encoded" in obj
    if double:  # OpenVLA's fallback for clients without json_numpy: the payload as a JSON string
        if len(obj) != 1 or not isinstance(obj["encoded"], str):
            raise InputError(422, "encoded", "must be the only field, a JSON string")
        try:
            obj = _DECODER.decode(obj["encoded"])
        except ValueError as e:
            raise InputError(400, "encoded", f"malformed JSON: {e}") from None
        except RecursionError:
            raise InputError(400, "encoded", "malformed JSON: nested too deeply") from None
    if not isinstance(obj, dict):
        raise InputError(400, "body", f"must be a JSON object, got {type(obj).__name__}")
    try:
        req = OpenvlaActIn.model_validate(obj)
    except ValidationError as e:
        raise _validation_error(e) from None
    if req.unnorm_key is not None and req.unnorm_key not in config.unnorm_keys:
        raise InputError(422, "unnorm_key", f"{req.unnorm_key!r} is not known here: this checkpoint carries "
                                            f"its own normalization; send none or one of {config.unnorm_keys}")
    image = _image(req.image, limit)
    state = mean_state if req.state is None else as_state([("state", from_json_numpy(req.state, "state"))],
                                                          state_dim)
    return req, image, state, double


def encode_action(action: np.ndarray, double: bool) -> str:
    """One action as json_numpy writes it (what OpenVLA's server returns after json_numpy.patch())."""
    arr = np.ascontiguousarray(action, dtype=np.float64)
    wire = {"__numpy__": base64.b64encode(arr.tobytes()).decode(), "dtype": arr.dtype.str, "shape": list(arr.shape)}
    text = _ENCODER.encode(wire)
    return _ENCODER.encode(text) if double else text


@router.post("/act", dependencies=[Depends(require_robot)],
             responses={200: {"description": "one action, json_numpy-encoded: {__numpy__, dtype, shape}"},
                        400: {"description": "malformed JSON"}, 413: {"description": "body too large"},
                        422: {"description": "a field is missing, unknown or wrong"},
                        503: {"description": "no policy loaded yet"}})
async def openvla_act(request: Request) -> Response:
    t0 = time.perf_counter()
    app = request.app
    server = app.state.config.server
    policy = app.state.holder.require()
    body = await read_body(request, server.max_body_bytes)
    spec = policy.spec
    config = dropin_config(app).openvla
    camera = config.camera or spec.cameras[0]
    if camera not in spec.cameras or len(spec.cameras) != 1:
        raise InputError(500, "server.dropin.openvla.camera",
                         f"OpenVLA sends one image; this policy uses cameras {list(spec.cameras)}")
    mean_state = np.asarray(policy.norm.state_mean, dtype=np.float32)
    req, image, state, double = await asyncio.get_running_loop().run_in_executor(
        app.state.decode_pool, parse_act, body, config, int(spec.state_dim), mean_state, app.state.image_limit)
    client = request.client
    robot_id = req.robot_id or client_robot_id("openvla", client.host if client else None)
    served = await serve_observation(
        app, t0, time.perf_counter() - t0, images={camera: image}, state=state, instruction=req.instruction,
        mode=req.mode, robot_id=robot_id, episode_id=req.episode_id, step=req.step, encoding="openvla")
    r = served.result
    headers = {"X-Vlaloop-Policy-Version": str(r.version), "X-Vlaloop-Command": served.command,
               "X-Vlaloop-Robot-Id": robot_id,
               "Server-Timing": f"infer;dur={r.infer_s * 1e3:.2f}, queue;dur={r.queue_s * 1e3:.2f}, "
                                f"total;dur={served.total_s * 1e3:.2f}"}
    return Response(encode_action(np.asarray(r.output.actions)[0], double), media_type="application/json",
                    headers=headers)
