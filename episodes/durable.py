"""Crash-safe file writes shared by every process that must not lose or half-write a file: the
episode store, the robot's outbox, the checkpoint registry, status and state files.

The rule everywhere: write a temp file in the same directory, fsync it, rename it over the target,
fsync the directory. A reader then sees the old file or the new one, never a torn one.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any


def fsync_path(path: str | os.PathLike) -> None:
    """fsync a file or a directory (a directory's fsync makes renames and new entries durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


fsync_dir = fsync_path


def write_atomic(path: Path, data: bytes, sync: bool = True) -> None:
    """Temp + rename; with `sync` (the rule above) the temp file and the directory fsynced too."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        if sync:
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if sync:
        fsync_dir(path.parent)


def write_json_atomic(path: Path, data: Any, sync: bool = True) -> None:
    write_atomic(path, json.dumps(data, indent=1, sort_keys=True).encode(), sync)
