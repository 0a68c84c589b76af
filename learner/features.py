"""FeatureCache: pooled backbone features per decision frame, computed once per trunk.

During RL the backbone, adapter and pooler are frozen, so the feature of a frame never changes
until the next SFT phase publishes a new `full` version. Features are computed in batches without
grad and persisted per episode (safetensors), so a learner restart does not recompute them.

Layout: ``<root>/<trunk key>/<robot_id>/<episode_id>.safetensors`` with tensors ``steps`` [N] (int64)
and ``features`` [N, feature_dim]. The trunk key names the full version the trunk was published as
plus a fingerprint of the trunk weights (pooler + adapter) and the backbone hash, so features of an
old backbone can never be read for a new one; `invalidate()` deletes every other trunk's features.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from learner.dataset import EpisodeDecisions
from vla.policy import Policy, trunk_key

__all__ = ["FeatureCache", "trunk_key"]




class FeatureCache:
    def __init__(self, root: str | os.PathLike, batch_size: int = 64):
        self.root = Path(root)
        self.batch_size = batch_size
        self.stats = {"computed": 0, "loaded": 0}

    def path(self, key: str, robot_id: str, episode_id: str) -> Path:
        return self.root / key / robot_id / f"{episode_id}.safetensors"

    def _read(self, path: Path) -> dict[int, torch.Tensor]:
        try:
            data = load_file(str(path))
        except FileNotFoundError:
            return {}
        except (SafetensorError, OSError, ValueError):  # torn write from a crash: recompute
            return {}
        return {int(s): f for s, f in zip(data["steps"].tolist(), data["features"], strict=True)}

    def _write(self, path: Path, rows: dict[int, torch.Tensor]) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        steps = sorted(rows)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        save_file({"steps": torch.tensor(steps, dtype=torch.int64),
                   "features": torch.stack([rows[s] for s in steps]).contiguous()}, str(tmp))
        os.replace(tmp, path)  # readers see the old or the new file, never half

    def features(self, policy: Policy, decisions: EpisodeDecisions) -> torch.Tensor:
        """[N, feature_dim] for the episode's decision frames (cached, computed where missing)."""
        key = trunk_key(policy)
        meta = decisions.meta
        path = self.path(key, meta["robot_id"], meta["episode_id"])
        rows = self._read(path)
        missing = [i for i, s in enumerate(decisions.steps) if s not in rows]
        if missing:
            cams = policy.spec.cameras
            for start in range(0, len(missing), self.batch_size):
                part = missing[start:start + self.batch_size]
                feats = policy.features([decisions.observation(i, cams) for i in part]).float().cpu()
                for i, f in zip(part, feats, strict=True):
                    rows[decisions.steps[i]] = f.clone()
            self._write(path, rows)
            self.stats["computed"] += len(missing)
        self.stats["loaded"] += len(decisions.steps) - len(missing)
        if not decisions.steps:
            return torch.zeros(0, policy.spec.feature_dim)
        return torch.stack([rows[s] for s in decisions.steps])

    def put(self, key: str, robot_id: str, episode_id: str, rows: dict[int, torch.Tensor]) -> None:
        """Store features computed elsewhere for the trunk `key` (a rollout's, while acting:
        learner.evaluate), merged with the episode's file; `features` then loads them."""
        path = self.path(key, robot_id, episode_id)
        self._write(path, {**self._read(path), **rows})

    def invalidate(self, keep: str | None = None) -> list[str]:
        """Delete the features of every trunk except `keep` (after SFT changed the backbone)."""
        removed = []
        if self.root.is_dir():
            for d in self.root.iterdir():
                if d.is_dir() and d.name != keep:
                    shutil.rmtree(d, ignore_errors=True)
                    removed.append(d.name)
        return removed
