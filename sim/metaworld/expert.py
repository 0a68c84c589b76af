"""MetaWorld's scripted experts (``metaworld.policies``), in vlaloop's action convention, with the
mock experts' noise model.

The experts are closed loop on the full 39-float MetaWorld observation, so they recover from
their own noise. Noise (``noise`` in [0, 1], default 0.1), as the mock's experts: Gaussian on the
translation with std ``noise * MAX_TRANSLATION`` per axis (MAX_TRANSLATION = 1 cm here, the per-
axis step limit), and with probability ``noise * 0.3`` a wrong move (a uniformly random
translation within the per-step limit). The gripper command is never noisy. The same amount of
randomness is drawn whatever the noise level, so streams stay aligned across levels.
"""

from __future__ import annotations

import warnings

import numpy as np

from sim.metaworld.actions import MAX_TRANSLATION, from_metaworld

DEFAULT_NOISE = 0.1


def scripted_policy(task: str):
    """The ``metaworld.policies`` expert for a task name (without the ``-v3`` suffix)."""
    from metaworld.policies import ENV_POLICY_MAP

    key = f"{task}-v3"
    if key not in ENV_POLICY_MAP:
        raise ValueError(f"MetaWorld has no scripted expert for {task!r}")
    return ENV_POLICY_MAP[key]()


def expert_action(policy, obs: np.ndarray) -> np.ndarray:
    """The clean expert action [7] for the MetaWorld observation ``obs`` [39]."""
    with warnings.catch_warnings():  # "Constant(s) may be too high": the env clips, and so do we
        warnings.simplefilter("ignore", UserWarning)
        return from_metaworld(policy.get_action(obs))


def add_noise(action: np.ndarray, rng: np.random.Generator, noise: float) -> np.ndarray:
    """Perturb one action [7] (float32); see the module docstring."""
    a = np.array(action, dtype=np.float64)
    gauss = rng.normal(0.0, 1.0, 3)
    wrong = rng.random() < noise * 0.3
    random_move = rng.uniform(-MAX_TRANSLATION, MAX_TRANSLATION, 3)
    if noise <= 0:
        return a.astype(np.float32)
    a[:3] = random_move if wrong else np.clip(a[:3] + gauss * noise * MAX_TRANSLATION,
                                              -MAX_TRANSLATION, MAX_TRANSLATION)
    return a.astype(np.float32)
