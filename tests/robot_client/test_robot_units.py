"""Unit tests of the robot client's safety pieces: SafetyFilter, Watchdog, Outbox, Streamer."""

from __future__ import annotations

import logging
import struct
import threading
import time

import numpy as np
import pytest
import zmq

from calibration.schema import default_mock_calibration
from protocol.messages import Ack, EpisodeEnd, Hello, StepMsg, decode_message, encode_message
from robot_client.outbox import SEQ_LEASE, Outbox, OutboxFull
from robot_client.safety import (
    CLAMP_GRIPPER,
    CLAMP_ROTATION,
    CLAMP_TRANSLATION,
    CLAMP_WORKSPACE,
    HOLD_BAD_SHAPE,
    HOLD_NONFINITE,
    SafetyFilter,
)
from robot_client.streamer import Streamer
from robot_client.watchdog import Watchdog

HOME = np.array([0.5, 0.0, 0.2])


@pytest.fixture
def safety() -> SafetyFilter:
    return SafetyFilter.from_calibration(default_mock_calibration())  # box x .3-.7 y -.25-.25 z 0-.3


# ------------------------------------------------------------------ SafetyFilter
def test_safety_passes_a_small_action_unchanged(safety):
    a = np.array([0.01, -0.01, 0.005, 0.02, 0.0, -0.05, 0.3])
    out = safety.filter(a, HOME, 1.0)
    assert not out.hold and out.counters == {}
    np.testing.assert_allclose(out.action, a)


def test_safety_clamps_far_target_into_box_and_step_limit(safety):
    out = safety.filter([5.0, 0.0, -3.0, 0, 0, 0, 1], HOME, 1.0)
    assert not out.hold
    assert out.counters == {CLAMP_WORKSPACE: 1, CLAMP_TRANSLATION: 1}
    assert np.linalg.norm(out.action[:3]) == pytest.approx(0.03)  # max_translation_per_step
    assert out.action[0] > 0 and out.action[2] < 0  # still heads toward the (clamped) target
    target = HOME + out.action[:3]
    assert np.all(target >= [0.3, -0.25, 0.0]) and np.all(target <= [0.7, 0.25, 0.3])


def test_safety_at_the_wall_never_leaves_the_box(safety):
    at_wall = np.array([0.7, 0.25, 0.0])
    out = safety.filter([0.02, 0.02, -0.02, 0, 0, 0, 1], at_wall, 1.0)
    np.testing.assert_allclose(out.action[:3], 0.0, atol=1e-12)
    assert out.counters[CLAMP_WORKSPACE] == 1


def test_safety_outside_the_box_moves_back_toward_it(safety):
    outside = np.array([0.9, 0.0, 0.2])
    out = safety.filter([0.02, 0, 0, 0, 0, 0, 1], outside, 1.0)
    assert out.action[0] == pytest.approx(-0.03)  # toward the wall at x=0.7, limited to one step


def test_safety_limits_rotation_and_gripper(safety):
    out = safety.filter([0, 0, 0, 1.0, 0.0, 0.0, -2.0], HOME, 1.0)
    assert out.counters == {CLAMP_ROTATION: 1, CLAMP_GRIPPER: 1}
    assert np.linalg.norm(out.action[3:6]) == pytest.approx(0.15)
    assert out.action[6] == 0.0


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_safety_holds_on_nonfinite(safety, bad):
    for i in range(7):
        a = np.zeros(7)
        a[i] = bad
        out = safety.filter(a, HOME, 0.0)
        assert out.hold and out.counters == {HOLD_NONFINITE: 1}
        np.testing.assert_array_equal(out.action, [0, 0, 0, 0, 0, 0, 0.0])  # recorded as a hold


def test_safety_holds_on_bad_shape_and_unknown_position(safety):
    assert safety.filter([0.0] * 6, HOME, 1.0).counters == {HOLD_BAD_SHAPE: 1}
    assert safety.filter("abc", HOME, 1.0).hold
    assert safety.filter(np.zeros(7), [np.nan, 0, 0], 1.0).counters == {HOLD_NONFINITE: 1}


def test_safety_refuses_a_nonsense_box():
    with pytest.raises(ValueError):
        SafetyFilter([0, 0, 0], [0, 1, 1], 0.01, 0.1)


