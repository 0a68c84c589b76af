"""Parse and check a /v1/act body: msgpack or JSON -> ActRequest + decoded RGB images.

Runs in a thread (JPEG decoding is CPU work that must not stall the event loop). Every refusal
raises ``InputError`` with an HTTP status and the name of the offending field, so a client always
learns *what* was wrong: 400 malformed body, 413 too large, 415 unknown content type, 422 a field
that does not fit the serving policy.

Images: any size up to the configured camera size (``ImageLimit``: ``server.max_image_side``, by
default the robot cameras' ``camera_width`` x ``camera_height``) is accepted and the policy resizes
it to ``spec.image_size``. The size is read from the JPEG/PNG header and checked *before* anything
is decoded: a 631-byte JPEG may claim 4096x4096 pixels (48 MB and half a second of decoding).
Images larger than the limit, not 3-channel RGB, or not JPEG/PNG, are refused.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from PIL import Image, UnidentifiedImageError
from pydantic import ValidationError

from protocol.codec import CodecError, unpackb
from protocol.messages import STATE_ABS_MAX, ActRequest

if TYPE_CHECKING:
    from deployment.config import DeploymentConfig

Encoding = Literal["msgpack", "json"]
MSGPACK_TYPES = ("application/msgpack", "application/x-msgpack", "application/vnd.msgpack")


@dataclass(frozen=True)
class ImageLimit:
    """The largest image any route decodes: no side above ``max_side``, no more than ``max_pixels``."""
    max_side: int
    max_pixels: int

    @classmethod
    def of(cls, limit: ImageLimit | int) -> ImageLimit:
        return limit if isinstance(limit, ImageLimit) else cls(int(limit), int(limit) ** 2)

    def check(self, field: str, width: int, height: int) -> None:
        if min(width, height) < 1 or max(width, height) > self.max_side or width * height > self.max_pixels:
            raise InputError(422, field, f"image of {width}x{height} exceeds the configured camera size "
                                         f"({self.max_side} px a side, {self.max_pixels} pixels)")


def image_limit(config: DeploymentConfig) -> ImageLimit:
    """``server.max_image_side`` when set, else the robot cameras' configured size."""
    side = config.server.max_image_side
    if side is not None:
        return ImageLimit(side, side * side)
    robot = config.robot
    return ImageLimit(max(robot.camera_width, robot.camera_height), robot.camera_width * robot.camera_height)


class InputError(Exception):
    def __init__(self, status: int, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.status = status
        self.field = field
        self.message = message


@dataclass
class DecodedAct:
    request: ActRequest
    encoding: Encoding
    images: dict[str, np.ndarray]        # camera -> RGB uint8 HxWx3, for the policy
    raw_images: dict[str, bytes | np.ndarray]  # camera -> what the robot sent (JPEG bytes for the live view)
    decode_s: float


def encoding_of(content_type: str | None) -> Encoding:
    ct = (content_type or "").split(";")[0].strip().lower()
    if ct in MSGPACK_TYPES:
        return "msgpack"
    if ct == "application/json":
        return "json"
    raise InputError(415, "content-type",
                     f"{ct or 'missing'} is not accepted; send application/msgpack or application/json")


def _validation_error(e: ValidationError) -> InputError:
    err = e.errors()[0]
    field = ".".join(str(p) for p in err["loc"]) or "body"
    msg = err["msg"]
    if err["type"] == "extra_forbidden":
        msg = "unknown field"
    elif err["type"] == "missing":
        msg = "field required"
    more = f" (and {len(e.errors()) - 1} more problems)" if len(e.errors()) > 1 else ""
    return InputError(422, field, msg + more)


def _parse(body: bytes, encoding: Encoding) -> dict:
    if encoding == "msgpack":
        try:
            obj = unpackb(body)
        except CodecError as e:
            raise InputError(400, "body", f"malformed msgpack: {e}") from None
    else:
        try:
            obj = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise InputError(400, "body", f"malformed JSON: {e}") from None
        except RecursionError:
            raise InputError(400, "body", "malformed JSON: nested too deeply") from None
    if not isinstance(obj, dict):
        raise InputError(400, "body", f"must be a map/object, got {type(obj).__name__}")
    if encoding == "json" and isinstance(obj.get("images"), dict):
        obj["images"] = {cam: _b64(cam, v) for cam, v in obj["images"].items()}
    return obj


def _b64(cam: str, value: Any) -> bytes:
    if not isinstance(value, str):
        raise InputError(422, f"images.{cam}", "must be a base64 string in JSON requests")
    if value.startswith("data:"):  # tolerate a data URL pasted from a browser
        value = value.split(",", 1)[-1]
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InputError(422, f"images.{cam}", "not valid base64") from None


def _check_state_type(state: Any) -> None:
    """``state`` must be a flat list of numbers (or a 1-D numeric array) before the message model's
    finite-check sees it: that check would raise a TypeError for, say, a nested map."""
    if state is None:
        return  # missing: the model reports it
    if isinstance(state, np.ndarray):
        ok = state.ndim == 1 and state.dtype.kind in "iuf"
    else:
        ok = isinstance(state, (list, tuple)) and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in state)
    if not ok:
        raise InputError(422, "state", "must be a flat list of numbers")
    if not isinstance(state, np.ndarray) and any(isinstance(x, int) and abs(x) > STATE_ABS_MAX for x in state):
        raise InputError(422, "state", f"values must lie within +-{STATE_ABS_MAX:g} (robot units)")


