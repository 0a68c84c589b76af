"""Supervised fine-tuning of the VLA on demonstrations (iRe-VLA Stage 0 and Stage 2).

* Stage 2 (``mode="lora"``): peft LoRA adapters on the backbone + pooler + the action head, on
  expert demos ∪ successful online episodes ∪ intervention segments (HG-DAgger, also of failed episodes). The expert data keeps the model from forgetting; the
  successes consolidate what RL found into the backbone.
* Stage 0 (``mode="full"``, learner/bootstrap.py): everything trains, from the tiny random init.

Loss on normalized action chunks: Gaussian NLL (trains the mean and the state-independent log-std,
so the exploration noise RL starts from matches the demos' spread) or MSE on the mean (log-std left
alone). Only the action head's mean/log-std train here -- the value and Q heads get no SFT signal
and are excluded from the optimizer (weight decay would otherwise shrink them for nothing).

Bounded steps with a warm-up + cosine learning-rate schedule, a deterministic data order (one
seeded generator draws every global batch -- DDP ranks take interleaved slices of the same batch,
learner/sft_ddp.py), a tqdm bar, and the loss on held-out episodes (by episode, never by frame:
neighbouring frames of one episode are near-duplicates).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from tqdm import tqdm

from episodes.store import Episode, EpisodeStore
from interface.policy import Observation
from learner.dataset import sft_decisions
from vla.model import VLAModel
from vla.normalization import Normalizer


@dataclass
class SFTConfig:
    steps: int = 300
    batch_size: int = 32
    lr: float = 1e-3  # pooler + action head (and LoRA adapters / backbone, scaled below)
    backbone_lr_scale: float = 1.0  # backbone (full) or adapters (lora) learn at lr * this
    weight_decay: float = 0.0
    warmup_steps: int = 20
    min_lr_fraction: float = 0.1  # cosine decays to lr * this
    loss: Literal["nll", "mse"] = "nll"
    eval_fraction: float = 0.1  # held-out episodes
    eval_every: int = 100  # steps (0 = only at the end)
    max_grad_norm: float = 1.0
    seed: int = 0


@dataclass
class SFTSample:
    episode: Episode
    step: int
    state: np.ndarray  # raw [state_dim]
    chunk: np.ndarray  # raw [H, action_dim]
    instruction: str


@dataclass
class SFTData:
    train: list[SFTSample]
    eval: list[SFTSample]
    episodes_train: int = 0
    episodes_eval: int = 0
    frame_cache: dict = field(default_factory=dict)
    train_weights: list[float] | None = None
    """Per training sample: batches draw it with probability proportional to its weight (AWR,
    learner/recap/awr.py); None = every sample equally, in shuffled epochs."""

    def add_episode(self, samples: list[SFTSample], held_out: bool, weights: list[float] | None = None) -> None:
        """One episode's samples, all on the training side or all held out (never split); `weights`
        (one per sample) are kept for the training side. Weighted and unweighted episodes do not mix."""
        if weights is not None and len(weights) != len(samples):
            raise ValueError(f"{len(weights)} weights for {len(samples)} samples")
        if held_out:
            self.eval += samples
            self.episodes_eval += 1
            return
        if (weights is None) != (self.train_weights is None) and self.train:
            raise ValueError("an SFT data set is either weighted in every training episode or in none")
        if weights is not None:
            self.train_weights = (self.train_weights or []) + [float(w) for w in weights]
        self.train += samples
        self.episodes_train += 1


def build_sft_data(store: EpisodeStore, metas: list[dict], chunk: int, eval_fraction: float,
                   seed: int = 0, intervention_repeat: int = 1) -> SFTData:
    """Every SFT step of every episode is a sample (target: the next H executed actions of its run;
    learner.dataset.sft_step_spans: an episode with interventions gives its operator segments). Held-out
    episodes are picked among the EXPERT demos by a seeded shuffle (the eval loss stays comparable
    across SFT phases while online successes accumulate). ``intervention_repeat``: each sample of an
    operator's segment is repeated (the policy's own successes otherwise outnumber those few steps)."""
    metas = sorted(metas, key=lambda m: (m["robot_id"], m["episode_id"]))
    experts = [m for m in metas if m.get("source") == "expert"]
    rng = np.random.default_rng(seed)
    n_eval = int(round(len(experts) * eval_fraction)) if len(experts) >= 2 else 0
    eval_ids = {(m["robot_id"], m["episode_id"]) for m in rng.permutation(np.array(experts, dtype=object))[:n_eval]}
    data = SFTData(train=[], eval=[])
    for meta in metas:
        samples = []
        for d in sft_decisions(store, meta, chunk):
            teleop = bool(d.steps) and bool(d.episode.steps[_index_of(d, d.steps[0])].get("intervention"))
            samples += [SFTSample(d.episode, d.steps[i], d.states[i], d.chunks[i], d.instruction)
                        for i in range(len(d))] * (intervention_repeat if teleop else 1)
        data.add_episode(samples, held_out=(meta["robot_id"], meta["episode_id"]) in eval_ids)
    return data


def _index_of(d, step: int) -> int:
    """Index of step number `step` in the episode's step list."""
    return next(i for i, s in enumerate(d.episode.steps) if int(s["step"]) == step)