# ------------------------------------------------------------------ Watchdog
class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def test_watchdog_deadline_trip_and_rearm():
    clock = FakeClock()
    wd = Watchdog(0.5, clock=clock)
    assert wd.hold_reason() == "no action yet"
    wd.feed()
    assert wd.hold_reason() is None
    clock.t += 0.49
    assert wd.hold_reason() is None
    clock.t += 0.02
    assert "no fresh action" in wd.hold_reason()
    wd.feed()
    assert wd.hold_reason() is None
    wd.trip("server unreachable")  # immediately, whatever the deadline says
    assert wd.hold_reason() == "server unreachable" and wd.tripped
    wd.feed()  # only a fresh action re-arms
    assert wd.hold_reason() is None
    wd.reset()
    assert wd.hold_reason() == "no action yet"


# ------------------------------------------------------------------ Outbox
def test_outbox_survives_a_crash_between_append_and_ack(tmp_path):
    box = Outbox(tmp_path / "ob")
    seqs = [box.append(f"msg{i}".encode()) for i in range(5)]
    assert seqs == sorted(seqs) and len(set(seqs)) == 5
    assert box.ack(seqs[1]) and not box.ack(seqs[1])
    (tmp_path / "ob" / "00000000000000099999.msg.tmp").write_bytes(b"torn")  # crash mid-write
    del box  # "crash": no close, no flush
    box2 = Outbox(tmp_path / "ob")
    assert [s for s, _ in box2.pending()] == [seqs[0], *seqs[2:]]  # in order, the acked one gone
    assert [p for _, p in box2.pending()] == [b"msg0", b"msg2", b"msg3", b"msg4"]
    assert not list((tmp_path / "ob").glob("*.tmp"))
    assert box2.append(b"next") > seqs[-1]


def test_outbox_seq_keeps_increasing_after_everything_was_acked(tmp_path):
    box = Outbox(tmp_path / "ob")
    last = 0
    for _ in range(3):
        s = box.append(b"x")
        box.ack(s)
        last = s
    box = Outbox(tmp_path / "ob")  # restart with an empty outbox
    assert box.append(b"y") > last
    assert box.append(b"z") < last + 2 * SEQ_LEASE + 2


def test_outbox_detects_corruption(tmp_path):
    box = Outbox(tmp_path / "ob")
    s = box.append(b"hello world")
    p = tmp_path / "ob" / f"{s:020d}.msg"
    p.write_bytes(p.read_bytes()[:-1] + b"X")
    assert box.read(s) is None and len(box) == 0


def test_outbox_bounded_with_loud_warning(tmp_path, caplog):
    box = Outbox(tmp_path / "ob", max_bytes=10_000, warn_fraction=0.5)
    with caplog.at_level(logging.WARNING, logger="robot_client.outbox"):
        for _ in range(4):  # 4 x (8-byte header + 1000)
            box.append(b"x" * 1000)
        assert not box.near_full and not caplog.records
        box.append(b"x" * 1000)
    assert box.near_full
    assert any("OUTBOX NEAR FULL" in r.getMessage() for r in caplog.records)
    for _ in range(4):
        box.append(b"x" * 1000)
    with pytest.raises(OutboxFull):
        box.append(b"x" * 1000)  # a step: refused at the bound
    assert box.refused == 1
    box.append(b"e" * 2000, control=True)  # an episode end still fits (reserved slack)
    assert box.bytes_used > 10_000


# ------------------------------------------------------------------ Streamer against a real ROUTER
class Router:
    """A real ZeroMQ ROUTER that acks (or not) like the learner: hello first, ack after 'storing'."""

    def __init__(self, ack: bool = True, port: int | None = None):
        self.sock = zmq.Context.instance().socket(zmq.ROUTER)
        self.sock.setsockopt(zmq.LINGER, 0)
        if port:  # rebinding a port just closed: ZeroMQ releases it asynchronously
            for _ in range(200):
                try:
                    self.sock.bind(f"tcp://127.0.0.1:{port}")
                    break
                except zmq.ZMQError:
                    time.sleep(0.02)
            self.port = port
        else:
            self.port = self.sock.bind_to_random_port("tcp://127.0.0.1")
        self.ack = ack
        self.received: list[tuple[bytes, int, object]] = []
        self.stored: list[tuple] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self):
        hello = set()
        while not self._stop.is_set():
            if not self.sock.poll(20):
                continue
            ident, seq_b, payload = self.sock.recv_multipart()
            seq = struct.unpack("<Q", seq_b)[0]
            msg = decode_message(payload)
            self.received.append((ident, seq, msg))
            if not self.ack:
                continue
            if isinstance(msg, Hello):
                hello.add(ident)
                ack = Ack(seq=seq)
            elif ident not in hello:
                ack = Ack(seq=seq, ok=False, error="hello first")
            else:
                key = (msg.episode_id, getattr(msg, "step", "end"))
                dup = key in self.stored
                if not dup:
                    self.stored.append(key)
                ack = Ack(seq=seq, duplicate=dup)
            self.sock.send_multipart([ident, seq_b, encode_message(ack)])

    def close(self):
        self._stop.set()
        self._t.join()
        self.sock.close(linger=0)


