"""Load any Hugging Face image-text-to-text model dir and turn observations into its inputs.

Features are the backbone's last hidden states over all tokens (image tokens + prompt tokens).

Preprocessing (identical in server and learner, so PPO log-probs recomputed by the learner match
the server's):
* every camera image is resized to `image_size` x `image_size` with PIL bilinear (deterministic);
* pixel values come from the model's own image processor, cameras in the order of `cameras`;
* the prompt is `<image>` once per camera + the instruction; the model's processor builds the token
  ids (PaliGemma: 36 image tokens per camera, <bos>, instruction, "\\n"). Several cameras therefore
  take the model's standard multi-image path: the vision tower runs once per camera and the image
  tokens of all cameras are concatenated in front of the prompt.
* a batch is right-padded, so image tokens keep their positions whatever else is in the batch;
  padding is masked in attention and in the pooler.
Token ids are cached per (instruction, number of cameras): instructions repeat every step.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from pathlib import Path

import numpy as np
import torch
from PIL import Image

WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_FULL_HASH_LIMIT = 256 * 2**20  # files above this are hashed by size + 64 sampled 1 MiB blocks
_hash_cache: dict[tuple, str] = {}
_hash_lock = threading.Lock()


def backbone_hash(path: str | os.PathLike) -> str:
    """Fast content hash of a model dir's weight files and config (cached per process).

    Small files are hashed whole; large ones by size plus 64 evenly spaced 1 MiB blocks, which
    tells apart different checkpoints of one architecture without reading 15 GB."""
    root = Path(path).resolve()
    files = sorted(p for p in root.iterdir()
                   if p.is_file() and (p.suffix in WEIGHT_SUFFIXES or p.name == "config.json"))
    if not any(p.suffix in WEIGHT_SUFFIXES for p in files):
        raise FileNotFoundError(f"{root}: no weight files ({', '.join(WEIGHT_SUFFIXES)})")
    key = (str(root),) + tuple((p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in files)
    with _hash_lock:
        if key in _hash_cache:
            return _hash_cache[key]
    h = hashlib.blake2b(digest_size=16)
    for p in files:
        size = p.stat().st_size
        h.update(f"{p.name}\0{size}\0".encode())
        with open(p, "rb") as f:
            if size <= _FULL_HASH_LIMIT:
                for block in iter(lambda: f.read(2**20), b""):  # noqa: B023 - f is the loop's file
                    h.update(block)
            else:
                for i in range(64):
                    f.seek((size - 2**20) * i // 63)
                    h.update(f.read(2**20))
    digest = "b2-" + h.hexdigest()
    with _hash_lock:
        _hash_cache[key] = digest
    return digest


@contextlib.contextmanager
def quiet_transformers():
    """No progress bars / info chatter from transformers in server and learner logs."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()


def load_backbone(path: str | os.PathLike, trust_remote_code: bool = False, device: str = "cpu",
                  dtype: str = "float32"):
    """(model, processor) through the Auto classes -- the same path for the tiny default and a real model."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    with quiet_transformers():
        model = AutoModelForImageTextToText.from_pretrained(path, trust_remote_code=trust_remote_code,
                                                            dtype=getattr(torch, dtype))
        processor = AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    model.to(device).eval()
    return model, processor


def hidden_size(model) -> int:
    text = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    return int(text.hidden_size)


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 HxWx3 RGB -> uint8 size x size x 3 (PIL bilinear; deterministic on every machine)."""
    arr = np.asarray(image)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise ValueError(f"expected an HxWx3 RGB image, got shape {arr.shape}")
    if arr.dtype != np.uint8:
        raise ValueError(f"expected uint8 pixels, got {arr.dtype}")
    if arr.shape[0] == size and arr.shape[1] == size:
        return arr
    return np.asarray(Image.fromarray(arr).resize((size, size), Image.BILINEAR))


class Preprocessor:
    """Observations (images per camera + instruction) -> backbone input tensors, batched."""

    def __init__(self, processor, cameras: list[str], image_size: int):
        self.processor = processor
        self.cameras = list(cameras)
        self.image_size = image_size
        self.pad_id = processor.tokenizer.pad_token_id or 0
        self._image_token = getattr(processor, "image_token", None)
        self._text_cache: dict[str, dict[str, torch.Tensor]] = {}
        self._lock = threading.Lock()

    def _text(self, instruction: str) -> dict[str, torch.Tensor]:
        with self._lock:
            cached = self._text_cache.get(instruction)
        if cached is not None:
            return cached
        n = len(self.cameras)
        blank = np.zeros((self.image_size, self.image_size, 3), np.uint8)
        prompt = (self._image_token * n if self._image_token else "") + instruction
        enc = self.processor(images=[[blank] * n], text=[prompt], return_tensors="pt")
        out = {k: enc[k][0] for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
        with self._lock:
            if len(self._text_cache) > 4096:  # unbounded operator text must not grow memory forever
                self._text_cache.clear()
            self._text_cache[instruction] = out
        return out

    def pixels(self, images: list[dict[str, np.ndarray]]) -> torch.Tensor:
        missing = [c for c in self.cameras if any(c not in im for im in images)]
        if missing:
            raise ValueError(f"observation lacks camera(s) {sorted(set(missing))}; expected {self.cameras}")
        flat = [resize_image(im[c], self.image_size) for im in images for c in self.cameras]
        return self.processor.image_processor(images=flat, return_tensors="pt")["pixel_values"]

    def __call__(self, images: list[dict[str, np.ndarray]], instructions: list[str]) -> dict[str, torch.Tensor]:
        if len(images) != len(instructions):
            raise ValueError(f"{len(images)} image sets for {len(instructions)} instructions")
        texts = [self._text(s) for s in instructions]
        length = max(t["input_ids"].shape[0] for t in texts)
        batch: dict[str, torch.Tensor] = {}
        for key in texts[0]:
            fill = self.pad_id if key == "input_ids" else 0
            rows = [torch.nn.functional.pad(t[key], (0, length - t[key].shape[0]), value=fill) for t in texts]
            batch[key] = torch.stack(rows)
        batch["pixel_values"] = self.pixels(images)
        return batch


def last_hidden_states(model, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """[B, T, hidden] from the backbone's base model (skips the LM head when the model exposes it)."""
    base = getattr(model, "model", None)
    if base is not None and callable(base):
        out = base(**inputs, use_cache=False, return_dict=True)
        hidden = getattr(out, "last_hidden_state", None)
        if hidden is not None:
            return hidden
    out = model(**inputs, output_hidden_states=True, use_cache=False, return_dict=True)
    return out.hidden_states[-1]
