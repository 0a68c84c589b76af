import time

import numpy as np
import pytest

from protocol import CodecError, decode_jpeg, encode_jpeg, packb, unpackb
from protocol.messages import (
    SCHEMA_VERSION,
    Ack,
    ActRequest,
    ActResponse,
    EpisodeEnd,
    Hello,
    Relabel,
    SchemaError,
    StepMsg,
    Timing,
    decode_message,
    encode_message,
)


def _img(seed=0):
    return np.random.default_rng(seed).integers(0, 255, (32, 32, 3), dtype=np.uint8)


@pytest.mark.parametrize("dtype", ["bool", "int8", "int32", "int64", "uint8", "uint16", "float16", "float32", "float64"])
def test_numeric_arrays_roundtrip(dtype):
    a = (np.arange(24).reshape(2, 3, 4) % 2).astype(dtype)
    b = unpackb(packb({"a": a, "nested": [a, {"x": a}]}))
    for got in (b["a"], b["nested"][0], b["nested"][1]["x"]):
        assert got.dtype == a.dtype and got.shape == a.shape and np.array_equal(got, a)


@pytest.mark.parametrize("bad", [np.array([object(), 1], dtype=object), np.array(["a", "b"]),
                                 np.zeros(2, dtype=[("x", "f4")])])
def test_non_numeric_arrays_refused_on_encode(bad):
    with pytest.raises(CodecError, match="not allowed"):
        packb({"a": bad})


def test_object_dtype_refused_on_decode():
    import msgpack
    raw = msgpack.packb({"__ndarray__": True, "data": b"\0" * 8, "dtype": "|O", "shape": [1]})
    with pytest.raises(CodecError, match="not allowed"):
        unpackb(raw)


def test_truncated_array_refused():
    import msgpack
    raw = msgpack.packb({"__ndarray__": True, "data": b"\0" * 7, "dtype": "<f8", "shape": [1]})
    with pytest.raises(CodecError, match="needs 8 bytes"):
        unpackb(raw)


def test_garbage_is_codec_error():
    with pytest.raises(CodecError):
        unpackb(b"\xc1\xff\x00garbage")


def test_arbitrary_object_not_encodable():
    with pytest.raises(CodecError, match="cannot encode"):
        packb({"x": object()})


def test_jpeg_roundtrip_close():
    img = np.full((48, 64, 3), 120, np.uint8)
    img[10:20, 10:30] = (255, 0, 0)
    out = decode_jpeg(encode_jpeg(img))
    assert out.shape == img.shape and np.abs(out.astype(int) - img).mean() < 4


def test_bad_jpeg_is_codec_error():
    with pytest.raises(CodecError, match="not a decodable"):
        decode_jpeg(b"not an image")


def _all_messages():
    jpg = encode_jpeg(_img())
    return [
        Hello(robot_id="r1", config_hash="abc", token="t"),
        StepMsg(robot_id="r1", episode_id="e1", step=3, images={"front": jpg}, state=[0.0] * 7,
                action=[0.1] * 7, action_chunk=[[0.1] * 7] * 4, chunk_index=0, log_prob=-1.5,
                value=0.2, policy_version=4, instruction="reach the red block", t_capture=time.time(),
                safety={"clamped": 1}),
        EpisodeEnd(robot_id="r1", episode_id="e1", outcome="success", label_source="auto", n_steps=10,
                   instruction="reach the red block", task="reach"),
        Relabel(robot_id="r1", episode_id="e1", outcome="failure"),
        Ack(seq=5, duplicate=True),
    ]


@pytest.mark.parametrize("msg", _all_messages(), ids=lambda m: type(m).__name__)
def test_zmq_messages_roundtrip(msg):
    back = decode_message(encode_message(msg))
    assert type(back) is type(msg) and back == msg


def test_http_messages_roundtrip():
    req = ActRequest(request_id="q1", robot_id="r1", episode_id="e1", step=0, t_capture=1.0,
                     instruction="reach", images={"front": encode_jpeg(_img()), "wrist": _img(1)},
                     state=np.zeros(7), mode="sample")
    back = ActRequest.model_validate(unpackb(packb(req.to_wire())))
    assert back.request_id == "q1" and np.array_equal(back.images["wrist"], _img(1))
    resp = ActResponse(request_id="q1", actions=[[0.0] * 7] * 4, log_prob=-1.0, value=0.5, policy_version=2,
                       timing=Timing(decode_ms=1, queue_ms=0, infer_ms=3, total_ms=4))
    assert ActResponse.model_validate(unpackb(packb(resp.to_wire()))) == resp


def test_unknown_schema_refused():
    wire = Hello(robot_id="r1", config_hash="x").to_wire()
    wire["schema"] = SCHEMA_VERSION + 1
    with pytest.raises(SchemaError, match="schema version"):
        decode_message(packb(wire))
    with pytest.raises(ValueError, match="schema version"):
        Hello.model_validate(wire)


def test_unknown_type_and_bad_fields_refused():
    with pytest.raises(CodecError, match="unknown message type"):
        decode_message(packb({"schema": SCHEMA_VERSION, "type": "nope"}))
    wire = _all_messages()[1].to_wire()
    wire["action"] = [float("nan")] * 7
    with pytest.raises(CodecError, match="action"):
        decode_message(packb(wire))


@pytest.mark.parametrize("bad_id", ["../etc", "a/b", "", ".hidden", "x" * 65])
def test_ids_cannot_escape_directories(bad_id):
    with pytest.raises(ValueError):
        Hello(robot_id=bad_id, config_hash="x")


def test_nan_state_refused_naming_field():
    with pytest.raises(ValueError, match="state"):
        ActRequest(request_id="q", robot_id="r", episode_id="e", step=0, t_capture=0, instruction="x",
                   images={"front": b"x"}, state=[float("nan")] * 7)


@pytest.mark.parametrize("bad", [{"a": 1}, "abc", None, [[1, 2], [3]], ["x"]])
def test_non_numeric_state_is_a_validation_error(bad):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="state"):
        ActRequest(request_id="q", robot_id="r", episode_id="e", step=0, t_capture=0, instruction="x",
                   images={"front": b"x"}, state=bad)
