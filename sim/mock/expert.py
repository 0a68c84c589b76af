"""Scripted experts for the mock tasks (closed loop on the true scene state, so they recover from
their own noise), written for N scenes at once and used by both the single scene and vec.py.

Noise (``noise`` in [0, 1], default 0.1): Gaussian on the translation with std ``noise * 3 cm`` per
axis, and with probability ``noise * 0.3`` a wrong move (a uniformly random translation within the
per-step limit). The gripper command is never noisy.
"""

from __future__ import annotations

import numpy as np

from sim.mock.sim import MAX_TRANSLATION, SceneState
from sim.mock.tasks import FAMILY_ID, TaskSpec

DEFAULT_NOISE = 0.1
TRAVEL_Z = 0.08  # travel height above the blocks
CARRY_Z = 0.12
PUSH_BEHIND = 0.075  # where a push starts, behind the block's centre


def _toward(goal: np.ndarray, ee: np.ndarray) -> np.ndarray:
    d = goal - ee
    n = np.linalg.norm(d, axis=1, keepdims=True)
    return d * np.minimum(1.0, MAX_TRANSLATION / np.maximum(n, 1e-12))


def _lift_or_go(ee: np.ndarray, goal_xy: np.ndarray, height: float, low: float) -> np.ndarray:
    """Goal: straight up first while lower than ``low`` and not yet above the goal, then across."""
    far = np.hypot(*(ee[:, :2] - goal_xy).T) > 0.012
    up_first = (ee[:, 2] < low) & far
    gx = np.where(up_first[:, None], ee[:, :2], goal_xy)
    return np.column_stack([gx, np.full(len(ee), height)])


def expert_actions_batch(family: np.ndarray, target: np.ndarray, direction: np.ndarray, ee: np.ndarray,
                         gripper_open: np.ndarray, held: np.ndarray, blocks: np.ndarray,
                         bowl: np.ndarray) -> np.ndarray:
    """Clean expert actions [N, 7] for N scenes (shapes as in tasks.success_batch)."""
    n = len(family)
    b = blocks[np.arange(n), target]
    bxy = b[:, :2]
    dxy = np.hypot(*(ee[:, :2] - bxy).T)
    act = np.zeros((n, 7))

    # reach: straight to 5 cm above the block's centre, gripper open
    reach_goal = np.column_stack([bxy, np.full(n, 0.05)])
    reach_a = _toward(reach_goal, ee)

    # push: close the gripper, go behind the block at travel height, lower, push through its centre
    pre = bxy - direction * PUSH_BEHIND
    rel = ee[:, :2] - bxy
    along = np.sum(rel * direction, axis=1)
    lateral = np.abs(rel[:, 0] * direction[:, 1] - rel[:, 1] * direction[:, 0])
    pushing = (along <= -0.03) & (lateral <= 0.022) & (ee[:, 2] < 0.036)
    at_pre = np.hypot(*(ee[:, :2] - pre).T) <= np.where(ee[:, 2] < 0.06, 0.025, 0.012)
    push_goal = np.where(pushing[:, None], np.column_stack([bxy - direction * 0.01, np.full(n, 0.02)]),
                         np.where(at_pre[:, None], np.column_stack([pre, np.full(n, 0.02)]),
                                  _lift_or_go(ee, pre, TRAVEL_Z, 0.06)))
    push_a = _toward(push_goal, ee)

    # pick and place
    holding = held == target
    at_bowl = np.hypot(*(ee[:, :2] - bowl).T) <= 0.015
    release = (holding & at_bowl & (ee[:, 2] >= 0.09)) | ((held >= 0) & ~holding)
    carry_goal = _lift_or_go(ee, bowl, CARRY_Z, 0.09)
    over = dxy <= np.where(ee[:, 2] < 0.06, 0.017, 0.008)
    close = ~holding & gripper_open & over & (ee[:, 2] <= 0.025)
    descend = np.column_stack([bxy, np.full(n, 0.015)])
    fetch_goal = np.where(over[:, None], descend, _lift_or_go(ee, bxy, TRAVEL_Z, 0.06))
    pick_goal = np.where(holding[:, None], carry_goal, fetch_goal)
    pick_a = _toward(pick_goal, ee)
    # standing still while the gripper acts: releasing, closing, or opening an empty closed hand
    still = release | close | (~holding & (held < 0) & ~gripper_open)
    pick_a[still] = 0.0
    pick_grip = np.where(holding & ~release, 0.0, np.where(close, 0.0, 1.0))

    fam = family[:, None]
    act[:, :3] = np.where(fam == FAMILY_ID["reach"], reach_a, np.where(fam == FAMILY_ID["push"], push_a, pick_a))
    act[:, 6] = np.where(family == FAMILY_ID["reach"], 1.0,
                         np.where(family == FAMILY_ID["push"], 0.0, pick_grip))
    return act


def add_noise(action: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    """Perturb one action [7]. Always draws the same amount of randomness, so streams stay aligned
    whatever the noise level."""
    a = np.array(action, dtype=np.float64)
    gauss = rng.normal(0.0, 1.0, 3)
    wrong = rng.random() < noise * 0.3
    random_move = rng.uniform(-MAX_TRANSLATION, MAX_TRANSLATION, 3)
    if noise <= 0:
        return a
    a[:3] = random_move if wrong else a[:3] + gauss * noise * MAX_TRANSLATION
    return a


def expert_action(task: TaskSpec, state: SceneState) -> np.ndarray:
    """The clean expert action [7] for one scene."""
    return expert_actions_batch(np.array([FAMILY_ID[task.family]]), np.array([task.target]),
                                task.direction_vector[None], state.ee[None], np.array([state.gripper_open]),
                                np.array([state.held]), state.blocks[None], state.bowl[None])[0]