def _frame(data: SFTData, sample: SFTSample, cam: str, limit: int = 50_000) -> np.ndarray:
    key = (str(sample.episode.root), sample.step, cam)
    img = data.frame_cache.get(key)
    if img is None:
        img = sample.episode.frame(sample.step, cam)
        if len(data.frame_cache) < limit:  # decoded frames are reused every epoch; bounded memory
            data.frame_cache[key] = img
    return img


def make_batch(model: VLAModel, norm: Normalizer, data: SFTData, samples: list[SFTSample]):
    cams = model.config.cameras
    obs = [Observation({c: _frame(data, s, c) for c in cams}, s.state, s.instruction) for s in samples]
    inputs = model.collate(obs)
    states = norm.normalize_states(model.states_tensor(obs))
    actions = norm.normalize_actions(torch.from_numpy(np.stack([s.chunk for s in samples]))).flatten(1)
    return inputs, states, actions.to(states.device)


def sft_loss(model: VLAModel, inputs, states, actions, kind: str) -> torch.Tensor:
    features = model.features(inputs)
    dist = model.head_dist(features, states)
    if kind == "mse":
        return (dist.mean - actions).pow(2).mean()
    return -dist.log_prob(actions).mean()  # per-dim NLL (the sum over dims / A)


class SFTObjective(torch.nn.Module):
    """The loss as one module forward, so DistributedDataParallel can wrap it (sft_ddp.py)."""

    def __init__(self, model: VLAModel, kind: str):
        super().__init__()
        self.model, self.kind = model, kind

    def forward(self, inputs, states, actions) -> torch.Tensor:
        return sft_loss(self.model, inputs, states, actions, self.kind)


def prepare_sft_mode(model: VLAModel, mode: str, kind: str) -> None:
    """Set the training mode, then freeze what the SFT loss does not reach (value and Q heads; the
    log-std under MSE): no optimizer state for them, and DDP sees no unused parameters."""
    model.set_mode(mode)
    model.heads.value.requires_grad_(False)
    model.heads.q1.requires_grad_(False)
    model.heads.q2.requires_grad_(False)
    model.heads.log_std.requires_grad_(kind == "nll")


def sft_parameters(model: VLAModel, cfg: SFTConfig) -> list[dict]:
    backbone = [p for p in model.backbone.parameters() if p.requires_grad]
    rest = [p for p in [*model.pooler.parameters(), *model.heads.parameters()] if p.requires_grad]
    groups = [{"params": rest, "lr": cfg.lr}]
    if backbone:
        groups.append({"params": backbone, "lr": cfg.lr * cfg.backbone_lr_scale})
    return groups


def lr_factor(step: int, cfg: SFTConfig) -> float:
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.min_lr_fraction + (1 - cfg.min_lr_fraction) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


@torch.no_grad()
def eval_loss(model: VLAModel, norm: Normalizer, data: SFTData, kind: str, batch_size: int = 64) -> float:
    if not data.eval:
        return float("nan")
    was_training = model.training
    model.eval()
    total = 0.0
    for start in range(0, len(data.eval), batch_size):
        part = data.eval[start:start + batch_size]
        total += float(sft_loss(model, *make_batch(model, norm, data, part), kind)) * len(part)
    model.train(was_training)
    return total / len(data.eval)


