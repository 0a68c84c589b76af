"""Property-based tests of the wire codec (protocol/codec.py) and the typed messages
(protocol/messages.py): round trips, arbitrary bytes never raise anything but CodecError, and no
non-numeric array (object, str, bytes, void, structured) ever comes out of a decode."""

from __future__ import annotations

import msgpack
import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from protocol.codec import CodecError, packb, unpackb
from protocol.images import as_image, decode_jpeg
from protocol.messages import (
    Ack,
    ActRequest,
    EpisodeEnd,
    Hello,
    Relabel,
    StepMsg,
    decode_message,
    encode_message,
)

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])

numeric_dtypes = st.one_of(hnp.boolean_dtypes(), hnp.integer_dtypes(), hnp.unsigned_integer_dtypes(),
                           hnp.floating_dtypes())
arrays = numeric_dtypes.flatmap(lambda dt: hnp.arrays(dt, hnp.array_shapes(min_dims=0, max_dims=3, max_side=5)))
scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(allow_nan=False),
                    st.text(max_size=20), st.binary(max_size=20))
trees = st.recursive(st.one_of(scalars, arrays),
                     lambda kids: st.one_of(st.lists(kids, max_size=4),
                                            st.dictionaries(st.text(max_size=8), kids, max_size=4)),
                     max_leaves=12)


def _same(a, b) -> bool:
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape and \
            np.array_equal(a, b, equal_nan=a.dtype.kind == "f")
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, list) and len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return a == b and type(a) is type(b)


def _no_unsafe_arrays(obj) -> None:
    if isinstance(obj, np.ndarray):
        assert obj.dtype.kind in "biuf" and not obj.dtype.hasobject and obj.dtype.fields is None, obj.dtype
    elif isinstance(obj, dict):
        for v in obj.values():
            _no_unsafe_arrays(v)
    elif isinstance(obj, list):
        for v in obj:
            _no_unsafe_arrays(v)
    else:
        assert isinstance(obj, (type(None), bool, int, float, str, bytes, msgpack.Timestamp)), type(obj)


@FAST
@given(trees)
def test_any_tree_of_numeric_arrays_round_trips(tree):
    assert _same(tree, unpackb(packb(tree)))


@FAST
@given(st.binary(max_size=400))
def test_arbitrary_bytes_decode_or_raise_codec_error(data):
    try:
        out = unpackb(data)
    except CodecError:
        return
    _no_unsafe_arrays(out)


# An attacker's array header: any dtype string (object, unicode, void, structured, sub-arrays, byte
# order marks), any shape, any payload. Decoding either gives a numeric array or a CodecError.
dtype_strings = st.one_of(
    st.sampled_from(["O", "|O", "<U4", "S3", "V8", "<f8", "<i4", "u1", "?", "[('a','<i4')]", "(2,)i4", "M8[s]",
                     "m8", "c16", "<f2", "object", "str", "int", "float", "b1", "i8,i8", "U", ">f8"]),
    st.text(max_size=12))
shapes = st.one_of(st.lists(st.integers(-3, 2**40), max_size=4), st.text(max_size=4), st.none(), st.integers(-5, 5))


@FAST
@given(dtype_strings, shapes, st.one_of(st.binary(max_size=64), st.text(max_size=8), st.integers(-(2**63), 2**63 - 1)),
       st.booleans())
def test_forged_array_headers_never_yield_unsafe_arrays(dtype, shape, data, nested):
    obj = {"__ndarray__": True, "dtype": dtype, "shape": shape, "data": data}
    wire = msgpack.packb({"x": [obj]} if nested else obj, use_bin_type=True)
    try:
        out = unpackb(wire)
    except CodecError:
        return
    _no_unsafe_arrays(out)


@FAST
@given(st.binary(max_size=300))
def test_arbitrary_bytes_never_decode_to_a_message_except_by_the_schema(data):
    try:
        msg = decode_message(data)
    except CodecError:
        return
    assert isinstance(msg, (Hello, StepMsg, EpisodeEnd, Relabel, Ack))


ids = st.from_regex(r"\A[A-Za-z0-9][A-Za-z0-9_-]{0,20}\Z")
finite = st.floats(-1e6, 1e6, allow_nan=False)
vec7 = st.lists(finite, min_size=7, max_size=7)
messages = st.one_of(
    st.builds(Hello, robot_id=ids, config_hash=st.text(max_size=16), token=st.text(max_size=16)),
    st.builds(StepMsg, robot_id=ids, episode_id=ids, step=st.integers(0, 10**6),
              images=st.dictionaries(ids, st.binary(max_size=40), min_size=1, max_size=2), state=vec7, action=vec7,
              action_chunk=st.one_of(st.none(), st.lists(vec7, min_size=1, max_size=4)),
              chunk_index=st.integers(0, 8), log_prob=st.one_of(st.none(), finite),
              policy_version=st.integers(-1, 10**4), instruction=st.text(max_size=40),
              safety=st.dictionaries(st.text(max_size=10), st.integers(0, 100), max_size=3)),
    st.builds(EpisodeEnd, robot_id=ids, episode_id=ids, outcome=st.sampled_from(["success", "failure", "aborted"]),
              label_source=st.sampled_from(["operator", "auto", "timeout"]), n_steps=st.integers(0, 10**5),
              instruction=st.text(max_size=40), task=st.text(max_size=10),
              extra=st.dictionaries(st.text(max_size=8), st.one_of(st.integers(-(2**63), 2**63 - 1), st.text(max_size=8)),
                                    max_size=3)),
    st.builds(Relabel, robot_id=ids, episode_id=ids, outcome=st.sampled_from(["success", "failure", "aborted"])),
    st.builds(Ack, seq=st.integers(0, 2**63 - 1), ok=st.booleans(), duplicate=st.booleans(), error=st.text(max_size=30)),
)


@FAST
@given(messages)
def test_typed_messages_round_trip(msg):
    back = decode_message(encode_message(msg))
    assert type(back) is type(msg) and back == msg


@FAST
@given(messages, st.data())
def test_corrupted_messages_are_codec_errors(msg, data):
    wire = bytearray(encode_message(msg))
    for _ in range(data.draw(st.integers(1, 4))):
        i = data.draw(st.integers(0, len(wire) - 1))
        wire[i] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(wire)))
    try:
        out = decode_message(bytes(wire[:cut]))
    except CodecError:
        return
    assert isinstance(out, (Hello, StepMsg, EpisodeEnd, Relabel, Ack))


@FAST
@given(st.dictionaries(st.sampled_from(["request_id", "robot_id", "episode_id", "step", "t_capture", "instruction",
                                        "images", "state", "mode", "schema", "extra"]),
                       st.one_of(scalars, st.lists(scalars, max_size=8), st.dictionaries(st.text(max_size=4),
                                                                                     scalars, max_size=2)),
                       max_size=11))
def test_act_request_validation_fails_only_with_value_errors(obj):
    try:
        req = ActRequest.model_validate(obj)
    except ValueError:  # pydantic.ValidationError is a ValueError
        return
    assert np.all(np.isfinite(req.state))


@FAST
@given(st.binary(max_size=200))
def test_images_decode_or_raise_codec_error(data):
    for fn in (decode_jpeg, as_image):
        try:
            img = fn(data)
        except CodecError:
            continue
        assert img.dtype == np.uint8 and img.ndim == 3
