"""`--dry-run` wraps the real arm: moves become ONE hold, not a fresh stop motion every tick."""

import numpy as np

from interface.robot import Arm, ArmState
from robot_client.dry_run import HoldingArm


class CountingArm(Arm):
    def __init__(self):
        self.calls: list[str] = []

    def reset_home(self) -> None:
        self.calls.append("home")

    def state(self) -> ArmState:
        return ArmState(position=np.zeros(3), rpy=np.zeros(3), gripper=1.0, t=0.0)

    def move_delta(self, action) -> None:
        self.calls.append("move")

    def hold(self) -> None:
        self.calls.append("hold")

    def recover(self) -> None:
        self.calls.append("recover")


def test_moves_never_reach_the_arm_and_hold_it_once_until_a_recover():
    inner = CountingArm()
    arm = HoldingArm(inner)
    arm.reset_home()
    for _ in range(20):
        arm.move_delta(np.full(7, 0.01))
    assert inner.calls == ["hold"] and arm.would_move == 20
    arm.recover()
    arm.move_delta(np.full(7, 0.01))
    arm.move_delta(np.full(7, 0.01))
    assert inner.calls == ["hold", "recover", "hold"]
    arm.hold()  # an explicit hold always reaches the arm
    assert inner.calls[-1] == "hold" and "move" not in inner.calls and "home" not in inner.calls