def _step(i: int, ep: str = "ep1") -> StepMsg:
    return StepMsg(robot_id="r1", episode_id=ep, step=i, images={"front": b"\xff\xd8jpeg"}, state=[0.0] * 7,
                   action=[0.0] * 7)


def _wait(pred, timeout=10.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(0.01)
    return False


def test_streamer_resends_unacked_after_a_crash_in_order_hello_first(tmp_path):
    silent = Router(ack=False)  # receives but never acks: the learner died before making them durable
    box = Outbox(tmp_path / "ob")
    s1 = Streamer(box, f"tcp://127.0.0.1:{silent.port}", "r1", "cfg", ack_timeout_s=30).start()
    for i in range(5):
        s1.submit(_step(i))
    assert _wait(lambda: len(silent.received) >= 1)  # hello; the steps wait for its ack
    s1.stop()  # the robot client "crashes": nothing was acked
    port = silent.port
    silent.close()
    assert len(Outbox(tmp_path / "ob")) == 6  # hello + 5 steps, durable

    router = Router(ack=True, port=port)
    try:
        s2 = Streamer(Outbox(tmp_path / "ob"), f"tcp://127.0.0.1:{port}", "r1", "cfg", ack_timeout_s=2).start()
        s2.submit(EpisodeEnd(robot_id="r1", episode_id="ep1", outcome="success", label_source="auto",
                             n_steps=5, instruction="x"))
        assert s2.flush(10)
        s2.stop()
        kinds = [type(m).__name__ for _, _, m in router.received]
        assert kinds[0] == "Hello" and kinds.count("Hello") == 1  # the stale hello was not resent
        assert [k for k in router.stored] == [("ep1", i) for i in range(5)] + [("ep1", "end")]
        seqs = [seq for _, seq, m in router.received if not isinstance(m, Hello)]
        assert seqs == sorted(seqs)  # resent in their original order (the new hello has a newer seq)
    finally:
        router.close()


def test_streamer_reconnects_after_learner_restart_and_never_blocks(tmp_path):
    router = Router(ack=True)
    port = router.port
    box = Outbox(tmp_path / "ob")
    st = Streamer(box, f"tcp://127.0.0.1:{port}", "r1", "cfg", ack_timeout_s=1.0).start()
    try:
        for i in range(3):
            st.submit(_step(i))
        assert st.flush(10)
        router.close()  # learner gone
        t0 = time.perf_counter()
        for i in range(3, 20):
            st.submit(_step(i))  # the control loop is never blocked
        # a submit that waited on the dead learner would take the ack timeout (1 s) per message;
        # 17 queue puts take microseconds, so 0.5 s for all of them holds on a loaded machine too
        assert time.perf_counter() - t0 < 0.5
        assert _wait(lambda: sum(isinstance(decode_message(p), StepMsg) for _, p in box.pending()) == 17)
        time.sleep(1.5)
        router2 = Router(ack=True, port=port)
        try:
            assert st.flush(15), st.last_error
            assert sorted(k for k in router.stored + router2.stored) == [("ep1", i) for i in range(20)]
            assert isinstance(router2.received[0][2], Hello)
            assert st.connections >= 2
        finally:
            router2.close()
    finally:
        st.stop()


# ------------------------------------------------------------------ reply checks of the control loop
def _loop_and_episode(**cfg):
    from deployment.robot import RobotConfig
    from protocol.messages import ActRequest, ActResponse, Timing
    from robot_client.loop import ControlLoop
    from robot_client.server_client import ActionLink, Reply, ServerClient
    from sim.mock import MockRobot

    robot = MockRobot(task="reach", image_size=32)
    link = ActionLink(ServerClient("http://127.0.0.1:9"), 0.1, 0.1)  # never started: no network here
    loop = ControlLoop(robot.arm, dict(robot.cameras), SafetyFilter.from_calibration(default_mock_calibration()),
                       link, RobotConfig(rate_hz=10, reply_deadline_s=0.5, **cfg), emit=lambda m: None)
    ep = loop.new_episode("ep1", "reach")

    def reply(rid, resp_rid=None, t_sent=0.0, command="run"):
        req = ActRequest(request_id=rid, robot_id="r", episode_id="ep1", step=0, t_capture=0.0, instruction="x",
                         images={"front": b"j"}, state=[0.0] * 7)
        resp = ActResponse(request_id=resp_rid or rid, actions=[[0.01, 0, 0, 0, 0, 0, 1]] * 4, log_prob=-1.0,
                           value=0.0, policy_version=3, timing=Timing(decode_ms=0, queue_ms=0, infer_ms=0, total_ms=0),
                           command=command)
        return Reply(req, resp, t_sent, t_sent + 0.01)

    return loop, ep, reply


def test_loop_drops_stale_and_late_replies_and_adopts_fresh_ones():
    loop, ep, reply = _loop_and_episode()
    now = 100.0
    ep.outstanding = {"a": (10, now - 0.05), "b": (10, now - 0.6), "c": (5, now - 0.1), "d": (10, now - 0.01)}
    loop._take_reply(ep, 10, now, reply("zzz"))  # not a request of this episode
    loop._take_reply(ep, 10, now, reply("a", resp_rid="other"))  # answers someone else's request
    assert ep.totals == {"drop_stale_reply": 2} and ep.execution.chunk is None
    loop._take_reply(ep, 10, now, reply("b"))  # older than the 0.5 s deadline
    loop._take_reply(ep, 10, now, reply("c"))  # its 4 actions were for ticks 5..8: all in the past
    assert ep.totals["drop_late_reply"] == 2 and ep.execution.chunk is None
    assert loop.watchdog.hold_reason(now) == "no action yet"
    loop._take_reply(ep, 10, now, reply("d"))
    assert ep.execution.chunk is not None and ep.execution.chunk.start_tick == 10
    assert ep.execution.chunk.policy_version == 3
    assert loop.watchdog.hold_reason(now) is None
    assert loop.watchdog.deadline_s == pytest.approx((4 + 2) * 0.1)  # chunk + 2 periods
    loop._take_reply(ep, 10, now, reply("d"))  # a duplicate answer: never executed twice
    assert ep.totals["drop_stale_reply"] == 3


def test_loop_expired_request_counts_as_late_and_commands_are_read_from_any_reply():
    loop, ep, reply = _loop_and_episode()
    ep.outstanding = {"a": (0, 0.0)}
    assert not loop._wants_query(ep, 1, 0.1)  # open loop: one outstanding query at a time
    assert loop._wants_query(ep, 7, 0.7)  # its deadline passed: it expired, ask again
    assert "a" in ep.expired
    ep.outstanding["e"] = (7, 0.7)
    loop._take_reply(ep, 8, 0.8, reply("a", command="pause"))
    assert ep.totals == {"drop_late_reply": 1} and ep.paused  # late, but the operator's pause counts
    loop._take_reply(ep, 8, 0.8, reply("e", command="end_episode"))
    assert ep.ended_by_operator and ep.execution.chunk is None  # paused: not adopted


def test_streamer_reports_a_refused_hello_and_keeps_the_messages(tmp_path):
    class RefusingRouter(Router):
        def _run(self):
            while not self._stop.is_set():
                if not self.sock.poll(20):
                    continue
                ident, seq_b, payload = self.sock.recv_multipart()
                seq = struct.unpack("<Q", seq_b)[0]
                self.received.append((ident, seq, decode_message(payload)))
                self.sock.send_multipart([ident, seq_b, encode_message(Ack(seq=seq, ok=False,
                                                                            error="config hash mismatch"))])

    router = RefusingRouter()
    box = Outbox(tmp_path / "ob")
    st = Streamer(box, f"tcp://127.0.0.1:{router.port}", "r1", "wrong", ack_timeout_s=1.0, hello_retry_s=0.1).start()
    try:
        st.submit(_step(0))
        assert _wait(lambda: "refused hello" in st.last_error and "config hash mismatch" in st.last_error)
        assert not st.ready
        time.sleep(0.3)
        assert all(isinstance(m, Hello) for _, _, m in router.received)  # never a step before a hello ack
        assert any(isinstance(decode_message(p), StepMsg) for _, p in box.pending())  # kept for later
    finally:
        st.stop()
        router.close()
