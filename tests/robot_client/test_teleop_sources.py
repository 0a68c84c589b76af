"""The intervention sources on their own: the gamepad mapping and its dead-man button with a stand-in
device (hardware is the only stand-in), the real pygame-ce library without a pad, the page source's
command timing, and the wire compatibility of the new reply field. Fast: no server, no loop (those
are in test_robot_teleop.py)."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from deployment.robot import RobotConfig
from interface.robot import ArmState
from interface.teleop import GamepadReading, InterventionSource, TeleopAction, intent_to_action
from protocol.messages import ActResponse, TeleopCommand, Timing
from robot_client.teleop import GamepadMapping, GamepadTeleop, PageTeleop, TeleopSpeeds

STATE = ArmState(position=np.array([0.5, 0.0, 0.2]), rpy=np.zeros(3), gripper=1.0, t=0.0)
SPEEDS = TeleopSpeeds(period_s=0.1, linear_speed=0.1, angular_speed=0.5)  # full intent: 1 cm, 0.05 rad per tick


def reading(axes=(0, 0, 0, 0, 0, 0), lb=False, a=False, b=False, hat=(0, 0)) -> GamepadReading:
    buttons = [False] * 11
    buttons[0], buttons[1], buttons[4] = a, b, lb
    return GamepadReading(tuple(float(x) for x in axes), tuple(buttons), (hat,))


class StandInPad:
    """Hardware stand-in: the test sets what the pad reads; ``gone`` makes read() fail like an unplug."""

    def __init__(self):
        self.now = reading()
        self.gone = False
        self.reads = 0

    def read(self) -> GamepadReading:
        if self.gone:
            raise RuntimeError("gamepad 0 lost")
        self.reads += 1
        return self.now

    def close(self):
        pass


def test_mapping_signs_dead_zone_and_scaling():
    m = GamepadMapping()
    assert m.intent(reading()) == ([0.0, 0.0, 0.0], [0.0, 0.0, 0.0], None)
    # left stick pushed away (SDL: -1) -> +x; left -> +y; right stick up -> +z; right stick left -> +yaw
    t, r, g = m.intent(reading(axes=(-1, -1, 0, -1, -1, 0)))
    assert t == [1.0, 1.0, 1.0] and r == [0.0, 0.0, 1.0] and g is None
    # a resting stick inside the dead zone is zero; outside it the intent grows from 0
    assert m.intent(reading(axes=(0, 0.1, 0, 0, 0, 0)))[0][0] == 0.0
    half = m.intent(reading(axes=(0, -(0.12 + 0.44), 0, 0, 0, 0)))[0][0]
    assert half == pytest.approx(0.5)
    # D-pad: roll and pitch; buttons: close wins over open
    assert m.intent(reading(hat=(1, -1)))[1] == [1.0, -1.0, 0.0]
    assert m.intent(reading(a=True, b=True))[2] == 0.0 and m.intent(reading(b=True))[2] == 1.0
    # a NaN axis (a broken driver) counts as centred, never as a push
    assert m.intent(reading(axes=(0, float("nan"), 0, 0, 0, 0)))[0] == [0.0, 0.0, 0.0]


def test_mapping_overrides_and_unknown_keys():
    m = GamepadMapping.from_overrides({"deadman_button": 5, "sign_x": 1.0})
    assert m.deadman_button == 5 and m.sign_x == 1.0 and m.axis_x == 1
    with pytest.raises(ValueError, match="unknown keys.*deadman"):
        GamepadMapping.from_overrides({"deadman": 5})
    # every field is documented (the docstring under it)
    import inspect

    source = inspect.getsource(GamepadMapping)
    for name in GamepadMapping.__dataclass_fields__:
        assert f'{name}:' in source and source.split(f"{name}:", 1)[1].split("\n", 2)[1].strip().startswith('"""')


def test_gamepad_dead_man_gripper_latch_and_unplug():
    pad = StandInPad()
    source = GamepadTeleop(pad, SPEEDS, poll_hz=200).start()
    try:
        assert isinstance(source, InterventionSource)
        def wait(polls: int = 3) -> None:
            """Until the reader thread has read the pad a few more times, so it has fully handled
            at least one reading of the new state (its reads are sequential). Not a fixed sleep: on a
            loaded machine the thread may not run for a while."""
            want, deadline = pad.reads + polls, time.monotonic() + 10
            while pad.reads < want and not pad.gone:
                assert time.monotonic() < deadline, "the reader thread stopped polling"
                time.sleep(0.005)
        pad.now = reading(axes=(0, -1, 0, 0, 0, 0))  # stick pushed, dead-man not held: the policy drives
        wait()
        assert source.command(STATE) is None
        pad.now = reading(axes=(0, -1, 0, 0, 0, 0), lb=True)
        wait()
        cmd = source.command(STATE)
        assert cmd.source == "gamepad" and np.allclose(cmd.action, [0.01, 0, 0, 0, 0, 0, 1.0])  # gripper kept
        assert time.monotonic() - cmd.t_command < 0.5
        pad.now = reading(lb=True, a=True)  # close ...
        wait()
        pad.now = reading(lb=True)  # ... and it stays closed after the button is let go
        wait()
        assert source.command(STATE).action[6] == 0.0
        pad.now = reading()  # released: the policy drives; the next take-over starts from the gripper as it is
        wait()
        assert source.command(STATE) is None
        pad.now = reading(lb=True)
        wait()
        assert source.command(STATE).action[6] == 1.0
        # unplugged while held: the last reading stays, and ages (the loop holds the arm on it)
        pad.gone = True
        time.sleep(0.3)
        cmd = source.command(STATE)
        assert cmd is not None and time.monotonic() - cmd.t_command >= 0.25 and source.error == "gamepad 0 lost"
        pad.gone = False  # plugged in again: fresh readings
        wait()
        time.sleep(0.5)
        assert time.monotonic() - source.command(STATE).t_command < 0.3 and source.error is None
    finally:
        source.stop()
    assert not source._thread.is_alive()


