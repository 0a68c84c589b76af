"""The types every process agrees on, in one small torch-free package.

- `interface.action` -- the action and state vectors: dimensions and the convention (frames, units).
- `interface.policy` -- `Observation`, `ActOutput`, `PolicySpec` and the `BasePolicy` protocol the
  server serves and the learner evaluates.
- `interface.robot` -- the `Arm` / `Camera` interfaces every hardware backend and simulator implements.
- `interface.teleop` -- `InterventionSource` / `TeleopAction`: an operator (page, gamepad) or a scripted
  expert drives the arm instead of the policy.

It imports numpy and the standard library only, so the robot client, the calibration tools and the
server can use it without importing torch.
"""
