"""A count of the steps the arm executed, written BEFORE each move and kept across a crash.

Step records reach the outbox through the streamer thread; a client killed with SIGKILL loses
the few it had handed over but not yet written. The journal makes those moves countable: one
line per step, appended with a single ``write`` on an O_APPEND descriptor before the arm is told
to move. A killed process loses nothing the kernel already has (no fsync per tick: a power cut
can lose the last lines, a process kill cannot). Written before acting, it may count one step
that never moved (a crash between the line and the move), never miss one that did.
On the next start the runner closes the crashed episode as aborted with ``executed_steps``.
"""

from __future__ import annotations

import os
from pathlib import Path


class ExecutionJournal:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self._fd: int | None = None

    def begin(self, episode_id: str) -> None:
        """A new episode: the journal now counts its steps only."""
        self.close()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_APPEND, 0o644)
        os.write(self._fd, f"episode {episode_id}\n".encode())

    def executed(self, step: int) -> None:
        """Step ``step`` is about to be executed (called before the arm moves or holds for it)."""
        if self._fd is not None:
            os.write(self._fd, f"{step}\n".encode())

    def end(self) -> None:
        """The episode is closed (its EpisodeEnd is in the outbox): nothing to recover."""
        self.close()
        self.path.unlink(missing_ok=True)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    @staticmethod
    def read(path: str | os.PathLike) -> tuple[str | None, int]:
        """(episode_id, steps executed) of a journal left behind; (None, 0) if there is none."""
        try:
            lines = Path(path).read_text().splitlines()
        except FileNotFoundError:
            return None, 0
        if not lines or not lines[0].startswith("episode "):
            return None, 0
        steps = {int(x) for x in lines[1:] if x.strip().isdigit()}  # a torn last line is skipped
        return lines[0].split(" ", 1)[1].strip(), len(steps)
