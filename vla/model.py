"""VLAModel (iRe-VLA): HF image-text-to-text backbone (last hidden states) -> attention pooler with
learned queries (token learner) -> feature f; Gaussian action-chunk head on concat(f, normalized
state); PPO value head V(f, s); SAC twin Q(f, s, a). All heads work in normalized action space.

Training modes (`set_mode`):
* ``head_only`` -- backbone and pooler frozen (features can be cached); head, value and Q train.
  This is the RL phase.
* ``lora``      -- peft LoRA adapters on the backbone's attention/MLP projections + pooler + heads
  train; base weights frozen. This is the SFT phase.
* ``full``      -- everything trains: Stage 0 pretraining of the tiny model from scratch, and the
  "PPO on the whole model" baseline.

Helpers for the learner: `build_model(config)`, `model.collate(observations)`, `model.features`,
`model.head_dist`, `model.value`, `model.q`.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from deployment.model import ModelConfig
from vla.backbone import Preprocessor, backbone_hash, hidden_size, last_hidden_states, load_backbone
from vla.language import LanguagePreprocessor, LanguageProjection, load_language_encoder, resolve_encoder_name
from vla.tiny import TINY_ID, default_tiny_dir, ensure_tiny_backbone

if TYPE_CHECKING:
    from interface.policy import Observation

MODES = ("head_only", "lora", "full")


class AttentionPooler(nn.Module):
    """Token learner: `queries` learned vectors attend over all backbone tokens (padding masked)."""

    def __init__(self, in_dim: int, dim: int, queries: int, heads: int):
        super().__init__()
        self.key_proj = nn.Linear(in_dim, dim)
        self.key_norm = nn.LayerNorm(dim)
        self.queries = nn.Parameter(torch.randn(queries, dim) / math.sqrt(dim))
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.out_norm = nn.LayerNorm(dim)
        self.feature_dim = queries * dim

    def forward(self, tokens: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        keys = self.key_norm(self.key_proj(tokens))
        q = self.queries.unsqueeze(0).expand(tokens.shape[0], -1, -1)
        pad = None if attention_mask is None else attention_mask == 0
        pooled, _ = self.attn(q, keys, keys, key_padding_mask=pad, need_weights=False)
        return self.out_norm(pooled).flatten(1)


def mlp(in_dim: int, hidden: int, out_dim: int, last_gain: float = 1.0) -> nn.Sequential:
    net = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, hidden), nn.GELU(),
                        nn.Linear(hidden, out_dim))
    # A small last layer starts the policy near the demo mean and values near 0 (standard for PPO).
    nn.init.orthogonal_(net[-1].weight, gain=last_gain)
    nn.init.zeros_(net[-1].bias)
    return net


LOG_STD_BOUNDS = (-5.0, 2.0)  # the policy's log-std is clamped here wherever it is used


def head_input(features: torch.Tensor, norm_states: torch.Tensor) -> torch.Tensor:
    """What every head reads: the pooled feature next to the normalized state."""
    return torch.cat([features, norm_states.to(features.dtype)], dim=-1)


class ActionHeads(nn.Module):
    """Everything the RL phase trains: Gaussian chunk head, log-std, value, twin Q.
    Saved as head.safetensors. The math of each head is in HeadActor / HeadCritic / HeadTwinQ."""

    def __init__(self, feature_dim: int, state_dim: int, chunk: int, action_dim: int, hidden: int,
                 init_log_std: float):
        super().__init__()
        inp = feature_dim + state_dim
        out = chunk * action_dim
        self.mean = mlp(inp, hidden, out, last_gain=0.01)
        self.log_std = nn.Parameter(torch.full((out,), float(init_log_std)))
        self.value = mlp(inp, hidden, 1, last_gain=1.0)
        self.q1 = mlp(inp + out, hidden, 1, last_gain=1.0)
        self.q2 = mlp(inp + out, hidden, 1, last_gain=1.0)


# Views of ActionHeads for the RL algorithms: each holds only its own parameters (an optimizer or a
# deepcopy of a view touches nothing else) and is the one definition of its head's math, used by the
# server's sampling (VLAModel.head_dist), the learner's recomputed log-probs and the updates alike.

class HeadActor(nn.Module):
    """(features, normalized states) -> (mean [B, A], log_std [A]) of the Gaussian over the
    flattened normalized chunk (A = H * action_dim)."""

    def __init__(self, heads: ActionHeads):
        super().__init__()
        self.mean, self.log_std = heads.mean, heads.log_std

    def forward(self, features: torch.Tensor, norm_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.mean(head_input(features, norm_states)), self.log_std.clamp(*LOG_STD_BOUNDS)


class HeadCritic(nn.Module):
    """(features, normalized states) -> V [B] (PPO's value)."""

    def __init__(self, heads: ActionHeads):
        super().__init__()
        self.value = heads.value

    def forward(self, features: torch.Tensor, norm_states: torch.Tensor) -> torch.Tensor:
        return self.value(head_input(features, norm_states)).squeeze(-1)


class HeadTwinQ(nn.Module):
    """(features, normalized states, normalized chunk [B, A] or [B, H, action_dim]) -> (Q1 [B], Q2 [B])
    (SAC's twin critics). Holds only the two Q MLPs, so a deepcopy (the target critics) copies
    nothing else."""

    def __init__(self, heads: ActionHeads):
        super().__init__()
        self.q1, self.q2 = heads.q1, heads.q2

    def forward(self, features: torch.Tensor, norm_states: torch.Tensor,
                norm_actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([head_input(features, norm_states), norm_actions.flatten(1).to(features.dtype)], -1)
        return self.q1(x).squeeze(-1), self.q2(x).squeeze(-1)


class VLAModel(nn.Module):
    def __init__(self, config: ModelConfig, backbone, processor, backbone_dir: str | Path,
                 backbone_id: str, backbone_hash_: str):
        super().__init__()
        # the encoder resolved (None: the embedded default's choice), so checkpoints record which
        encoder = resolve_encoder_name(config.language_encoder, backbone_id == TINY_ID, backbone_id)
        config = config.model_copy(update={"language_encoder": encoder})
        self.config = config
        self.backbone = backbone
        self.language = load_language_encoder(config.language_encoder)  # None: the backbone's own tokens
        if self.language is None:
            self.preprocessor = Preprocessor(processor, config.cameras, config.image_size, config.image_splitting)
        else:
            self.preprocessor = LanguagePreprocessor(processor, config.cameras, config.image_size,
                                                     config.image_splitting, self.language,
                                                     config.language_tokens)
        self.backbone_dir = str(backbone_dir)
        self.backbone_id = backbone_id
        self.backbone_hash = backbone_hash_
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(config.seed + 1)
            self.pooler = AttentionPooler(hidden_size(backbone), config.pooler_dim, config.pooler_queries,
                                          config.pooler_heads)
            self.heads = ActionHeads(self.pooler.feature_dim, config.state_dim, config.chunk, config.action_dim,
                                     config.head_hidden, config.init_log_std)
            if self.language is not None:
                # Part of the pooler's module: saved in pooler.safetensors, trained and frozen with it.
                self.pooler.language = LanguageProjection(self.language.dim, config.language_tokens,
                                                          hidden_size(backbone))
                self.pooler.language.attach(backbone.get_input_embeddings(), self.preprocessor.placeholder_id)
        self.lora_config = None  # peft LoraConfig once adapters are injected
        self.mode = "head_only"
        self.backbone_trained = False  # entered full mode: base weights may differ from backbone_dir
        self.saved_backbone_fingerprint: str | None = None
        self.trunk_version: int | None = None  # registry version whose backbone/adapter/pooler this is
        self.trunk_registry: str | None = None  # ... in this registry root
        self.trunk_fingerprint: str | None = None
        self.set_mode("head_only")

    # ---- structure -------------------------------------------------------------------------
    @property
    def feature_dim(self) -> int:
        return self.pooler.feature_dim

    @property
    def chunk_dim(self) -> int:
        return self.config.chunk * self.config.action_dim

    @property
    def has_lora(self) -> bool:
        return self.lora_config is not None

    def add_lora(self) -> None:
        """Inject peft LoRA adapters into the backbone's attention/MLP projections (B=0: no change)."""
        if self.has_lora:
            return
        from peft import LoraConfig

        present = {name.rsplit(".", 1)[-1] for name, _ in self.backbone.named_modules()}
        targets = sorted(set(self.config.lora_targets) & present)
        if not targets:
            raise ValueError(f"none of lora_targets {self.config.lora_targets} exist in the backbone")
        self._inject_lora(LoraConfig(r=self.config.lora_rank, lora_alpha=self.config.lora_alpha,
                                     target_modules=targets, lora_dropout=0.0, bias="none"))

    def _inject_lora(self, lora_config) -> None:
        from peft import inject_adapter_in_model

        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed + 2)
            inject_adapter_in_model(lora_config, self.backbone)
        self.lora_config = lora_config
        self.set_mode(self.mode)

    def adapter_state_dict(self) -> dict[str, torch.Tensor]:
        from peft import get_peft_model_state_dict

        return get_peft_model_state_dict(self.backbone) if self.has_lora else {}

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        if mode == "lora":
            self.add_lora()  # add_lora calls back here with self.mode unchanged; set below
        self.mode = mode
        for name, p in self.backbone.named_parameters():
            is_adapter = "lora_" in name
            p.requires_grad_(mode == "full" or (mode == "lora" and is_adapter))
        self.pooler.requires_grad_(mode != "head_only")
        self.heads.requires_grad_(True)
        if mode == "full" and not self.backbone_trained:
            # Remember the weights before full training: publish saves the backbone only if it moved.
            self.backbone_trained = True
            self.saved_backbone_fingerprint = self.backbone_fingerprint()

    def backbone_fingerprint(self) -> str:
        """Hash of the backbone's own (non-LoRA) weights, independent of LoRA-renamed keys."""
        h = hashlib.blake2b(digest_size=12)
        for name, p in self.backbone.named_parameters():
            if "lora_" not in name:
                h.update(p.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    def backbone_modified(self) -> bool:
        """True if full-mode training changed the backbone since it was loaded or last saved."""
        return self.backbone_trained and self.backbone_fingerprint() != self.saved_backbone_fingerprint

    def trainable_parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def parameter_counts(self) -> dict[str, int]:
        lora = sum(p.numel() for n, p in self.backbone.named_parameters() if "lora_" in n)
        return {"backbone": sum(p.numel() for p in self.backbone.parameters()) - lora, "lora": lora,
                "pooler": sum(p.numel() for p in self.pooler.parameters()),
                "heads": sum(p.numel() for p in self.heads.parameters()),
                "trainable": self.trainable_parameter_count()}

    def compute_trunk_fingerprint(self) -> str:
        """Hash of the trainable trunk (pooler + adapters): a head-only version is valid only if
        this is unchanged since the full version it references."""
        h = hashlib.blake2b(digest_size=12)
        for name, t in sorted({**self.pooler.state_dict(), **self.adapter_state_dict()}.items()):
            h.update(name.encode())
            h.update(t.detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    # ---- forward pieces ------------------------------------------------------------------
    def collate(self, observations: list[Observation]) -> dict[str, torch.Tensor]:
        """Backbone inputs for a batch of observations (deterministic; same in server and learner)."""
        device = next(self.pooler.parameters()).device
        batch = self.preprocessor([o.images for o in observations], [o.instruction for o in observations])
        dtype = next(self.backbone.parameters()).dtype
        return {k: v.to(device, dtype) if v.is_floating_point() else v.to(device) for k, v in batch.items()}

    def states_tensor(self, observations: list[Observation]) -> torch.Tensor:
        """Raw (robot-unit) states [B, state_dim] as float32 on the model's device."""
        device = next(self.pooler.parameters()).device
        states = np.stack([np.asarray(o.state, np.float32).reshape(-1) for o in observations])
        if states.shape[1] != self.config.state_dim:
            raise ValueError(f"state has {states.shape[1]} dims, model expects {self.config.state_dim}")
        return torch.from_numpy(states).to(device)

    def features(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """[B, feature_dim]: backbone last hidden states pooled by the attention pooler.
        In head_only mode no graph is built (nothing before the heads trains)."""
        inputs = dict(inputs)
        language = inputs.pop("language_embedding", None)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.mode != "head_only"):
            if self.language is None:
                tokens = last_hidden_states(self.backbone, inputs)
            else:
                if language is None:
                    raise ValueError("inputs lack language_embedding: build them with model.collate")
                with self.pooler.language.feeding(language):
                    tokens = last_hidden_states(self.backbone, inputs)
            return self.pooler(tokens.float(), inputs.get("attention_mask"))

    def head_dist(self, features: torch.Tensor, norm_states: torch.Tensor) -> torch.distributions.Normal:
        """Gaussian over the flattened normalized chunk [B, H*action_dim]; log-prob of a chunk =
        `dist.log_prob(a).sum(-1)`."""
        mean, log_std = HeadActor(self.heads)(features, norm_states)
        return torch.distributions.Normal(mean, log_std.exp().expand_as(mean))

    def log_prob(self, features: torch.Tensor, norm_states: torch.Tensor, norm_actions: torch.Tensor) -> torch.Tensor:
        """[B] log-prob of whole chunks (sum over H*action_dim dims, normalized space) -- PPO's ratio."""
        return self.head_dist(features, norm_states).log_prob(norm_actions.flatten(1)).sum(-1)

    def feature_key(self) -> str:
        """Identifies what `features` computes (backbone weights + adapters + pooler): key a feature
        cache by it; it changes exactly when an SFT phase changes the trunk."""
        language = "" if self.language is None else f":{self.language.hash}"
        return f"{self.backbone_hash}{language}:{self.compute_trunk_fingerprint()}"

    def value(self, features: torch.Tensor, norm_states: torch.Tensor) -> torch.Tensor:
        return HeadCritic(self.heads)(features, norm_states)

    def q(self, features: torch.Tensor, norm_states: torch.Tensor,
          norm_actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Twin Q; norm_actions [B, H*action_dim] (or [B, H, action_dim])."""
        return HeadTwinQ(self.heads)(features, norm_states, norm_actions)

    @classmethod
    def sharing_trunk(cls, base: VLAModel, config: ModelConfig) -> VLAModel:
        """A model that uses `base`'s backbone, preprocessor and pooler (the same objects, no copy)
        and owns fresh heads: a head-only version loaded with `base=` costs only its head weights."""
        model = cls.__new__(cls)
        nn.Module.__init__(model)
        model.config = config
        model.backbone, model.preprocessor, model.pooler = base.backbone, base.preprocessor, base.pooler
        model.language = base.language
        with torch.random.fork_rng(devices=[]):
            model.heads = ActionHeads(base.feature_dim, config.state_dim, config.chunk, config.action_dim,
                                      config.head_hidden, config.init_log_std)
        model.heads.to(next(base.heads.parameters()).device)
        model.lora_config = base.lora_config
        model.backbone_dir, model.backbone_id, model.backbone_hash = (base.backbone_dir, base.backbone_id,
                                                                      base.backbone_hash)
        model.backbone_trained, model.saved_backbone_fingerprint = False, None
        model.trunk_version, model.trunk_registry = base.trunk_version, base.trunk_registry
        model.trunk_fingerprint = base.trunk_fingerprint
        model.mode = "head_only"
        model.heads.requires_grad_(True)
        return model

def load_vla(config: ModelConfig, backbone_dir: str | Path, backbone_id: str | None = None,
             device: str | None = None) -> VLAModel:
    """VLAModel on the backbone at `backbone_dir` (fresh pooler/heads, seeded by config.seed)."""
    backbone_dir = Path(backbone_dir)
    device = device or config.device
    model, processor = load_backbone(backbone_dir, config.trust_remote_code, device, config.backbone_dtype)
    if backbone_id is None:
        backbone_id = TINY_ID if (backbone_dir / ".vlaloop-complete").exists() else str(backbone_dir)
    vla = VLAModel(config, model, processor, backbone_dir, backbone_id, backbone_hash(backbone_dir))
    return vla.to(device)


def build_model(config: ModelConfig, backbone_dir: str | Path | None = None,
                cache_dir: str | Path | None = None) -> VLAModel:
    """The model a run starts from: `backbone_dir` (or config.backbone_dir) if given, else the
    embedded tiny PaliGemma built once into `cache_dir` (or config.tiny_cache_dir, or
    ~/.cache/vlaloop) and loaded back through the Auto classes."""
    path = backbone_dir or config.backbone_dir
    if path is None:
        path = ensure_tiny_backbone(cache_dir or config.tiny_cache_dir or default_tiny_dir(config.seed),
                                    seed=config.seed)
    return load_vla(config, path)
