"""Relabel files dropped by the server into ``runs/<run>/inbox/`` (docs/architecture.md, "Wire protocol").

The operator corrects a label on the page; the server writes ``relabel-<uuid>.json``
``{"robot_id", "episode_id", "outcome"}`` atomically. The learner applies it to the episode store
(``EpisodeStore.relabel``) and deletes the file. A relabel for an episode whose end has not
arrived yet stays in the inbox and is retried; a file that can never apply (bad JSON, bad ids,
unknown outcome) is moved to ``inbox/rejected/`` with the reason logged, so it is not retried
forever and is still there to inspect.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from episodes.store import EpisodeStore, RelabelRefused, StoreError
from protocol.messages import EpisodeId, RobotId

log = logging.getLogger("learner.inbox")


class RelabelFile(BaseModel):
    model_config = ConfigDict(extra="ignore")
    robot_id: RobotId
    episode_id: EpisodeId
    # "discard" is the operator button; it is stored as "aborted" (kept, never trained on)
    outcome: Literal["success", "failure", "aborted", "discard"]


def store_outcome(outcome: str) -> str:
    return "aborted" if outcome == "discard" else outcome


class Inbox:
    def __init__(self, root: str | os.PathLike, store: EpisodeStore,
                 on_relabel: Callable[[dict], None] | None = None):
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self.store = store
        self.on_relabel = on_relabel
        self.applied = 0
        self.rejected = 0
        self._pending_logged: set[str] = set()

    def _reject(self, path: Path, reason: str) -> None:
        rejected = self.root / "rejected"
        rejected.mkdir(exist_ok=True)
        os.replace(path, rejected / path.name)
        self.rejected += 1
        log.warning("relabel file %s rejected: %s (moved to %s)", path.name, reason, rejected)

    def scan(self) -> int:
        """Apply every relabel file present; returns how many were applied."""
        applied = 0
        for path in sorted(self.root.glob("relabel-*.json")):
            try:
                req = RelabelFile.model_validate(json.loads(path.read_text()))
            except FileNotFoundError:
                continue
            except (json.JSONDecodeError, UnicodeDecodeError, ValidationError) as e:
                self._reject(path, f"not a valid relabel: {e}".replace("\n", " "))
                continue
            try:
                meta = self.store.relabel(req.robot_id, req.episode_id, store_outcome(req.outcome))
            except RelabelRefused as e:
                self._reject(path, str(e))
                continue
            except StoreError as e:
                # its steps/episode_end may still sit in the robot's outbox (e.g. learner was down)
                if path.name not in self._pending_logged:
                    self._pending_logged.add(path.name)
                    log.info("relabel %s waits: %s", path.name, e)
                continue
            path.unlink()
            self._pending_logged.discard(path.name)
            applied += 1
            self.applied += 1
            log.info("relabelled %s/%s -> %s (inbox)", req.robot_id, req.episode_id, meta["outcome"])
            if self.on_relabel:
                self.on_relabel(meta)
        return applied
