"""Group commit (Ingest.handle_batch + EpisodeStore.append_steps) gives the same store and acks as
handling the messages one at a time."""

from __future__ import annotations

from bench.learner_ingest import SEQ, make_step, sample_frames
from episodes.store import EpisodeStore, _read_records
from learner.ingest import Ingest
from protocol.messages import EpisodeEnd, Hello, decode_message, encode_message

IMAGES = sample_frames(2)


def frames(seq, msg):
    return [SEQ.pack(seq), encode_message(msg)]


def script():
    """Two robots interleaved: hello, steps (one resent within the batch), an end mid-stream,
    steps of another robot before its hello, and a step with a bad camera name."""
    a, b = b"idA", b"idB"
    bad = make_step("r2", "e1", 1, IMAGES)
    bad.images = {"bad/cam": IMAGES["front"]}
    return [
        (a, frames(1, Hello(robot_id="r1", config_hash="h"))),
        (b, frames(1, make_step("r2", "e1", 0, IMAGES))),  # before hello
        (a, frames(2, make_step("r1", "e1", 0, IMAGES))),
        (a, frames(3, make_step("r1", "e1", 1, IMAGES))),
        (a, frames(4, make_step("r1", "e1", 1, IMAGES))),  # resent in the same batch
        (a, frames(5, EpisodeEnd(robot_id="r1", episode_id="e1", outcome="success", label_source="auto",
                                 n_steps=2, instruction="reach"))),
        (a, frames(6, make_step("r1", "e1", 2, IMAGES))),  # after the end: dropped
        (b, frames(2, Hello(robot_id="r2", config_hash="h"))),
        (b, frames(3, make_step("r2", "e1", 0, IMAGES))),
        (b, frames(4, bad)),
        (b, frames(5, make_step("r2", "e1", 2, IMAGES))),
    ]


def acks(replies):
    out = []
    for identity, (seq_frame, payload) in replies:
        ack = decode_message(payload)
        out.append((identity, SEQ.unpack(seq_frame)[0], ack.ok, ack.duplicate, ack.error))
    return out


def test_batch_equals_one_at_a_time(tmp_path):
    one = Ingest(EpisodeStore(tmp_path / "one"), "h")
    batch = Ingest(EpisodeStore(tmp_path / "batch"), "h")
    expected = acks([(i, one.handle(i, f)) for i, f in script()])
    got = acks(batch.handle_batch(script()))
    assert got == expected
    assert [(seq, ok, dup) for _, seq, ok, dup, _ in got] == [
        (1, True, False), (1, False, False), (2, True, False), (3, True, False), (4, True, True),
        (5, True, False), (6, True, True), (2, True, False), (3, True, False), (4, False, False),
        (5, True, False)]
    assert got[1][4] == "hello first" and "camera name" in got[9][4]
    for root in ("one", "batch"):
        store = EpisodeStore(tmp_path / root)
        meta = store.read_meta("r1", "e1")
        assert meta["n_stored_steps"] == 2 and meta["missing_steps"] == 0  # the end saw both steps
        for robot, steps in (("r1", [0, 1]), ("r2", [0, 2])):
            records, _ = _read_records(tmp_path / root / robot / "e1" / "steps.log")
            assert [r["step"] for r in records] == steps
            assert store.load(robot, "e1").frame_bytes(steps[-1], "cam1") == IMAGES["cam1"]
    assert batch.counters.totals == one.counters.totals
