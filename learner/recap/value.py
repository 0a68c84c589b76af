"""RECAP's value function (pi*0.6): a distribution over the normalized steps left to success.

Targets (`value_targets`), per step t of an episode of T steps, for its task's step limit L and a
failure penalty of P steps (default P = L):

    success:  G_t = -(T - t) / (L + P)           in [-L/(L+P), 0): minus the steps still to go
    failure:  G_t = -(T - t + P) / (L + P)       in [-1, -P/(L+P)]: never reached, P steps worse

so every failed step is worth less than every successful one, and the scale is the same for every
task (returns in [-1, 0]). An episode cut by the step limit (``extra.end_reason == "max_steps"``) is
a failure whatever its label says: the robot did not finish in time. Steps an operator drove are
trained on like the others (the return is what happened after them, operator included); the
advantage labels treat them apart (learner/recap/labels.py).

The network reads what the policy reads: the frozen trunk's pooled features of the frames and the
instruction (the learner's feature cache, learner/features.py -- computed once per trunk, so the
value function costs an MLP) next to the normalized state, and predicts a categorical over
`bins` evenly spaced returns in [-1, 0] (trained with cross-entropy on the two neighbouring bins of
the target, "two-hot", whose mean is the target). Its value is the distribution's mean.
It is refitted from scratch on every episode in the store at each RECAP iteration (a few seconds):
no state to carry across trunks.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn


@dataclass
class ValueConfig:
    bins: int = 41
    """Categorical bins over normalized returns [-1, 0] (41: a step of 0.025)."""
    hidden: int = 256
    """Width of the two hidden layers of the MLP."""
    steps: int = 400
    """Adam steps per fit (fresh network each RECAP iteration)."""
    batch_size: int = 256
    """Samples (decisions) per Adam step, drawn with replacement from the training episodes."""
    lr: float = 1e-3
    """Adam learning rate."""
    weight_decay: float = 1e-4
    """AdamW weight decay (a fresh small net on a few thousand samples: keep it from memorizing)."""
    heldout_fraction: float = 0.1
    """Episodes held out to report calibration (value MAE, correlation)."""
    failure_penalty_steps: int = 0
    """P above; 0 = the task's step limit L."""
    seed: int = 0
    """Seeds the net's init, the held-out split and the batches."""


def is_success(meta: dict) -> bool:
    """The episode reached its goal in time: labelled success and not cut by the step limit."""
    return meta.get("outcome") == "success" and (meta.get("extra") or {}).get("end_reason") != "max_steps"


def value_targets(n_steps: int, success: bool, limit: int, failure_penalty: int = 0) -> np.ndarray:
    """[n_steps] normalized returns G_t (module docstring); `failure_penalty` 0 = `limit`."""
    limit = max(int(limit), int(n_steps), 1)
    penalty = failure_penalty or limit
    t = np.arange(n_steps, dtype=np.float64)
    togo = (n_steps - t) + (0 if success else penalty)
    return np.maximum(-togo / (limit + penalty), -1.0).astype(np.float32)


def terminal_value(success: bool, limit: int, failure_penalty: int = 0) -> float:
    """G after the last step: 0 at success, -P/(L+P) after a failure (the penalty still to pay)."""
    penalty = failure_penalty or max(int(limit), 1)
    return 0.0 if success else -penalty / (max(int(limit), 1) + penalty)


def bin_centers(bins: int) -> torch.Tensor:
    return torch.linspace(-1.0, 0.0, bins)


def two_hot(targets: torch.Tensor, bins: int) -> torch.Tensor:
    """[N] returns in [-1, 0] -> [N, bins] probabilities on the two nearest bin centres (their mean
    is the target exactly)."""
    pos = (targets.clamp(-1.0, 0.0) + 1.0) * (bins - 1)
    lo = pos.floor().long().clamp(0, bins - 1)
    hi = (lo + 1).clamp(max=bins - 1)
    w_hi = pos - lo.float()
    out = torch.zeros(targets.shape[0], bins)
    out.scatter_add_(1, lo[:, None], (1 - w_hi)[:, None])
    out.scatter_add_(1, hi[:, None], w_hi[:, None])
    return out


class ValueNet(nn.Module):
    """(features, normalized state) -> logits over `bins` returns."""

    def __init__(self, in_dim: int, cfg: ValueConfig):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(in_dim, cfg.hidden), nn.GELU(), nn.Linear(cfg.hidden, cfg.hidden),
                                 nn.GELU(), nn.Linear(cfg.hidden, cfg.bins))
        self.register_buffer("centers", bin_centers(cfg.bins))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)

    @torch.no_grad()
    def value(self, x: torch.Tensor) -> torch.Tensor:
        """[N] expected normalized return."""
        return torch.softmax(self.net(x), -1) @ self.centers


@dataclass
class ValueFit:
    net: ValueNet
    metrics: dict


def fit_value(x: torch.Tensor, y: torch.Tensor, episode_ids: np.ndarray, cfg: ValueConfig) -> ValueFit:
    """Fit a fresh ValueNet on inputs x [N, D] and targets y [N]; `episode_ids` [N] groups rows by
    episode so the held-out split (calibration metrics) is by episode, never by frame."""
    if len(x) == 0:
        raise ValueError("no value-function samples")
    g = torch.Generator().manual_seed(cfg.seed)
    episodes = np.unique(episode_ids)
    order = episodes[torch.randperm(len(episodes), generator=g).numpy()]
    n_held = int(round(len(episodes) * cfg.heldout_fraction)) if len(episodes) >= 10 else 0
    held = np.isin(episode_ids, order[:n_held])
    train_rows = torch.from_numpy(np.flatnonzero(~held))
    held_rows = torch.from_numpy(np.flatnonzero(held))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        net = ValueNet(x.shape[1], cfg)
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    targets = two_hot(y, cfg.bins)
    losses = []
    for _ in range(cfg.steps):
        idx = train_rows[torch.randint(len(train_rows), (min(cfg.batch_size, len(train_rows)),), generator=g)]
        loss = -(targets[idx] * torch.log_softmax(net(x[idx]), -1)).sum(-1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    net.eval()
    metrics = {"value_loss": float(np.mean(losses[-max(1, len(losses) // 10):])), "value_samples": len(train_rows),
               "value_episodes": len(episodes) - n_held}
    metrics.update(calibration(net, x[train_rows], y[train_rows], "train"))
    if len(held_rows):
        metrics.update(calibration(net, x[held_rows], y[held_rows], "heldout"))
    return ValueFit(net, metrics)


def calibration(net: ValueNet, x: torch.Tensor, y: torch.Tensor, name: str) -> dict:
    """Mean absolute error and correlation of the predicted value with the true return."""
    v = net.value(x).numpy()
    t = y.numpy()
    corr = float(np.corrcoef(v, t)[0, 1]) if len(t) > 2 and t.std() > 0 and v.std() > 0 else float("nan")
    return {f"value_mae_{name}": float(np.abs(v - t).mean()), f"value_corr_{name}": corr}