def test_page_source_timing_and_hand_back():
    page = PageTeleop(SPEEDS)
    assert page.command(STATE) is None
    t_sent = time.monotonic() - 0.030  # a 30 ms round trip, 10 ms of it in the server
    cmd = TeleopCommand(seq=7, translation=[0, -1, 0.5], rotation=[0, 0, 0], gripper=0.0, age_s=0.020)
    page.receive(cmd, t_sent, t_sent + 0.030, server_s=0.010)
    out = page.command(STATE)
    assert out.seq == 7 and out.source == "page" and np.allclose(out.action, [0, -0.01, 0.005, 0, 0, 0, 0])
    # received 10 ms (half the network time) before the reply arrived, plus the 20 ms it waited in the server
    assert out.t_command == pytest.approx(t_sent + 0.030 - 0.010 - 0.020)
    page.receive(None, t_sent, t_sent + 0.03, 0.01)  # a reply without the field: the operator handed back
    assert page.command(STATE) is None


def test_intent_and_action_checks():
    a = intent_to_action([2, -2, 0], [0, 0, 3], None, STATE, 0.1, 0.1, 0.5)  # clipped to [-1, 1]
    assert np.allclose(a, [0.01, -0.01, 0, 0, 0, 0.05, 1.0])
    with pytest.raises(ValueError):
        TeleopAction(np.zeros(6), "page", 0.0)


def test_reply_field_is_absent_without_an_operator_and_checked_with_one():
    base = dict(request_id="r", actions=[[0.0] * 7], log_prob=0.0, value=0.0, policy_version=1,
                timing=Timing(decode_ms=0, queue_ms=0, infer_ms=0, total_ms=0))
    assert "teleop" not in ActResponse(**base).to_wire()  # what robot clients before this field expect
    wire = ActResponse(**base, teleop=TeleopCommand(seq=1, translation=[1, 0, 0], rotation=[0, 0, 0],
                                                    age_s=0.01)).to_wire()
    assert ActResponse.model_validate(wire).teleop.translation == [1, 0, 0]
    for bad in ([1, 0], [float("nan"), 0, 0], [1.5, 0, 0]):
        with pytest.raises(ValueError):
            TeleopCommand(seq=1, translation=bad, rotation=[0, 0, 0], age_s=0)


def test_pygame_without_a_pad_refuses_clearly():
    """The real library (pygame-ce, the `teleop` extra) on a machine with no gamepad."""
    code = ("from hardware.gamepad import PygameGamepad\n"
            "try:\n    PygameGamepad(0)\nexcept RuntimeError as e:\n    print('REFUSED', e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "REFUSED no gamepad 0: 0 connected" in out.stdout, out.stdout + out.stderr


def test_cli_teleop_gamepad_without_a_pad_exits_2(tmp_path):
    from standins import PY, ROOT

    r = subprocess.run([PY, "-m", "vlaloop.cli", "--run-dir", str(tmp_path), "robot", "--backend", "mock",
                        "--teleop", "gamepad"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "cannot start --teleop gamepad" in r.stderr and "no gamepad" in r.stderr, r.stderr[-2000:]


def test_a_source_that_raises_is_held_like_a_stale_command():
    """A scripted intervener with a bug must hold the arm, not crash the loop or let the policy run on."""
    from robot_client.arbitration import Arbiter
    from robot_client.execution import Observation
    from robot_client.loop import ControlLoop

    class Broken:
        name = "scripted"

        def command(self, state, proposed=None):
            raise ZeroDivisionError("bug")

    loop = ControlLoop.__new__(ControlLoop)  # only the intervention step is exercised here
    loop.on_state, loop.cfg, loop.emit = lambda *a: None, RobotConfig(), lambda m: None
    loop.arbiter = Arbiter(loop.cfg, 0.1, [Broken()])
    ep = loop.new_episode("e", "i")
    obs = Observation(STATE, STATE.vector(), {}, 0.0)
    got = loop._intervention(ep, 0, 0.0, obs)
    assert got.t_command == -np.inf and ep.driving == "scripted" and ep.totals["teleop_error"] == 1
