"""Where a process's log goes: the terminal (stderr) and, for the long-running processes, one file
under the run dir, `<run_dir>/logs/<process>.log` (appended to across restarts; each start writes
a first line naming the command and pid).

Quiet by default: the HTTP libraries log one line per request at INFO (the robot client probes the
server's /healthz every 25 ms, so those lines buried everything else), and uvicorn's access log
one per request; below `--log-level DEBUG` they only pass warnings.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# per-request loggers: an INFO line for every request or probe
PER_REQUEST = ("httpx", "httpcore", "uvicorn.access", "urllib3", "websockets")
# the processes that keep a log file, and the file's name
FILE_NAMES = {"serve": "server", "learn": "learner", "robot": "robot-{robot_id}", "demo": "demo"}
OFF = "none"


def log_file_for(command: str, chosen: str | None, run_dir: str, robot_id: str) -> Path | None:
    """`--log-file PATH` or `none`, else the process's default file under the run dir (None for the
    one-shot tools: calibrate, model check, export, ...)."""
    if chosen:
        return None if chosen.lower() == OFF else Path(chosen)
    name = FILE_NAMES.get(command)
    return Path(run_dir) / "logs" / f"{name.format(robot_id=robot_id)}.log" if name else None


class TerminalHandler(logging.StreamHandler):
    """Writes to whatever sys.stderr is when a line is logged (a test runner swaps it per test)."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:  # StreamHandler.__init__ assigns it; the property decides
        pass


def _ours(handler: logging.Handler) -> bool:
    return getattr(handler, "_vlaloop", False)


def setup_logging(level: str, log_file: Path | None = None, command: str = "") -> None:
    """Replace the handlers an earlier call installed (main() runs many times in one test process)."""
    root = logging.getLogger()
    for h in [h for h in root.handlers if _ours(h)]:
        root.removeHandler(h)
        h.close()
    handlers: list[logging.Handler] = [TerminalHandler()]
    if log_file is not None:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(log_file, encoding="utf-8", delay=True))  # no file until a line
    for h in handlers:
        h._vlaloop = True
        h.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(h)
    root.setLevel(level)
    quiet = logging.getLevelName(level) > logging.DEBUG
    for name in PER_REQUEST:
        logging.getLogger(name).setLevel(logging.WARNING if quiet else logging.NOTSET)
    if log_file is not None:
        logging.getLogger("vlaloop").info("vlaloop %s (pid %d) logging to %s", command, os.getpid(), log_file)
