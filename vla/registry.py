"""Versioned checkpoint registry: `runs/<run>/checkpoints/`.

    checkpoints/
      LATEST                     "17\\n" -- replaced atomically, only ever names a complete version
      v000017/
        meta.json                version, kind, parent, base_version, backbone_id/_hash/_dir, created,
                                 phase, metrics, model_config, files{name: bytes, sha256}
        norm.json                action/state normalization (travels with every version)
        head.safetensors         action head + log-std + value + twin Q
        pooler.safetensors       (kind "full") attention pooler
        adapter/                 (kind "full", if LoRA) peft adapter_config.json + adapter_model.safetensors
        backbone/                (kind "full", if the backbone's own weights were trained, e.g. Stage 0)
                                 a save_pretrained model dir; meta.backbone_dir = "backbone"
      .tmp-v000018-<pid>-<rand>/ a publish in progress (ignored; removed once its writer is dead)
      PROMOTED                   "15\\n" -- the version the promotion gate serves to everyone (server)
      PINNED                     "12\\n" -- the operator's pin: served to all, gating paused (absent: none)
      refused/v000017.json       a version the gate rolled back (or a descendant of one): never served again
      canary.json                the running canary's tallies, so a server restart does not start it over

kind "full" carries the whole trainable trunk (pooler, adapter, maybe backbone); kind "head" carries
only head.safetensors + norm.json and names in `base_version` the full version its trunk comes from,
so an RL update publishes ~1 MB and a server holding the base loads it in milliseconds.

Publishing writes into the temp dir, fsyncs every file and the dir, renames it to v%06d, fsyncs
checkpoints/, then replaces LATEST (temp file + fsync + os.replace). A crash at any point leaves
LATEST on the previous complete version.

The learner writes the versions and LATEST; the server's promotion gate (server/promotion.py) writes
PROMOTED, PINNED, refused/ and canary.json, each atomically (temp file + fsync + rename + fsync of the
directory). LATEST stays "the newest the learner published" so the learner's resume rule is unaffected
by a refusal; `resume_version()` is where the learner continues from.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import stat
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from pydantic import ValidationError
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from deployment.model import ModelConfig
from episodes.durable import fsync_dir, fsync_path, write_atomic, write_json_atomic
from vla.backbone import backbone_hash, quiet_transformers
from vla.language import LanguageEncoderError, encoder_meta, load_language_encoder
from vla.normalization import Normalizer
from vla.tiny import TINY_ID, default_tiny_dir, ensure_tiny_backbone

if TYPE_CHECKING:
    from vla.model import VLAModel

VERSION_RE = re.compile(r"^v(\d{6})$")
REFUSED_RE = re.compile(r"^v(\d{6})\.json$")
PROMOTED_FILE, PINNED_FILE, REFUSED_DIR, CANARY_FILE = "PROMOTED", "PINNED", "refused", "canary.json"
TMP_PREFIX = ".tmp-"
POINTER_MAX_BYTES = 32
KINDS = ("full", "head")
META_FIELDS = ("version", "kind", "parent", "base_version", "backbone_id", "backbone_hash", "created",
               "phase", "metrics", "model_config", "files")


class CheckpointError(RuntimeError):
    """A version is missing, incomplete, corrupt or does not fit the model."""


def vname(version: int) -> str:
    return f"v{version:06d}"


# meta.json field -> the types it may have; anything else is refused before it is used.
META_TYPES: dict[str, tuple[type, ...]] = {
    "base_version": (int, type(None)), "parent": (int, type(None)), "backbone_id": (str,),
    "backbone_hash": (str,), "backbone_dir": (str,), "model_config": (dict,), "files": (dict,)}


def check_meta_types(meta: dict) -> None:
    """Every field the loader reads has the type the learner writes (a hand-edited or hostile
    meta.json gets a one-line refusal, not a TypeError deep in the loader)."""
    where = f"checkpoint {vname(meta['version'])}: meta.json"
    for field, types in META_TYPES.items():
        value = meta.get(field)
        if field in meta and (not isinstance(value, types) or isinstance(value, bool)):
            raise CheckpointError(f"{where} {field} has type {type(value).__name__}")
    for name, info in meta["files"].items():
        ok = (isinstance(info, dict) and isinstance(info.get("bytes"), int)
              and isinstance(info.get("sha256"), str))
        if not ok:
            raise CheckpointError(f"{where} files[{name!r}] is not {{bytes, sha256}}")




def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(2**20), b""):  # noqa: B023
            h.update(block)
    return h.hexdigest()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class CheckpointRegistry:
    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)
        # small files the server polls (PROMOTED, PINNED, canary.json): path -> (stat key, value).
        # Every writer replaces a file by rename, so a new inode or mtime means new content; an
        # unchanged file costs one stat per poll instead of an open, a read and a parse.
        self._small_files: dict[str, tuple[tuple, object]] = {}

    def _read_cached(self, name: str, parse):
        """``parse(path)`` of root/name, re-run only when the file's inode, size or mtime changed.
        A missing file is not cached (parse decides what that means)."""
        path = self.root / name
        try:
            st = os.stat(path)
        except FileNotFoundError:
            self._small_files.pop(name, None)
            return parse(path)
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        hit = self._small_files.get(name)
        if hit is not None and hit[0] == key:
            return hit[1]
        value = parse(path)
        self._small_files[name] = (key, value)
        return value

    def path(self, version: int) -> Path:
        return self.root / vname(version)

    def versions(self) -> list[int]:
        """Complete versions (a dir v%06d with meta.json), ascending. Temp dirs are not versions."""
        if not self.root.is_dir():
            return []
        found = []
        for p in self.root.iterdir():
            m = VERSION_RE.match(p.name)
            if m and (p / "meta.json").is_file():
                found.append(int(m.group(1)))
        return sorted(found)

    def latest(self) -> int | None:
        return self._parse_pointer(self.root / "LATEST")

    def read_meta(self, version: int) -> dict:
        path = self.path(version) / "meta.json"
        try:
            meta = json.loads(path.read_text())
        except FileNotFoundError:
            raise CheckpointError(f"checkpoint {vname(version)}: no such version ({path} missing)") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise CheckpointError(f"checkpoint {vname(version)}: meta.json is not valid JSON ({e})") from None
        if not isinstance(meta, dict):
            raise CheckpointError(f"checkpoint {vname(version)}: meta.json is not an object")
        missing = [k for k in META_FIELDS if k not in meta]
        if missing:
            raise CheckpointError(f"checkpoint {vname(version)}: meta.json lacks {missing}")
        if meta["version"] != version or meta["kind"] not in KINDS:
            raise CheckpointError(f"checkpoint {vname(version)}: meta.json says version {meta['version']}, "
                                  f"kind {meta['kind']!r}")
        check_meta_types(meta)
        return meta

    def clean_stale_temp(self, max_age_s: float = 6 * 3600) -> list[Path]:
        """Remove temp dirs/files of publishers that are no longer running (a crash mid-publish), or
        older than `max_age_s` (a pid reused in another container's namespace looks alive)."""
        removed = []
        if not self.root.is_dir():
            return removed
        for p in self.root.iterdir():
            if not p.name.startswith(TMP_PREFIX):
                continue
            parts = p.name.split("-")
            pid = int(parts[2]) if len(parts) > 3 and parts[2].isdigit() else None
            try:
                old = time.time() - p.stat().st_mtime > max_age_s
            except FileNotFoundError:
                continue
            if pid is None or old or (pid != os.getpid() and not _pid_alive(pid)):
                if p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    p.unlink(missing_ok=True)
                removed.append(p)
        return removed

    def _write_latest(self, version: int) -> None:
        self._write_pointer("LATEST", version)

    def _write_pointer(self, name: str, version: int | None) -> None:
        """Replace (or, for None, remove) a one-number file atomically and durably."""
        if version is None:
            (self.root / name).unlink(missing_ok=True)
            fsync_dir(self.root)
        else:
            write_atomic(self.root / name, f"{version}\n".encode())

    def _read_pointer(self, name: str) -> int | None:
        return self._read_cached(name, self._parse_pointer)

    @staticmethod
    def _parse_pointer(path: Path) -> int | None:
        """A one-number file (LATEST, PROMOTED, PINNED). Only a plain file is read, and only its first
        bytes: a pointer symlinked to some other file must not copy that file into the log."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        if not stat.S_ISREG(st.st_mode):
            raise CheckpointError(f"{path}: not a plain file (a symlink?); refusing to follow it")
        try:
            with open(path, "rb") as f:
                raw = f.read(POINTER_MAX_BYTES + 1)
        except FileNotFoundError:
            return None
        text = raw.decode("ascii", "replace").strip()
        if len(raw) > POINTER_MAX_BYTES or not text.isdigit() or not text.isascii():
            raise CheckpointError(f"{path}: not a version number ({st.st_size} bytes)")
        return int(text)

    # ---- promotion markers (written by the server's promotion gate)

    def promoted(self) -> int | None:
        """The version the promotion gate serves to everyone (None: nothing promoted yet)."""
        return self._read_pointer(PROMOTED_FILE)

    def set_promoted(self, version: int) -> None:
        self._write_pointer(PROMOTED_FILE, version)

    def pinned(self) -> int | None:
        """The version the operator pinned (None: no pin)."""
        return self._read_pointer(PINNED_FILE)

    def set_pinned(self, version: int | None) -> None:
        self._write_pointer(PINNED_FILE, version)

    def refused(self) -> dict[int, dict]:
        """Refused versions and why: {version: {"reason": ..., "at": ..., ...}}."""
        out: dict[int, dict] = {}
        directory = self.root / REFUSED_DIR
        if not directory.is_dir():
            return out
        for p in directory.iterdir():
            m = REFUSED_RE.match(p.name)
            if not m:
                continue
            try:
                out[int(m.group(1))] = json.loads(p.read_text())
            except (OSError, ValueError):
                out[int(m.group(1))] = {"reason": "refused (marker unreadable)"}
        return out

    def is_refused(self, version: int) -> bool:
        return (self.root / REFUSED_DIR / f"{vname(version)}.json").is_file()

    def mark_refused(self, version: int, reason: str, **detail) -> None:
        """Mark a version refused, durably; it is never served again. Idempotent."""
        directory = self.root / REFUSED_DIR
        if not directory.is_dir():
            directory.mkdir(exist_ok=True)
            fsync_dir(self.root)
        record = {"version": version, "reason": reason, "at": time.time(), **detail}
        write_json_atomic(directory / f"{vname(version)}.json", record)

    def read_canary(self) -> dict | None:
        """The running canary's saved tallies (None: none saved, or unreadable)."""
        data = self._read_cached(CANARY_FILE, self._parse_canary)
        return dict(data) if isinstance(data, dict) else None

    @staticmethod
    def _parse_canary(path: Path) -> dict | None:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return None
        return data if isinstance(data, dict) else None

    def write_canary(self, data: dict | None) -> None:
        path = self.root / CANARY_FILE
        if data is None:
            path.unlink(missing_ok=True)
            fsync_dir(self.root)
        else:
            write_json_atomic(path, data)

    def refused_ancestor(self, version: int) -> int | None:
        """The first refused version on `version`'s parent chain (itself included), or None. The
        walk stops at the promoted version (everything it descends from was accepted)."""
        refused, stop = set(self.refused()), self.promoted()
        seen: set[int] = set()
        current: int | None = version
        while current is not None and current not in seen:
            if current in refused:
                return current
            if current == stop:
                return None
            seen.add(current)
            try:
                current = self.read_meta(current).get("parent")
            except CheckpointError:
                return None
        return None

    def resume_version(self) -> int | None:
        """Where a learner continues from: LATEST, unless LATEST is refused or descends from a
        refused version; then the promoted version (or, before any promotion, the newest version
        not descending from a refused one)."""
        latest = self.latest()
        if latest is None or self.refused_ancestor(latest) is None:
            return latest
        promoted = self.promoted()
        if promoted is not None:
            return promoted
        for v in reversed(self.versions()):
            if self.refused_ancestor(v) is None:
                return v
        return None


# ---- publish -------------------------------------------------------------------------------

def _check_finite(state: dict[str, torch.Tensor], what: str) -> None:
    for name, t in state.items():
        if not torch.isfinite(t).all():
            raise CheckpointError(f"refusing to publish: {what} tensor {name!r} is not finite")


def _save_tensors(state: dict[str, torch.Tensor], path: Path) -> None:
    save_file({k: v.detach().cpu().contiguous() for k, v in state.items()}, str(path))


def publish(registry: CheckpointRegistry, model: VLAModel, norm: Normalizer, kind: str = "full",
            parent: int | None = None, phase: str = "", metrics: dict | None = None,
            save_backbone: bool | None = None, run_time: dict | None = None) -> int:
    """Publish `model` as the next version and point LATEST at it; returns the version number.

    kind "full": pooler + adapter (if LoRA) + heads; the backbone itself is saved into the version
    (`backbone/`) when it was trained (full mode, e.g. Stage 0) or `save_backbone=True`.
    kind "head": heads only; the model's trunk must be unchanged since the full version it came from.
    `run_time`: extra meta.json keys the serving side must honour (e.g. ``advantage_conditioning``,
    vla/advantage.py); they may not shadow the registry's own fields."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")
    clash = set(run_time or {}) & {*META_FIELDS, "backbone_dir"}
    if clash:
        raise ValueError(f"run_time keys {sorted(clash)} would overwrite the registry's own meta fields")
    if norm.action_dim != model.config.action_dim or norm.state_dim != model.config.state_dim:
        raise ValueError("normalizer dims do not match the model")
    heads = model.heads.state_dict()
    _check_finite(heads, "head")
    root = registry.root
    root.mkdir(parents=True, exist_ok=True)
    registry.clean_stale_temp()
    version = max(registry.versions(), default=0) + 1
    tmp = root / f"{TMP_PREFIX}{vname(version)}-{os.getpid()}-{os.urandom(4).hex()}"
    tmp.mkdir()
    try:
        meta = _write_version(tmp, model, norm, kind, heads, registry, save_backbone)
        meta.update(run_time or {})
        meta.update(version=version, kind=kind, parent=parent, phase=phase, metrics=metrics or {},
                    created=datetime.now(timezone.utc).isoformat(timespec="milliseconds"))
        if kind == "full":
            meta["base_version"] = version
        meta["backbone_dir"] = _portable_backbone_dir(meta["backbone_dir"], registry, version)
        (tmp / "meta.json").write_text(json.dumps(meta, indent=1, sort_keys=True))
        for p in sorted(tmp.rglob("*"), key=lambda q: -len(q.parts)):  # files first, then their dirs
            fsync_path(p)
        fsync_dir(tmp)
        os.rename(tmp, registry.path(version))  # fails if the version exists: never overwrite one
        fsync_dir(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    registry._write_latest(version)
    if kind == "full":
        model.trunk_version = version
        model.trunk_registry = str(root.resolve())
        model.trunk_fingerprint = model.compute_trunk_fingerprint()
        if meta["backbone_dir"] == "backbone":
            model.backbone_dir = str(registry.path(version) / "backbone")
            model.backbone_hash = meta["backbone_hash"]
            model.saved_backbone_fingerprint = model.backbone_fingerprint()
    return version


def _portable_backbone_dir(backbone_dir: str, registry: CheckpointRegistry, version: int) -> str:
    """A backbone inside the run dir (runs/<run>/tiny_backbone, an earlier version's backbone/) is
    recorded relative to the version dir, so the run dir can be mounted elsewhere (docker volumes)."""
    path = Path(backbone_dir)
    run_dir = registry.root.resolve().parent
    if path.is_absolute() and path.resolve().is_relative_to(run_dir):
        return os.path.relpath(path.resolve(), registry.root.resolve() / vname(version))
    return backbone_dir


def _write_version(tmp: Path, model: VLAModel, norm: Normalizer, kind: str, heads: dict,
                   registry: CheckpointRegistry, save_backbone: bool | None) -> dict:
    meta: dict = {"backbone_id": model.backbone_id, "backbone_hash": model.backbone_hash,
                  "backbone_dir": str(Path(model.backbone_dir).resolve()),
                  "model_config": model.config.model_dump(mode="json"),
                  "spec": {"feature_dim": model.feature_dim}}
    meta["language_encoder"] = encoder_meta(model.language)
    if kind == "head":
        if model.trunk_version is None or model.trunk_registry != str(registry.root.resolve()):
            raise CheckpointError("refusing to publish a head-only version: the model's trunk was never "
                                  "published or loaded from this registry (publish kind='full' first)")
        if model.backbone_modified() or model.compute_trunk_fingerprint() != model.trunk_fingerprint:
            raise CheckpointError(f"refusing to publish a head-only version: backbone/adapter/pooler changed "
                                  f"since {vname(model.trunk_version)}; publish kind='full'")
        meta["base_version"] = model.trunk_version
    else:
        pooler = model.pooler.state_dict()
        adapter = model.adapter_state_dict()
        _check_finite(pooler, "pooler")
        _check_finite(adapter, "adapter")
        _save_tensors(pooler, tmp / "pooler.safetensors")
        if model.has_lora:
            (tmp / "adapter").mkdir()
            model.lora_config.save_pretrained(str(tmp / "adapter"))
            _save_tensors(adapter, tmp / "adapter" / "adapter_model.safetensors")
        if save_backbone or (save_backbone is None and model.backbone_modified()):
            if model.has_lora:
                raise CheckpointError("refusing to save a trained backbone that also carries LoRA adapters; "
                                      "train the backbone in full mode before adding adapters")
            _check_finite(model.backbone.state_dict(), "backbone")
            with quiet_transformers():
                model.backbone.save_pretrained(tmp / "backbone")
                model.preprocessor.processor.save_pretrained(tmp / "backbone")
            meta["backbone_hash"] = backbone_hash(tmp / "backbone")
            meta["backbone_dir"] = "backbone"
    _save_tensors(heads, tmp / "head.safetensors")
    (tmp / "norm.json").write_text(norm.to_json())
    meta["files"] = {str(p.relative_to(tmp)): {"bytes": p.stat().st_size, "sha256": _sha256(p)}
                     for p in sorted(tmp.rglob("*")) if p.is_file() and p.parts[len(tmp.parts)] != "backbone"}
    return meta


# ---- load ----------------------------------------------------------------------------------

def _read_tensors(registry: CheckpointRegistry, meta: dict, name: str,
                  expected: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Load one safetensors file of a version and check it against the model's own state dict."""
    where = f"checkpoint {vname(meta['version'])}: {name}"
    path = registry.path(meta["version"]) / name
    published = meta["files"].get(name, {}).get("bytes")
    if not path.is_file():
        raise CheckpointError(f"{where} is missing")
    try:
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as e:
        size = path.stat().st_size
        hint = f"file has {size} bytes, published {published}" if published is not None else f"{size} bytes"
        cause = "truncated" if published is not None and size < published else "corrupt"
        raise CheckpointError(f"{where} is unreadable ({cause}: {hint}; {e})") from None
    for key, t in state.items():
        if not torch.isfinite(t).all():
            raise CheckpointError(f"{where}: tensor {key!r} contains NaN/inf")
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(f"{where}: tensors do not match the model (missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]})")
    for key, t in state.items():
        if tuple(t.shape) != tuple(expected[key].shape):
            raise CheckpointError(f"{where}: tensor {key!r} has shape {tuple(t.shape)}, the model expects "
                                  f"{tuple(expected[key].shape)}")
    _check_checksum(registry, meta, name)
    return state


def _check_checksum(registry: CheckpointRegistry, meta: dict, name: str) -> None:
    where = f"checkpoint {vname(meta['version'])}: {name}"
    info = meta["files"].get(name)
    if info is None:
        raise CheckpointError(f"{where} is not listed in meta.json")
    path = registry.path(meta["version"]) / name
    if not path.is_file():
        raise CheckpointError(f"{where} is missing")
    size = path.stat().st_size
    if size != info["bytes"]:
        raise CheckpointError(f"{where} has {size} bytes, published {info['bytes']} (truncated or replaced)")
    if _sha256(path) != info["sha256"]:
        raise CheckpointError(f"{where}: checksum differs from the published one (corrupt)")


def read_norm(registry: CheckpointRegistry, meta: dict) -> Normalizer:
    _check_checksum(registry, meta, "norm.json")
    try:
        return Normalizer.from_json((registry.path(meta["version"]) / "norm.json").read_text())
    except ValueError as e:
        raise CheckpointError(f"checkpoint {vname(meta['version'])}: norm.json invalid ({e})") from None


def trunk_meta(registry: CheckpointRegistry, meta: dict) -> dict:
    """meta of the full version that supplies backbone/adapter/pooler for `meta`."""
    if meta["kind"] == "full":
        return meta
    base = registry.read_meta(meta["base_version"])
    if base["kind"] != "full":
        raise CheckpointError(f"checkpoint {vname(meta['version'])}: base {vname(base['version'])} is not full")
    if base["backbone_hash"] != meta["backbone_hash"]:
        raise CheckpointError(f"checkpoint {vname(meta['version'])}: backbone hash {meta['backbone_hash']} "
                              f"differs from its base {vname(base['version'])} ({base['backbone_hash']})")
    return base


# ---- where a version's code and weights may come from ---------------------------------------
# Whoever can write one file under checkpoints/ must not be able to run code in the server or the
# learner. So a checkpoint's meta.json says *what* to build (dims, pooler, LoRA, seed) but never
# *where from* or *with which code*: those come from the loading process's own configuration.

# model_config fields the loading process decides (its own `model` section), never the checkpoint.
DEPLOYMENT_FIELDS = frozenset({"backbone_dir", "trust_remote_code", "tiny_cache_dir", "device"})
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".ckpt")


@dataclass(frozen=True)
class TrustedSource:
    """What the deployment itself trusts: remote code on or off, the configured model dir, where
    the embedded tiny backbone is kept. Built from the server's/learner's own ``model`` config."""
    trust_remote_code: bool = False
    model_dir: str | None = None
    tiny_cache_dir: str | None = None

    @classmethod
    def of(cls, config: ModelConfig | None) -> TrustedSource:
        if config is None:
            return cls()
        return cls(config.trust_remote_code, config.backbone_dir, config.tiny_cache_dir)

    def tiny_dir(self, seed: int) -> Path:
        return Path(self.tiny_cache_dir) if self.tiny_cache_dir else default_tiny_dir(seed)

    def backbone_roots(self, registry: CheckpointRegistry, seed: int) -> list[Path]:
        """Directories a backbone may be loaded from (resolved): the registry and the configured dirs."""
        roots = [registry.root, self.tiny_dir(seed)] + ([Path(self.model_dir)] if self.model_dir else [])
        return [r.resolve() for r in roots]


def serving_config(trunk: dict, trusted: TrustedSource, device: str) -> ModelConfig:
    """The ModelConfig to build a version with: its architecture from the checkpoint, every field of
    DEPLOYMENT_FIELDS from the loading process's own configuration."""
    where = f"checkpoint {vname(trunk['version'])}"
    saved = trunk["model_config"]
    if not isinstance(saved, dict):
        raise CheckpointError(f"{where}: meta.json model_config is not an object")
    architecture = {k: v for k, v in saved.items() if k not in DEPLOYMENT_FIELDS}
    try:
        return ModelConfig.model_validate({**architecture, "device": device,
                                           "trust_remote_code": trusted.trust_remote_code,
                                           "backbone_dir": trusted.model_dir,
                                           "tiny_cache_dir": trusted.tiny_cache_dir})
    except ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        raise CheckpointError(f"{where}: meta.json model_config.{field}: {err['msg']}") from None


def resolve_backbone_dir(registry: CheckpointRegistry, trunk: dict, override: str | None = None,
                         trusted: TrustedSource | None = None, seed: int = 0) -> Path:
    """The backbone dir of a full version, resolved, and refused unless it lies inside the registry,
    the configured model dir or the tiny backbone's dir (or is the caller's explicit `override`).
    The embedded tiny backbone is rebuilt from its seed where this process keeps it when the
    recorded dir is elsewhere or gone (the hash check still guards the result)."""
    trusted = trusted or TrustedSource()
    where = f"checkpoint {vname(trunk['version'])}"
    raw = override or trunk["backbone_dir"]
    if not isinstance(raw, str) or not raw or "\0" in raw:
        raise CheckpointError(f"{where}: meta.json backbone_dir is not a path")
    path = (Path(raw) if Path(raw).is_absolute() else registry.path(trunk["version"]) / raw).resolve()
    roots = trusted.backbone_roots(registry, seed) + ([path] if override else [])
    trusted_place = any(path.is_relative_to(root) for root in roots)
    if override is None and trunk["backbone_id"] == TINY_ID and not (trusted_place and path.is_dir()):
        path, trusted_place = ensure_tiny_backbone(trusted.tiny_dir(seed), seed=seed).resolve(), True
    if not trusted_place:
        raise CheckpointError(f"{where}: backbone dir {raw!r} is outside the registry and the configured "
                              f"model dir (model.backbone_dir); refusing to load it")
    if not path.is_dir():
        raise CheckpointError(f"{where}: backbone dir {raw!r} does not exist")
    return path


def check_backbone_code(registry: CheckpointRegistry, path: Path, trusted: TrustedSource, where: str) -> None:
    """Before anything of a backbone is imported: a backbone inside the registry (written by a
    learner) carries no pickled weights, and code only where the deployment runs remote code and the
    code is byte-for-byte the configured model dir's. The configured model dir itself is the
    deployment's own choice."""
    model_dir = Path(trusted.model_dir).resolve() if trusted.model_dir else None
    if model_dir is not None and path.is_relative_to(model_dir):
        return
    if not path.is_relative_to(registry.root.resolve()):
        return  # the tiny backbone, built by this process from its seed
    files = [p for p in path.iterdir() if p.is_file()]
    pickled = sorted(p.name for p in files if p.suffix in PICKLE_SUFFIXES)
    if pickled:
        raise CheckpointError(f"{where}: the backbone in the registry carries pickled files {pickled[:3]}; "
                              f"only safetensors weights are loaded from a checkpoint")
    for code in sorted(p for p in files if p.suffix == ".py"):
        trusted_copy = model_dir / code.name if model_dir is not None else None
        if not (trusted.trust_remote_code and trusted_copy is not None and trusted_copy.is_file()
                and _sha256(trusted_copy) == _sha256(code)):
            raise CheckpointError(f"{where}: the backbone in the registry carries code ({code.name}) that is "
                                  f"not the configured model dir's; refusing to load it")


def _check_backbone_hash(meta: dict, actual: str, where: str) -> None:
    if actual != meta["backbone_hash"]:
        raise CheckpointError(f"checkpoint {vname(meta['version'])}: backbone hash mismatch: the version was "
                              f"trained on {meta['backbone_hash']}, {where} is {actual}")


def _load_trunk(model: VLAModel, registry: CheckpointRegistry, trunk: dict) -> None:
    from peft import LoraConfig, set_peft_model_state_dict

    version_dir = registry.path(trunk["version"])
    if "adapter/adapter_config.json" in trunk["files"]:
        _check_checksum(registry, trunk, "adapter/adapter_config.json")
        saved = LoraConfig.from_pretrained(str(version_dir / "adapter"))
        if not model.has_lora:
            model._inject_lora(saved)
        expected = model.adapter_state_dict()
        state = _read_tensors(registry, trunk, "adapter/adapter_model.safetensors", expected)
        set_peft_model_state_dict(model.backbone, state)
    elif model.has_lora:
        raise CheckpointError(f"checkpoint {vname(trunk['version'])} has no adapter but the model carries "
                              f"LoRA adapters; load it into a fresh model (load_model)")
    state = _read_tensors(registry, trunk, "pooler.safetensors", model.pooler.state_dict())
    model.pooler.load_state_dict(state)
    model.trunk_version = trunk["version"]
    model.trunk_registry = str(registry.root.resolve())
    model.trunk_fingerprint = model.compute_trunk_fingerprint()


def _load_heads(model: VLAModel, registry: CheckpointRegistry, meta: dict) -> None:
    state = _read_tensors(registry, meta, "head.safetensors", model.heads.state_dict())
    model.heads.load_state_dict(state)


def _resolve_version(registry: CheckpointRegistry, version: int | None) -> int:
    if version is None:
        version = registry.latest()
        if version is None:
            raise CheckpointError(f"{registry.root}: no published version (LATEST missing)")
    return version


def _recorded_language(trunk: dict) -> dict:
    """The language encoder a trunk was trained with; versions from before the setting existed
    were all trained with the bpe default."""
    recorded = trunk.get("language_encoder") or {"name": "bpe"}
    configured = trunk["model_config"].get("language_encoder") or "bpe"
    if recorded.get("name") != configured:
        raise CheckpointError(f"checkpoint {vname(trunk['version'])}: meta records language encoder "
                              f"{recorded.get('name')!r} but its model_config says {configured!r}")
    return recorded


def language_config(trunk: dict, config: ModelConfig) -> ModelConfig:
    """`config` with the language encoder the trunk was trained with, after checking this machine has
    that encoder with the same weights (CheckpointError saying what to install or retrain)."""
    recorded = _recorded_language(trunk)
    where = f"checkpoint {vname(trunk['version'])} was trained with language encoder {recorded['name']}"
    try:
        encoder = load_language_encoder(recorded["name"])
    except (LanguageEncoderError, ValueError) as e:
        raise CheckpointError(f"{where}, which this machine cannot load: {e}") from e
    actual = encoder_meta(encoder)
    if actual != recorded:
        raise CheckpointError(f"{where} ({recorded.get('id')}, weights {recorded.get('hash')}); this machine's "
                              f"is {actual.get('id')}, weights {actual.get('hash')}: install the same encoder "
                              f"or retrain from the demos in a new run")
    return config.model_copy(update={"language_encoder": recorded["name"]})


def check_model_language(trunk: dict, model: VLAModel) -> None:
    """A model resuming a version must read language the way that version was trained to."""
    recorded, actual = _recorded_language(trunk), encoder_meta(model.language)
    if actual != recorded:
        raise CheckpointError(f"checkpoint {vname(trunk['version'])} was trained with language encoder "
                              f"{recorded['name']} ({recorded.get('hash', 'its own tokens')}); the model reads "
                              f"language with {actual['name']} ({actual.get('hash', 'its own tokens')}): set "
                              f"model.language_encoder: {recorded['name']} to resume it, or start a new run "
                              f"to train with {actual['name']}")


def load_into(model: VLAModel, registry: CheckpointRegistry, version: int | None = None) -> tuple[Normalizer, dict]:
    """Load a version's trunk (adapter + pooler of its full base) and heads into an existing model
    built on the same backbone (e.g. a learner resuming). Returns (normalizer, meta)."""
    meta = registry.read_meta(_resolve_version(registry, version))
    trunk = trunk_meta(registry, meta)
    if model.backbone_modified():
        raise CheckpointError("the model's backbone weights were trained since it was loaded; "
                              "build a fresh one with load_model()")
    _check_backbone_hash(meta, model.backbone_hash, f"the model's backbone ({model.backbone_dir})")
    check_model_language(trunk, model)
    _load_trunk(model, registry, trunk)
    _load_heads(model, registry, meta)
    return read_norm(registry, meta), meta


def load_model(registry: CheckpointRegistry, version: int | None = None, device: str = "cpu",
               base: VLAModel | None = None, backbone_dir: str | None = None,
               trusted: TrustedSource | None = None) -> tuple[VLAModel, Normalizer, dict]:
    """Build the model of a version. With `base` (an already-loaded model of this registry whose
    trunk is this version's trunk), the backbone/adapter/pooler objects are shared and only the
    heads are read: a head-only version loads in milliseconds. `trusted`: the loading process's
    own model configuration (TrustedSource.of(config.model)); default: no remote code, no model dir.
    Returns (model, normalizer, meta)."""
    from vla.model import VLAModel, load_vla

    trusted = trusted or TrustedSource()
    meta = registry.read_meta(_resolve_version(registry, version))
    trunk = trunk_meta(registry, meta)
    config = serving_config(trunk, trusted, device)
    config = language_config(trunk, config)
    same = {"exclude": set(DEPLOYMENT_FIELDS)}
    reuse = (base is not None and base.trunk_version == trunk["version"]
             and base.trunk_registry == str(registry.root.resolve())
             and base.backbone_hash == meta["backbone_hash"] and not base.backbone_modified()
             and base.config.model_dump(**same) == config.model_dump(**same))
    if reuse:
        model = VLAModel.sharing_trunk(base, config)
    else:
        path = resolve_backbone_dir(registry, trunk, backbone_dir, trusted, config.seed)
        where = f"checkpoint {vname(trunk['version'])}"
        check_backbone_code(registry, path, trusted, where)
        _check_backbone_hash(meta, backbone_hash(path), f"the backbone at {path}")
        model = load_vla(config, path, backbone_id=trunk["backbone_id"], device=device)
        _load_trunk(model, registry, trunk)
    _load_heads(model, registry, meta)
    norm = read_norm(registry, meta)
    model.set_mode("head_only")
    model.eval()
    return model, norm, meta


def wait_for_new_version(registry: CheckpointRegistry, current: int | None, timeout_s: float,
                         poll_s: float = 0.2) -> int | None:
    """Poll LATEST until it differs from `current` (for the server's hot-swap watcher)."""
    deadline = time.monotonic() + timeout_s
    while True:
        latest = registry.latest()
        if latest is not None and latest != current:
            return latest
        if time.monotonic() >= deadline:
            return None
        time.sleep(poll_s)
