"""msgpack with numeric numpy arrays, and nothing else.

Arrays travel as ``{"__ndarray__": True, "data": bytes, "dtype": str, "shape": [..]}`` — the same
layout as openpi's ``msgpack_numpy``, so openpi clients and vlaloop share one codec. Object,
string and structured dtypes are refused on both sides: decoding never runs code.
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

# Numeric dtypes only. "O", "U", "S", "V" (object/str/bytes/void) could smuggle Python objects
# or make sizes ambiguous, so they are never encoded or decoded.
ALLOWED_KINDS = frozenset("biuf")  # bool, signed int, unsigned int, float
MAX_ARRAY_BYTES = 64 * 1024 * 1024


class CodecError(ValueError):
    """A message could not be encoded or decoded; the text says which part and why."""


def _check_dtype(dtype: np.dtype, where: str) -> None:
    if dtype.kind not in ALLOWED_KINDS or dtype.hasobject or dtype.fields is not None:
        raise CodecError(f"{where}: dtype {dtype.str!r} is not allowed (numeric arrays only)")


def _encode(obj: Any) -> Any:
    if isinstance(obj, np.ndarray):
        _check_dtype(obj.dtype, "array")
        arr = obj if obj.flags.c_contiguous else obj.copy(order="C")  # (ascontiguousarray makes 0-d 1-d)
        return {"__ndarray__": True, "data": arr.tobytes(), "dtype": arr.dtype.str, "shape": list(arr.shape)}
    if isinstance(obj, np.generic):
        _check_dtype(obj.dtype, "scalar")
        return obj.item()
    raise CodecError(f"cannot encode object of type {type(obj).__name__}")


def _decode(obj: dict) -> Any:
    if obj.get("__ndarray__") is not True:
        return obj
    try:
        dtype = np.dtype(obj["dtype"])
        shape = tuple(int(s) for s in obj["shape"])
        data = obj["data"]
    except (KeyError, TypeError, ValueError) as e:
        raise CodecError(f"malformed array: {e}") from None
    _check_dtype(dtype, "array")
    if not isinstance(data, (bytes, bytearray)):
        raise CodecError("malformed array: data is not bytes")
    if any(s < 0 for s in shape):
        raise CodecError(f"malformed array: negative shape {shape}")
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if expected != len(data) or expected > MAX_ARRAY_BYTES:
        raise CodecError(f"malformed array: shape {shape} x {dtype.str} needs {expected} bytes, got {len(data)}")
    return np.frombuffer(data, dtype=dtype).reshape(shape)


def _refuse_ext(code: int, data: bytes) -> Any:
    raise CodecError(f"msgpack extension type {code} is not allowed")


def packb(obj: Any) -> bytes:
    """Encode a message (dicts, lists, scalars, bytes, numeric numpy arrays) to msgpack bytes."""
    try:
        return msgpack.packb(obj, default=_encode, use_bin_type=True)
    except CodecError:
        raise
    except (TypeError, ValueError, OverflowError) as e:
        raise CodecError(f"cannot encode message: {e}") from None


def unpackb(data: bytes, max_bytes: int = 256 * 1024 * 1024) -> Any:
    """Decode msgpack bytes; arrays come back as read-only numpy views. Raises CodecError."""
    if len(data) > max_bytes:
        raise CodecError(f"message of {len(data)} bytes exceeds the limit of {max_bytes}")
    try:
        return msgpack.unpackb(data, object_hook=_decode, ext_hook=_refuse_ext, raw=False, strict_map_key=True)
    except CodecError:
        raise
    except (msgpack.exceptions.ExtraData, msgpack.exceptions.FormatError, msgpack.exceptions.StackError) as e:
        raise CodecError(f"not valid msgpack: {e}") from None
    except (ValueError, TypeError, UnicodeDecodeError) as e:
        raise CodecError(f"not valid msgpack: {e}") from None
