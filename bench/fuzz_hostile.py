"""Property-based fuzzing (Hypothesis) of everything that parses hostile input: the /v1/act body
decoder (JSON and msgpack, images with any header), the drop-ins' image and state checks, the
importer's path templates and ``vlaloop/meta`` checker. Each property says: the only exception is
the refusal type (InputError / FormatError), and whatever is accepted is within the limits.

    python -m bench.fuzz_hostile                 # 20 000 cases per property (a few minutes)
    python -m bench.fuzz_hostile --examples 500

The suite runs the same properties with a few hundred cases each (tests/server/test_fuzz_decoders.py).
Prints a table: property, cases run, failures found.
"""

from __future__ import annotations

import argparse
import io
import json
import struct
import time
import zlib
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

CAMERAS, STATE_DIM = ["front"], 7
LIMIT_SIDE, LIMIT_PIXELS = 640, 640 * 480


def _jpeg(w: int, h: int) -> bytes:
    from protocol.images import encode_jpeg

    return encode_jpeg(np.zeros((8, 8, 3), np.uint8), quality=50) if (w, h) == (8, 8) else jpeg_claiming(w, h)


def jpeg_claiming(w: int, h: int) -> bytes:
    """A small JPEG whose SOF header claims w x h pixels (the data is an 8x8 image's)."""
    from protocol.images import encode_jpeg

    data = bytearray(encode_jpeg(np.zeros((8, 8, 3), np.uint8), quality=50))
    sof = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, h, w)
    return bytes(data)