def global_batch_indices(n: int, cfg: SFTConfig, weights: list[float] | None = None) -> list[torch.Tensor]:
    """The whole run's batches, drawn up front from one seeded generator: epochs of shuffled
    indices, cut into global batches. Every DDP rank computes the same list. With `weights` (one
    per sample, >= 0, not all 0) every index is drawn independently, with replacement, with
    probability proportional to its weight (AWR's weighted regression as weighted sampling)."""
    g = torch.Generator().manual_seed(cfg.seed)
    if weights is not None:
        w = torch.as_tensor(weights, dtype=torch.float64)
        if w.shape != (n,) or not torch.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
            raise ValueError(f"sample weights must be {n} finite numbers >= 0, not all 0")
        flat_w = torch.multinomial(w, cfg.steps * cfg.batch_size, replacement=True, generator=g)
        return list(flat_w.view(cfg.steps, cfg.batch_size))
    flat: list[int] = []
    need = cfg.steps * cfg.batch_size
    while len(flat) < need:
        flat += torch.randperm(n, generator=g).tolist()
    return [torch.tensor(flat[i * cfg.batch_size:(i + 1) * cfg.batch_size]) for i in range(cfg.steps)]


def train_sft(model: VLAModel, norm: Normalizer, data: SFTData, cfg: SFTConfig, mode: str = "lora",
              progress: bool = True, on_step: Callable[[int, dict], None] | None = None,
              rank: int = 0, world: int = 1, wrap: Callable[[torch.nn.Module], torch.nn.Module] | None = None,
              reduce: Callable[[torch.Tensor], torch.Tensor] | None = None, desc: str = "sft") -> dict:
    """Train for cfg.steps global batches; returns metrics (train loss curve, eval losses, time).
    Under DDP (sft_ddp.py) `wrap` wraps the objective in DistributedDataParallel (which averages
    the grads), each rank takes its slice of every global batch, and `reduce` averages the loss."""
    if not data.train:
        raise ValueError("no SFT training samples (no demos / successful episodes in the store)")
    prepare_sft_mode(model, mode, cfg.loss)
    model.train()
    objective = SFTObjective(model, cfg.loss)
    if wrap is not None:
        objective = wrap(objective)
    optimizer = torch.optim.AdamW(sft_parameters(model, cfg), lr=cfg.lr, weight_decay=cfg.weight_decay)
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    params = [p for g in optimizer.param_groups for p in g["params"]]
    batches = global_batch_indices(len(data.train), cfg, data.train_weights)
    losses: list[float] = []
    evals: dict[int, float] = {}
    t0 = time.time()
    bar = tqdm(total=cfg.steps, desc=desc, unit="step", disable=not progress or rank != 0, leave=False)
    for step, idx in enumerate(batches):
        for group, base in zip(optimizer.param_groups, base_lrs, strict=True):
            group["lr"] = base * lr_factor(step, cfg)
        local = idx[rank::world].tolist()
        loss = objective(*make_batch(model, norm, data, [data.train[i] for i in local]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if reduce is not None:
            loss = reduce(loss.detach())
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        losses.append(float(loss.detach()))
        if cfg.eval_every and (step + 1) % cfg.eval_every == 0 and step + 1 < cfg.steps and rank == 0:
            evals[step + 1] = eval_loss(model, norm, data, cfg.loss)
        bar.set_postfix(loss=f"{losses[-1]:.3f}")
        bar.update(1)
        if on_step is not None:
            on_step(step, {"loss": losses[-1], "progress": (step + 1) / cfg.steps})
    bar.close()
    model.set_mode("head_only")  # back to serving / RL mode; every head trains again in RL
    model.eval()
    final_eval = eval_loss(model, norm, data, cfg.loss) if rank == 0 else float("nan")
    evals[cfg.steps] = final_eval
    tail = losses[-max(1, len(losses) // 10):]
    return {"loss_train": float(np.mean(tail)), "loss_train_first": losses[0], "loss_eval": final_eval,
            "loss_eval_curve": {str(k): v for k, v in evals.items()}, "loss_curve": losses,
            "steps": cfg.steps, "batch_size": cfg.batch_size, "n_train_samples": len(data.train),
            "n_eval_samples": len(data.eval), "episodes_train": data.episodes_train,
            "episodes_eval": data.episodes_eval, "seconds": time.time() - t0, "mode": mode,
            "log_std_mean": float(model.heads.log_std.detach().mean())}
