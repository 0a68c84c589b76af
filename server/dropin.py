"""What the drop-in protocols (openpi websocket, OpenVLA REST) share: safe array decoding, image and
state checks. Requests then go through ``server.act.serve_observation``, the path of ``/v1/act``:
the same batcher, policy holder and robot registry, so a drop-in client gets the serving version, shares forward passes with vlaloop robots,
and shows up on the operator page.

Arrays arrive as (dtype string, shape, raw bytes) in both protocols. Only numeric dtypes are built
(bool, int, uint, float): an object, structured, string or datetime dtype is refused before any
array exists, so nothing is ever unpickled.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
from fastapi import FastAPI

from deployment.dropin import DropinConfig
from protocol.messages import STATE_ABS_MAX
from server.decode import ImageLimit, InputError

NUMERIC_KINDS = "biuf"
MAX_DIMS = 8


def dropin_config(app: FastAPI) -> DropinConfig:
    """``server.dropin`` of the deployment config (defaults where the server config has no such field)."""
    found = getattr(app.state.config.server, "dropin", None)
    return found if isinstance(found, DropinConfig) else DropinConfig()


def numeric_dtype(dtype: Any, field: str) -> np.dtype:
    """A dtype string (``"<f4"``) -> np.dtype, refusing anything but plain bool/int/uint/float."""
    if not isinstance(dtype, str):
        raise InputError(422, field, f"array dtype must be a dtype string, got {type(dtype).__name__}")
    try:
        dt = np.dtype(dtype)
    except (TypeError, ValueError):
        raise InputError(422, field, f"unknown array dtype {dtype!r}") from None
    if dt.kind not in NUMERIC_KINDS or dt.fields is not None or dt.subdtype is not None:
        raise InputError(422, field, f"array dtype {dtype!r} refused: only bool/int/uint/float arrays are accepted")
    return dt


def numeric_array(dtype: Any, shape: Any, data: Any, field: str) -> np.ndarray:
    """Build an array from its wire parts, refusing anything but a numeric dtype with a matching size."""
    dt = numeric_dtype(dtype, field)
    if not isinstance(shape, (list, tuple)) or len(shape) > MAX_DIMS or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
        raise InputError(422, field, f"array shape must be a list of non-negative ints, got {shape!r}")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InputError(422, field, "array data must be bytes")
    expected = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    if len(data) != expected:
        raise InputError(422, field, f"array data has {len(data)} bytes, shape {list(shape)} of {dt} needs {expected}")
    return np.frombuffer(data, dtype=dt).reshape(shape)


def as_image(value: Any, field: str, limit: ImageLimit | int) -> np.ndarray:
    """uint8 RGB, HWC or CHW (a leading axis of 3 and a trailing one that is not 3 means CHW) -> HWC."""
    if not isinstance(value, np.ndarray):
        raise InputError(422, field, f"image must be a uint8 array, got {type(value).__name__}")
    if value.dtype != np.uint8:
        raise InputError(422, field, f"image must be uint8 (0..255), got {value.dtype}")
    if value.ndim == 3 and value.shape[0] == 3 and value.shape[2] != 3:
        value = np.moveaxis(value, 0, -1)
    if value.ndim != 3 or value.shape[2] != 3:
        raise InputError(422, field, f"image must be HxWx3 or 3xHxW RGB, got shape {list(value.shape)}")
    ImageLimit.of(limit).check(field, value.shape[1], value.shape[0])
    return np.ascontiguousarray(value)


def as_state(parts: list[tuple[str, Any]], state_dim: int) -> np.ndarray:
    """Concatenate numeric values (arrays, lists, scalars) into a finite float32 vector of ``state_dim``."""
    pieces = []
    for field, value in parts:
        try:
            arr = np.asarray(value)
        except (TypeError, ValueError):
            raise InputError(422, field, "state must be numbers") from None
        if arr.dtype.kind not in NUMERIC_KINDS:
            raise InputError(422, field, f"state must be numbers, got dtype {arr.dtype}")
        arr = arr.astype(np.float64).reshape(-1)
        if not np.isfinite(arr).all():
            raise InputError(422, field, "state contains NaN or inf")
        if np.abs(arr).max(initial=0.0) > STATE_ABS_MAX:
            raise InputError(422, field, f"state values must lie within +-{STATE_ABS_MAX:g} (robot units)")
        arr = arr.astype(np.float32)
        pieces.append(arr)
    state = np.concatenate(pieces) if pieces else np.zeros(0, np.float32)
    if state.shape[0] != state_dim:
        names = " + ".join(f for f, _ in parts)
        raise InputError(422, names, f"state has {state.shape[0]} values, this policy needs {state_dim}")
    return state


def client_robot_id(prefix: str, host: str | None, port: int | None = None) -> str:
    """A robot id for a client that did not name itself: protocol + address (fits protocol.ID_PATTERN)."""
    parts = [prefix, host or "unknown"] + ([str(port)] if port is not None else [])
    return re.sub(r"[^A-Za-z0-9_-]", "-", "-".join(parts))[:64]
