"""The embedded tiny default backbone: a PaliGemma-architecture model (SigLIP vision tower + Gemma
text decoder, ~1.4 M parameters) with a small byte-level BPE tokenizer trained on the task vocabulary.

It is built from configs on first use (no download), saved with `save_pretrained`, and from then on
loaded through `AutoModelForImageTextToText` / `AutoProcessor` exactly like a real model dir, so the
tiny default exercises the same code path as PaliGemma-3B or any other image-text-to-text model.
Its weights start random (seeded); Stage 0 pretrains it by SFT on scripted demonstrations.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import torch

TINY_ID = "vlaloop/tiny-paligemma-v1"  # backbone_id recorded in checkpoints; bump when the recipe changes
COMPLETE_MARKER = ".vlaloop-complete"

IMAGE_SIZE = 96
PATCH_SIZE = 16
HIDDEN = 128
INTERMEDIATE = 256
LAYERS = 2
HEADS = 4

COLORS = ["red", "green", "blue", "yellow"]
DIRECTIONS = ["left", "right", "forward", "backward"]


def task_corpus() -> list[str]:
    """Instructions of the mock tasks (and close variants) that the BPE tokenizer is trained on."""
    lines = []
    for c in COLORS:
        lines += [f"reach the {c} block", f"pick up the {c} block and put it in the bowl",
                  f"move to the {c} block", f"grasp the {c} block", f"put the {c} block in the bowl"]
        for d in DIRECTIONS:
            lines.append(f"push the {c} block to the {d}")
            lines.append(f"move the {c} block {d}")
        for c2 in COLORS:
            if c2 != c:
                lines.append(f"stack the {c} block on the {c2} block")
    lines += ["open the gripper", "close the gripper", "go home", "stop", "lift the block", "place it on the table"]
    return lines


def _train_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    # Byte-level: any instruction an operator types still tokenizes (falls back to bytes).
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<pad>", "<eos>", "<bos>", "<unk>", "<image>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(task_corpus() * 4, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>", padding_side="right")


def build_tiny(seed: int = 0):
    """Build (model, processor) in memory from configs. Same seed -> same weights and tokenizer."""
    from transformers import (
        GemmaConfig,
        PaliGemmaConfig,
        PaliGemmaForConditionalGeneration,
        PaliGemmaProcessor,
        SiglipVisionConfig,
    )
    from transformers.models.siglip.image_processing_pil_siglip import SiglipImageProcessorPil

    image_processor = SiglipImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE},
                                              image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5],
                                              resample=2)  # bilinear
    image_processor.image_seq_length = (IMAGE_SIZE // PATCH_SIZE) ** 2
    # The PaliGemma processor adds <image> and its 1152 <locXXXX>/<segXXX> tokens to the tokenizer.
    processor = PaliGemmaProcessor(image_processor=image_processor, tokenizer=_train_tokenizer())
    tokenizer = processor.tokenizer
    vision = SiglipVisionConfig(hidden_size=HIDDEN, intermediate_size=INTERMEDIATE, num_hidden_layers=LAYERS,
                                num_attention_heads=HEADS, image_size=IMAGE_SIZE, patch_size=PATCH_SIZE)
    text = GemmaConfig(vocab_size=len(tokenizer), hidden_size=HIDDEN, intermediate_size=INTERMEDIATE,
                       num_hidden_layers=LAYERS, num_attention_heads=HEADS, num_key_value_heads=1,
                       head_dim=HIDDEN // HEADS, max_position_embeddings=512,
                       pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                       eos_token_id=tokenizer.eos_token_id)
    config = PaliGemmaConfig(vision_config=vision, text_config=text, image_token_id=processor.image_token_id,
                             projection_dim=HIDDEN)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = PaliGemmaForConditionalGeneration(config)
    model.eval()
    return model, processor


def default_tiny_dir(seed: int = 0) -> Path:
    root = os.environ.get("VLALOOP_TINY_DIR")
    base = Path(root) if root else Path.home() / ".cache" / "vlaloop"
    return base / f"{TINY_ID.split('/')[-1]}-seed{seed}"


def is_complete(path: str | os.PathLike) -> bool:
    return (Path(path) / COMPLETE_MARKER).exists()


def ensure_tiny_backbone(path: str | os.PathLike | None = None, seed: int = 0) -> Path:
    """Build the tiny backbone into `path` once and return it; later calls return at once.

    Atomic: built in a temp dir next to `path`, marked complete, then renamed into place, so a crash
    never leaves a half-written model dir behind and concurrent builders don't clobber each other."""
    target = Path(path) if path is not None else default_tiny_dir(seed)
    if is_complete(target):
        return target
    if target.exists():  # an incomplete dir left by someone else: not ours to trust
        raise RuntimeError(f"{target} exists but is not a complete tiny backbone; remove it")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        from vla.backbone import quiet_transformers

        with quiet_transformers():
            model, processor = build_tiny(seed)
            model.save_pretrained(tmp)
            processor.save_pretrained(tmp)
        (tmp / COMPLETE_MARKER).write_text(f"{TINY_ID} seed={seed}\n")
        try:
            os.rename(tmp, target)
        except OSError:
            if not is_complete(target):  # lost a race to a builder that then failed: report it
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target
