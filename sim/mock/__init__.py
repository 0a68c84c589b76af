"""Mock hardware: a small deterministic table-top simulator with language tasks (docs/mock.md)."""

from sim.mock.backend import FaultConfig, MockArm, MockCamera, MockRobot
from sim.mock.tasks import FAMILIES, HELD_OUT, TASK_NAMES, is_held_out, split_colors

__all__ = ["FAMILIES", "HELD_OUT", "TASK_NAMES", "FaultConfig", "MockArm", "MockCamera", "MockRobot",
           "is_held_out", "split_colors"]
