"""Policy: a loaded checkpoint version that turns observations into action chunks in robot units.

Log-prob of a chunk = sum over its H*action_dim dims of the Gaussian in normalized action space;
"greedy" executes the mean, "sample" mean + std * eps. `act_batch` runs one forward pass for the
whole batch.

Advantage conditioning (RECAP, vla/advantage.py): a version whose metadata carries
``advantage_conditioning`` gets "Advantage: positive" appended to every instruction, and with a
guidance weight beta != 1 the unconditioned prompt runs in the same batch and the chunk mean is
mean_u + beta * (mean_pos - mean_u). A version without it is served exactly as before.
`features` is always the plain instruction's (the learner's feature cache and value function read it).

Threading: the server calls `act_batch` from one worker thread; a hot swap builds a new Policy
(`Policy.load(..., base=old)`) and replaces the reference -- a Policy is never mutated after load,
so no lock is needed. Inference runs under `torch.inference_mode`.
"""

from __future__ import annotations

from dataclasses import asdict

import numpy as np
import torch

from interface.policy import ACT_MODES, ActOutput, Observation, PolicySpec
from vla.advantage import POSITIVE, AdvantagePrompt, check_prompt_takes_indicator, from_meta, with_indicator
from vla.model import VLAModel
from vla.normalization import Normalizer
from vla.registry import CheckpointError, CheckpointRegistry, TrustedSource, load_model


def trunk_key(policy: Policy) -> str:
    """Names the frozen part (backbone + adapters + pooler) that computes features: equal keys, equal
    features. The learner's feature cache and the reward model are keyed by it."""
    m = policy.model
    version = "unpublished" if m.trunk_version is None else f"v{m.trunk_version:06d}"
    fingerprint = m.trunk_fingerprint or m.compute_trunk_fingerprint()
    return f"{version}-{fingerprint[:12]}-{m.backbone_hash.replace(':', '')[-12:]}"