def png_claiming(w: int, h: int) -> bytes:
    """A small PNG whose IHDR claims w x h pixels (valid CRC, an 8x8 image's data)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, format="PNG")
    data = bytearray(buf.getvalue())
    struct.pack_into(">II", data, 16, w, h)
    struct.pack_into(">I", data, 29, zlib.crc32(bytes(data[12:29])))
    return bytes(data)


sides = st.integers(min_value=0, max_value=65_535)  # a JPEG header holds 16 bits a side
images = st.one_of(
    st.builds(jpeg_claiming, sides, sides), st.builds(png_claiming, st.integers(0, 2**31 - 1), st.integers(0, 2**31 - 1)),
    st.binary(max_size=64).map(lambda b: b"\xff\xd8\xff" + b), st.binary(max_size=64).map(lambda b: b"\x89PNG\r\n" + b),
    st.builds(lambda h, w, c: np.zeros((h, w, c), np.uint8), st.integers(0, 800), st.integers(0, 800),
              st.sampled_from([1, 3, 4])))
numbers = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.integers(min_value=-10**4000,
                                                                                max_value=10**4000))
states = st.one_of(st.lists(numbers, min_size=0, max_size=9), st.text(max_size=5), st.none(),
                   st.dictionaries(st.text(max_size=3), numbers, max_size=2))


def _act(images_: dict, state, **extra) -> dict:
    return {"schema": 1, "request_id": "r", "robot_id": "rob0", "episode_id": "e", "step": 0, "t_capture": 0.0,
            "instruction": "reach", "images": images_, "state": state, **extra}


def _check_decode(body: bytes, encoding: str) -> None:
    from server.decode import ImageLimit, InputError, decode_act

    try:
        out = decode_act(body, encoding, CAMERAS, STATE_DIM, ImageLimit(LIMIT_SIDE, LIMIT_PIXELS))
    except InputError as e:
        assert 400 <= e.status < 500 and e.field, e
        return
    for image in out.images.values():
        h, w = image.shape[:2]
        assert max(h, w) <= LIMIT_SIDE and h * w <= LIMIT_PIXELS
    assert all(abs(x) <= 1e4 for x in out.request.state)


def prop_msgpack_act(examples: int):
    from protocol.codec import packb

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(image=images, state=states, extra=st.dictionaries(st.sampled_from(["mode", "step", "x"]),
                                                              st.one_of(st.integers(-5, 5), st.text(max_size=4)),
                                                              max_size=2))
    def run(image, state, extra):
        try:
            body = packb(_act({"front": image}, state, **extra))
        except (ValueError, OverflowError):  # the client cannot even encode it (a 4000-digit int)
            return
        _check_decode(body, "msgpack")
    return run


def prop_json_act(examples: int):
    import base64

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(image=images.filter(lambda x: isinstance(x, bytes)), state=states, depth=st.integers(0, 3000))
    def run(image, state, depth):
        body = json.dumps(_act({"front": base64.b64encode(image).decode()}, state)).encode()
        if depth > 2000:  # a deeply nested state
            body = body.replace(b'"state": ', b'"state": ' + b"[" * depth, 1)[:-1] + b"]" * depth + b"}"
        _check_decode(body, "json")
    return run


def prop_raw_bytes(examples: int):
    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(body=st.binary(max_size=512), encoding=st.sampled_from(["msgpack", "json"]))
    def run(body, encoding):
        _check_decode(body, encoding)
    return run


def prop_dropin_state(examples: int):
    from server.decode import InputError
    from server.dropin import as_state

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(values=st.lists(st.floats(allow_nan=True, allow_infinity=True, width=32), max_size=9))
    def run(values):
        try:
            state = as_state([("observation/state", np.asarray(values, np.float32))], STATE_DIM)
        except InputError as e:
            assert e.status == 422
            return
        assert np.isfinite(state).all() and np.abs(state).max(initial=0) <= 1e4
    return run


def prop_import_templates(examples: int):
    from lerobot_format.layout import FormatError
    from lerobot_format.reader import dataset_path

    root = Path("/tmp/vlaloop-fuzz-dataset")

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(template=st.one_of(st.text(max_size=60), st.sampled_from([
        "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet", "{chunk_index:>100000000}", "{0}", "{x}",
        "../{chunk_index}", "/etc/{file_index}", "{chunk_index!r}", "{chunk_index:%}"])),
           chunk=st.integers(0, 10**6), file=st.integers(0, 10**6))
    def run(template, chunk, file):
        try:
            path = dataset_path(root, template, "data_path", chunk_index=chunk, file_index=file)
        except FormatError:
            return
        assert path.is_relative_to(root.resolve()) and len(str(path)) < 2000
    return run


def prop_import_meta(examples: int):
    from lerobot_format.importer import exported_meta
    from lerobot_format.layout import FormatError
    from lerobot_format.reader import EpisodeRef

    values = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
                                    st.text(max_size=20)),
                          lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=8),
                                                                                            children, max_size=3),
                          max_leaves=10)
    metas = st.one_of(values, st.dictionaries(st.sampled_from(["outcome", "label_source", "policy_version", "source",
                                                              "robot_id", "task", "notes"]), values, max_size=5))

    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
    @given(meta=metas, raw=st.one_of(st.none(), st.text(max_size=40)))
    def run(meta, raw):
        text = raw if raw is not None else json.dumps(meta)
        ep = EpisodeRef(index=0, length=1, data_path=Path("x"), row={"vlaloop/meta": text})
        try:
            out = exported_meta(ep)
        except FormatError:
            return
        assert isinstance(out, dict)
        assert out.get("outcome") in (None, "success", "failure", "aborted")
    return run


PROPERTIES = {"msgpack /v1/act body": prop_msgpack_act, "JSON /v1/act body": prop_json_act,
              "raw bytes as a body": prop_raw_bytes, "drop-in state": prop_dropin_state,
              "importer path templates": prop_import_templates, "importer vlaloop/meta": prop_import_meta}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--examples", type=int, default=20_000, help="cases per property")
    args = parser.parse_args(argv)
    print("| property | cases | failures | seconds |\n|---|---|---|---|")
    failed = 0
    for name, prop in PROPERTIES.items():
        t0 = time.perf_counter()
        try:
            prop(args.examples)()
            found = "none"
        except Exception as e:  # noqa: BLE001 - report the falsifying case, go on with the next property
            found, failed = f"{type(e).__name__}: {str(e)[:120]}", failed + 1
        print(f"| {name} | {args.examples} | {found} | {time.perf_counter() - t0:.1f} |", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
