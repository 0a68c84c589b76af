"""Simulators behind the robot client's Arm / Camera interfaces and the learner's batched rollouts."""