def decode_image(cam: str, value: bytes | np.ndarray, limit: ImageLimit | int) -> np.ndarray:
    field, limit = f"images.{cam}", ImageLimit.of(limit)
    if isinstance(value, np.ndarray):
        if value.dtype != np.uint8 or value.ndim != 3 or value.shape[2] != 3:
            raise InputError(422, field, f"raw image must be uint8 HxWx3, got {value.dtype} {value.shape}")
        limit.check(field, value.shape[1], value.shape[0])
        return value
    try:
        img = Image.open(io.BytesIO(value))  # reads the header only: size is checked before decoding
    except Image.DecompressionBombError:  # PIL's own header check, far above any camera's size
        raise InputError(422, field, f"image header claims more than {Image.MAX_IMAGE_PIXELS} pixels: it exceeds "
                                     f"the configured camera size ({limit.max_pixels} pixels)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise InputError(422, field, f"not a decodable JPEG/PNG image ({type(e).__name__})") from None
    with img:
        if img.format not in ("JPEG", "PNG"):
            raise InputError(422, field, f"image format {img.format} not accepted (JPEG or PNG)")
        limit.check(field, img.width, img.height)
        if img.mode != "RGB":
            raise InputError(422, field, f"expected a 3-channel RGB image, got mode {img.mode}")
        try:
            return np.asarray(img)
        except Exception as e:  # noqa: BLE001 - any decoder failure on hostile bytes is the client's 422
            raise InputError(422, field, f"not a decodable JPEG/PNG image ({type(e).__name__})") from None


def decode_act(body: bytes, encoding: Encoding, cameras: list[str], state_dim: int,
               limit: ImageLimit | int) -> DecodedAct:
    """Parse, validate against the serving policy's spec, and decode the images."""
    t0 = time.perf_counter()
    obj = _parse(body, encoding)
    _check_state_type(obj.get("state"))
    try:
        req = ActRequest.model_validate(obj)
    except ValidationError as e:
        raise _validation_error(e) from None
    except (TypeError, ValueError) as e:  # a validator that raised something pydantic does not wrap
        raise InputError(422, "body", f"invalid request ({type(e).__name__}: {e})") from None
    if len(req.state) != state_dim:
        raise InputError(422, "state", f"expected {state_dim} values, got {len(req.state)}")
    for cam in req.images:
        if cam not in cameras:
            raise InputError(422, f"images.{cam}", f"unknown camera (this policy uses {cameras})")
    for cam in cameras:
        if cam not in req.images:
            raise InputError(422, f"images.{cam}", f"missing camera (this policy uses {cameras})")
    images = {cam: decode_image(cam, req.images[cam], limit) for cam in cameras}
    raw = {cam: (bytes(v) if isinstance(v, bytearray) else v) for cam, v in req.images.items()}
    return DecodedAct(req, encoding, images, raw, time.perf_counter() - t0)
