"""The progress model on the learner's side (VLA-RL's process reward): targets from the robot's own
episodes, the fit and its held-out check, and potential-based shaping. The model itself and the
stall rule are torch-free in ``vla.progress_model`` and ``vla.progress_stop`` (docs/progress_model.md)."""
