"""Message schemas and codecs shared by every vlaloop process. No pickle anywhere."""

from protocol.codec import CodecError, packb, unpackb
from protocol.images import decode_jpeg, encode_jpeg
from protocol.messages import SCHEMA_VERSION

__all__ = ["SCHEMA_VERSION", "CodecError", "packb", "unpackb", "encode_jpeg", "decode_jpeg"]
