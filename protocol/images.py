"""JPEG helpers for camera frames (RGB uint8, H x W x 3)."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

from protocol.codec import CodecError

MAX_IMAGE_PIXELS = 4096 * 4096


def encode_jpeg(image: np.ndarray, quality: int = 90) -> bytes:
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise CodecError(f"image must be uint8 HxWx3, got {image.dtype} {image.shape}")
    buf = io.BytesIO()
    Image.fromarray(image, "RGB").save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def decode_jpeg(data: bytes) -> np.ndarray:
    """Decode JPEG (or PNG) bytes to an RGB uint8 array; raises CodecError on anything else."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.format not in ("JPEG", "PNG"):
                raise CodecError(f"image format {img.format} not accepted (JPEG or PNG)")
            if img.width * img.height > MAX_IMAGE_PIXELS:
                raise CodecError(f"image of {img.width}x{img.height} is too large")
            return np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise CodecError(f"not a decodable JPEG/PNG image: {e}") from None


def as_image(value: object) -> np.ndarray:
    """Accept JPEG/PNG bytes or a raw uint8 HxWx3 array (the two encodings the wire protocol allows)."""
    if isinstance(value, (bytes, bytearray)):
        return decode_jpeg(bytes(value))
    if isinstance(value, np.ndarray):
        if value.dtype != np.uint8 or value.ndim != 3 or value.shape[2] != 3:
            raise CodecError(f"raw image must be uint8 HxWx3, got {value.dtype} {value.shape}")
        return value
    raise CodecError(f"image must be JPEG bytes or a uint8 array, got {type(value).__name__}")
