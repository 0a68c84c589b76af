"""Action chunks from per-step demonstrations (for SFT targets and normalization statistics)."""

from __future__ import annotations

import numpy as np

GRIPPER = 6  # index of the gripper command in the 7-D action (absolute: 0 closed ... 1 open)


def action_chunks(actions: np.ndarray, chunk: int, gripper_index: int | None = GRIPPER) -> np.ndarray:
    """[T, D] per-step actions -> [T, chunk, D]: chunk t = actions[t : t + chunk].

    Past the end of the episode the chunk is padded with "hold still": zero deltas and, for the
    gripper (an absolute command), its last value -- what the robot should do after the demo ends."""
    a = np.asarray(actions, dtype=np.float32)
    if a.ndim != 2 or a.shape[0] == 0:
        raise ValueError(f"expected per-step actions [T, D] with T > 0, got shape {a.shape}")
    hold = np.zeros((chunk - 1, a.shape[1]), np.float32)
    if gripper_index is not None:
        hold[:, gripper_index] = a[-1, gripper_index]
    padded = np.concatenate([a, hold])
    idx = np.arange(a.shape[0])[:, None] + np.arange(chunk)[None, :]
    return padded[idx]