class Policy:
    """A checkpoint version as a `interface.policy.BasePolicy`."""

    def __init__(self, model: VLAModel, norm: Normalizer, version: int = -1, meta: dict | None = None):
        """Wrap a model (e.g. the learner's, for evaluation before publishing). version -1 = unpublished."""
        c = model.config
        if norm.action_dim != c.action_dim or norm.state_dim != c.state_dim:
            raise ValueError("normalizer dims do not match the model")
        self.model = model
        self.norm = norm
        self.version = version
        self.meta = meta or {}
        try:
            self.advantage: AdvantagePrompt | None = from_meta(self.meta)
            if self.advantage is not None:
                check_prompt_takes_indicator(model.preprocessor)
        except ValueError as e:
            raise CheckpointError(f"checkpoint v{version}: {e}") from e
        self.spec = PolicySpec(cameras=list(c.cameras), image_size=c.image_size, chunk=c.chunk,
                               action_dim=c.action_dim, state_dim=c.state_dim, backbone_id=model.backbone_id,
                               backbone_hash=model.backbone_hash, feature_dim=model.feature_dim)

    @classmethod
    def load(cls, registry: CheckpointRegistry, version: int | None = None, device: str = "cpu",
             base: Policy | None = None, backbone_dir: str | None = None,
             trusted: TrustedSource | None = None) -> Policy:
        """version None = LATEST. With `base`, a version whose trunk (backbone + adapter + pooler) is
        base's reuses it and loads only its heads. `backbone_dir` overrides where the backbone is
        looked for (e.g. a different mount point); its hash must still match. `trusted`: the loading
        process's own model configuration (remote code, model dir), never the checkpoint's.
        Raises CheckpointError for a missing/corrupt/mismatched version."""
        try:
            model, norm, meta = load_model(registry, version, device, base.model if base else None, backbone_dir,
                                           trusted)
        except CheckpointError:
            raise
        except (OSError, ValueError, RuntimeError) as e:  # e.g. a broken backbone dir, bad config
            raise CheckpointError(f"checkpoint {version if version is not None else 'LATEST'}: {e}") from e
        return cls(model, norm, meta["version"], meta)

    # ---- acting ------------------------------------------------------------------------------
    def features(self, obs: list[Observation]) -> torch.Tensor:
        """[B, feature_dim] backbone + pooler features (no grad). Plain no_grad tensors, not
        inference-mode ones, so a learner may cache them and train heads on them."""
        with torch.no_grad():
            return self.model.features(self.model.collate(obs))

    def act(self, obs: Observation, mode: str = "greedy", generator: torch.Generator | None = None) -> ActOutput:
        return self.act_batch([obs], [mode], generator)[0]

    def act_batch(self, obs: list[Observation], modes: list[str],
                  generator: torch.Generator | None = None) -> list[ActOutput]:
        if not obs:
            return []
        self._check_modes(modes, len(obs))
        states = np.stack([np.asarray(o.state, np.float32).reshape(-1) for o in obs])
        if self.advantage is None:
            return self.act_from_features(self.features(obs), states, modes, generator)
        positive = [Observation(o.images, o.state, with_indicator(o.instruction, POSITIVE)) for o in obs]
        if not self.advantage.guided:
            return self.act_from_features(self.features(positive), states, modes, generator)
        both = self.features(positive + list(obs))  # one forward pass: positive rows, then unconditioned
        return self.act_from_features(both[:len(obs)], states, modes, generator, unconditioned=both[len(obs):])

    def act_from_features(self, features: torch.Tensor, states: np.ndarray, modes: list[str],
                          generator: torch.Generator | None = None,
                          unconditioned: torch.Tensor | None = None) -> list[ActOutput]:
        """The head part of `act_batch` on precomputed features [B, feature_dim] and raw states [B, state_dim].
        With `unconditioned` (the same observations' features without the indicator), the mean is
        classifier-free guided: mean_u + beta * (mean - mean_u), beta = the version's guidance."""
        b = features.shape[0]
        self._check_modes(modes, b)
        states = np.asarray(states, np.float32).reshape(b, -1)
        if states.shape[1] != self.spec.state_dim:
            raise ValueError(f"state has {states.shape[1]} dims, policy expects {self.spec.state_dim}")
        if not np.isfinite(states).all():
            raise ValueError("state contains NaN/inf")
        device = next(self.model.heads.parameters()).device
        with torch.inference_mode():
            f = features.to(device)
            s = self.norm.normalize_states(torch.from_numpy(states).to(device))
            dist = self.model.head_dist(f, s)
            if unconditioned is not None:
                mean_u = self.model.head_dist(unconditioned.to(device), s).mean
                guided = mean_u + self.advantage.guidance * (dist.mean - mean_u)
                dist = torch.distributions.Normal(guided, dist.stddev)
            sample = torch.tensor([m == "sample" for m in modes], device=device).unsqueeze(1)
            eps = 0.0
            if sample.any():  # drawn on the generator's device (a CPU generator drives a GPU policy too)
                gen_device = generator.device if generator is not None else device
                eps = torch.randn(dist.mean.shape, generator=generator, device=gen_device).to(device)
            a_norm = torch.where(sample, dist.mean + dist.stddev * eps, dist.mean)
            log_prob = dist.log_prob(a_norm).sum(-1)
            value = self.model.value(f, s)
            actions = self.norm.unnormalize_actions(a_norm.view(b, self.spec.chunk, self.spec.action_dim))
        actions_np = actions.cpu().numpy().astype(np.float32)
        return [ActOutput(actions=actions_np[i], log_prob=float(log_prob[i]), value=float(value[i]))
                for i in range(b)]

    def log_prob(self, features: torch.Tensor, states: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """Log-prob [B] of executed chunks (robot units [B, H, action_dim]) -- what the server reported."""
        device = next(self.model.heads.parameters()).device
        with torch.inference_mode():
            f = features.to(device)
            s = self.norm.normalize_states(torch.as_tensor(np.asarray(states, np.float32), device=device))
            a = self.norm.normalize_actions(torch.as_tensor(np.asarray(actions, np.float32), device=device))
            return self.model.log_prob(f, s, a).cpu().numpy()

    @staticmethod
    def _check_modes(modes: list[str], n: int) -> None:
        if len(modes) != n:
            raise ValueError(f"{len(modes)} modes for {n} observations")
        bad = [m for m in modes if m not in ACT_MODES]
        if bad:
            raise ValueError(f"unknown act mode(s) {bad}; expected one of {ACT_MODES}")

    def metadata(self) -> dict:
        keep = ("kind", "parent", "base_version", "created", "phase", "metrics")
        out = {"version": self.version, **asdict(self.spec), "normalization": self.norm.to_dict(),
               **{k: self.meta[k] for k in keep if k in self.meta}}
        if self.advantage is not None:
            out["advantage_conditioning"] = self.advantage.to_meta()
        return out
