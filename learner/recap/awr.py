"""AWR, the RECAP paper's baseline: advantage-weighted regression on RECAP's data and advantages.

Same value function, same n-step advantages A_i (learner/recap/labels.py), same samples (every
step of every labelled episode, learner/recap/sft.py) -- but no indicator in the prompt: the SFT
imitates each sample in proportion to

    w_i = min(exp(A_i / (temperature * sigma_task)), clip)

(Peng et al. 2019, "Advantage-Weighted Regression"; pi*0.6 compares RECAP with it). Applied as
weighted sampling of the SFT batches (learner/sft.py's `global_batch_indices`), which has the same
expected gradient as weighting each sample's loss and keeps the loss and the optimizer untouched.

* sigma_task: the standard deviation of the policy's own advantages of the task (the same steps
  RECAP's threshold reads; all of the task's steps if the policy has fewer than two). The returns
  are normalized to [-1, 0] and a step moves them by ~1/(L+P), so a fixed temperature would mean
  "weights all ~1" on one task and "one sample takes every batch" on another; in units of the
  task's own spread, temperature 1 weights a step one standard deviation above the value
  function's baseline e^2 ~ 7.4 times one a standard deviation below it.
* No centering: V is already the baseline, so A = 0 means "as expected" and gets weight 1.
* Steps an operator drove get the clip weight (the corrections, as RECAP labels them positive).
* Expert demos are weighted by their advantage like any step. A task with no success yet keeps its
  weights (its advantages only rank failures against each other; reported in
  ``tasks_without_success`` as for RECAP).
* The version published from it is an ordinary policy: no ``advantage_conditioning`` metadata.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from learner.recap.labels import EpisodeValues, is_policy_step


@dataclass
class AWRConfig:
    temperature: float = 1.0
    """beta in units of the task's advantage standard deviation (module docstring)."""
    clip: float = 20.0
    """Largest weight (AWR's w_max = 20); also the weight of every operator-driven step."""


def task_scales(episodes: list[EpisodeValues]) -> dict[str, float]:
    """sigma per task: the std of the policy's own advantages (all the task's steps if it has fewer
    than two policy steps); 0 when they do not vary (then every weight of the task is 1)."""
    scales = {}
    for task in sorted({ep.task for ep in episodes}):
        group = [ep for ep in episodes if ep.task == task]
        own = np.concatenate([ep.advantages[is_policy_step(ep)] for ep in group])
        if len(own) < 2:
            own = np.concatenate([ep.advantages for ep in group])
        scales[task] = float(np.std(own)) if len(own) >= 2 else 0.0
    return scales


def awr_weights(episodes: list[EpisodeValues], cfg: AWRConfig) -> dict:
    """Fill every episode's `weights` (per decision) from its `advantages` (label_episodes first);
    returns the summary written with the labels."""
    if cfg.temperature <= 0 or cfg.clip < 1:
        raise ValueError(f"AWR needs temperature > 0 and clip >= 1, got {cfg.temperature} and {cfg.clip}")
    scales = task_scales(episodes)
    for ep in episodes:
        scale = scales[ep.task]
        z = ep.advantages.astype(np.float64) / (cfg.temperature * scale) if scale > 0 else np.zeros(len(ep.steps))
        top = np.log(cfg.clip)
        w = np.where(z >= top, cfg.clip, np.exp(np.minimum(z, top)))  # exactly the clip, no overflow
        w[ep.operator] = cfg.clip
        ep.weights = w.astype(np.float32)
    w = np.concatenate([ep.weights for ep in episodes]) if episodes else np.zeros(0)
    return {"awr_scales": scales, **weight_summary(w, cfg.clip)}


def weight_summary(w: np.ndarray, clip: float) -> dict:
    """How concentrated the weights are: ESS fraction (sum w)^2 / (n sum w^2) -- 1 = uniform, 1/n =
    one sample takes everything -- and the share of weights at the clip."""
    w = np.asarray(w, np.float64)
    if not len(w):
        return {"awr_ess_fraction": float("nan"), "awr_clipped_fraction": float("nan"), "awr_weight_mean": float("nan")}
    return {"awr_ess_fraction": float(w.sum() ** 2 / (len(w) * (w ** 2).sum())),
            "awr_clipped_fraction": float(np.mean(w >= clip)), "awr_weight_mean": float(w.mean())}
