"""Load any Hugging Face image-text-to-text model dir and turn observations into its inputs.

Features are the backbone's last hidden states over all tokens (image tokens + prompt tokens).

Preprocessing (identical in server and learner, so PPO log-probs recomputed by the learner match
the server's):
* every camera image is resized to `image_size` x `image_size` with PIL bilinear (deterministic);
* the prompt is built the family's way: with the processor's chat template when it has one (one
  image entry per camera, then the instruction), else the processor's image token once per camera
  + the instruction (PaliGemma: 256/36 image tokens per camera, <bos>, instruction, "\\n"). Each
  camera is its own image, so the family's start/end tokens keep them apart (Qwen2-VL's
  <|vision_start|><|image_pad|>...<|vision_end|>);
* images go to the family's image processor as one list per sample (cameras in the order of
  `cameras`), with image splitting (Idefics3/SmolVLM crops, Gemma3 pan-and-scan) off unless
  configured: split, one 96 px camera becomes 17 images of 364 px in Idefics3;
* every tensor the processor declares as a model input is passed on (pixel_values,
  image_grid_thw, pixel_attention_mask, token_type_ids, mm_token_type_ids, ...), not a fixed list;
* a batch is right-padded, so image tokens keep their positions whatever else is in the batch;
  padding is masked in attention and in the pooler.
Token ids are cached per instruction: instructions repeat every step.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import inspect
import json
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


def resolve_dtype(name: str, device: str) -> torch.dtype:
    """"auto": bfloat16 on a CUDA device that supports it (half the memory, tensor cores), else
    float32 (CPU bfloat16 matmuls are slow and imprecise)."""
    if name == "auto":
        cuda = str(device).startswith("cuda") and torch.cuda.is_available()
        return torch.bfloat16 if cuda and torch.cuda.is_bf16_supported() else torch.float32
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise ValueError(f"backbone_dtype must be auto, float32, bfloat16 or float16; got {name!r}")
    return dtype


def load_backbone(path: str | os.PathLike, trust_remote_code: bool = False, device: str = "cpu",
                  dtype: str = "auto"):
    """(model, processor) through the Auto classes -- the same path for the tiny default and a real model."""
    from transformers import AutoModelForImageTextToText

    from vla.device import require_device

    require_device(device)  # before the weights are read: a CPU-only torch and device cuda is one line
    with quiet_transformers():
        model = AutoModelForImageTextToText.from_pretrained(path, trust_remote_code=trust_remote_code,
                                                            dtype=resolve_dtype(dtype, device))
        processor = load_processor(path, trust_remote_code)
    model.to(device).eval()
    return model, processor


def load_processor(path: str | os.PathLike, trust_remote_code: bool = False):
    """AutoProcessor, or -- where it fails because the family's video processor needs torchvision
    (Qwen2-VL, SmolVLM) or the dir holds none -- the same processor class built from the dir's image
    processor, tokenizer, chat template and settings, without the video part."""
    from transformers import AutoProcessor
    from transformers.utils import is_torchvision_available

    try:
        return AutoProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
    except (ImportError, AttributeError, ValueError, TypeError, OSError) as e:
        cls = _processor_class(path)
        saved_video = (Path(path) / "video_preprocessor_config.json").is_file()
        if cls is None or "video_processor" not in cls.get_attributes() or (is_torchvision_available()
                                                                            and saved_video):
            raise
        return _image_only_processor(cls, path, trust_remote_code, e)


def _processor_class(path: str | os.PathLike):
    import transformers

    for name in ("processor_config.json", "preprocessor_config.json", "tokenizer_config.json"):
        file = Path(path) / name
        if file.is_file():
            cls_name = json.loads(file.read_text()).get("processor_class")
            if cls_name and hasattr(transformers, cls_name):
                return getattr(transformers, cls_name)
    return None


@functools.cache
def image_only_processor_class(cls):
    """`cls` (same name, so it saves as `cls`) without the video processor among its parts."""
    attributes = [a for a in cls.get_attributes() if a != "video_processor"]
    return type(cls.__name__, (cls,), {"get_attributes": classmethod(lambda _: list(attributes)),
                                       "__module__": cls.__module__})


def _image_only_processor(cls, path, trust_remote_code: bool, cause: Exception):
    from transformers import AutoImageProcessor, AutoTokenizer

    try:
        image_processor = AutoImageProcessor.from_pretrained(path, trust_remote_code=trust_remote_code)
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    except Exception as e:
        raise RuntimeError(f"{path}: cannot load the processor ({cause}); nor its image processor and "
                           f"tokenizer alone ({e})") from e
    accepted = inspect.signature(cls.__init__).parameters
    config_file = Path(path) / "processor_config.json"
    saved = json.loads(config_file.read_text()) if config_file.is_file() else {}
    settings = {k: v for k, v in saved.items() if k in accepted and k not in cls.get_attributes()}
    template = _chat_template(Path(path))
    if template is not None and "chat_template" in accepted:
        settings["chat_template"] = template
    processor = image_only_processor_class(cls)(image_processor=image_processor, tokenizer=tokenizer,
                                                video_processor=None, **settings)
    processor.video_processor = None
    return processor


def _chat_template(path: Path) -> str | None:
    if (path / "chat_template.jinja").is_file():
        return (path / "chat_template.jinja").read_text()
    if (path / "chat_template.json").is_file():
        return json.loads((path / "chat_template.json").read_text()).get("chat_template")
    return None


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


SPLITTING_OPTIONS = ("do_image_splitting", "do_pan_and_scan")  # Idefics3/SmolVLM crops, Gemma3 pan-and-scan


class Preprocessor:
    """Observations (images per camera + instruction) -> backbone input tensors, batched."""

    def __init__(self, processor, cameras: list[str], image_size: int, image_splitting: bool = False):
        self.processor = processor
        self.cameras = list(cameras)
        self.image_size = image_size
        self.pad_id = processor.tokenizer.pad_token_id or 0
        image_processor = processor.image_processor
        self.image_kwargs = {k: image_splitting for k in SPLITTING_OPTIONS if hasattr(image_processor, k)}
        declared = list(getattr(processor, "model_input_names", None) or [])
        image_names = set(getattr(image_processor, "model_input_names", None) or ["pixel_values"])
        self.input_names = declared  # empty = keep whatever the processor returns
        self.image_names = image_names
        self._text_cache: dict[str, dict[str, torch.Tensor]] = {}
        self._lock = threading.Lock()

    def prompt(self, instruction: str) -> str:
        """The text the processor expands: one image per camera, then the instruction."""
        n = len(self.cameras)
        if getattr(self.processor, "chat_template", None):
            content = [{"type": "image"}] * n + [{"type": "text", "text": instruction}]
            render = self.processor.apply_chat_template
            if getattr(self.processor, "video_processor", False) is None:
                # Built without its video processor (no torchvision): SmolVLM's own override reads
                # video settings even for images; the generic renderer does not.
                from transformers.processing_utils import ProcessorMixin

                render = functools.partial(ProcessorMixin.apply_chat_template, self.processor)
            return render([{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False)
        token = getattr(self.processor, "image_token", None) or ""
        start, end = self._image_delimiters()
        return f"{start}{token}{end}" * n + instruction

    def _image_delimiters(self) -> tuple[str, str]:
        """Start/end tokens around each image for families whose image runs must not touch."""
        vocab = self.processor.tokenizer.get_vocab()
        if "<|vision_start|>" in vocab and "<|vision_end|>" in vocab:
            return "<|vision_start|>", "<|vision_end|>"
        return "", ""

    def _keep(self, key: str) -> bool:
        if key == "labels":  # a training target some processors return, not an input
            return False
        return not self.input_names or key in self.input_names

    def text_inputs(self, instruction: str) -> dict[str, torch.Tensor]:
        """The sequence tensors of one sample (input_ids, attention_mask, token type ids, ...)."""
        with self._lock:
            cached = self._text_cache.get(instruction)
        if cached is not None:
            return cached
        blank = np.zeros((self.image_size, self.image_size, 3), np.uint8)
        enc = self.processor(images=[[blank] * len(self.cameras)], text=[self.prompt(instruction)],
                             return_tensors="pt", **self.image_kwargs)
        length = enc["input_ids"].shape
        out = {k: v[0] for k, v in enc.items() if k not in self.image_names and self._keep(k)
               and isinstance(v, torch.Tensor) and v.shape == length}
        with self._lock:
            if len(self._text_cache) > 4096:  # unbounded operator text must not grow memory forever
                self._text_cache.clear()
            self._text_cache[instruction] = out
        return out

    def images(self, images: list[dict[str, np.ndarray]]) -> dict[str, torch.Tensor]:
        """The image processor's tensors for a batch: one list of camera images per sample."""
        missing = [c for c in self.cameras if any(c not in im for im in images)]
        if missing:
            raise ValueError(f"observation lacks camera(s) {sorted(set(missing))}; expected {self.cameras}")
        nested = [[resize_image(im[c], self.image_size) for c in self.cameras] for im in images]
        out = self.processor.image_processor(images=nested, return_tensors="pt", **self.image_kwargs)
        return {k: v for k, v in out.items() if self._keep(k) and isinstance(v, torch.Tensor)}

    def __call__(self, images: list[dict[str, np.ndarray]], instructions: list[str]) -> dict[str, torch.Tensor]:
        if len(images) != len(instructions):
            raise ValueError(f"{len(images)} image sets for {len(instructions)} instructions")
        texts = [self.text_inputs(s) for s in instructions]
        length = max(t["input_ids"].shape[0] for t in texts)
        batch: dict[str, torch.Tensor] = {}
        for key in texts[0]:
            fill = self.pad_id if key == "input_ids" else 0
            rows = [torch.nn.functional.pad(t[key], (0, length - t[key].shape[0]), value=fill) for t in texts]
            batch[key] = torch.stack(rows)
        batch.update(self.images(images))
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
