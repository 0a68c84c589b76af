"""The learner's ingest as a real process (`vlaloop learn ...`) for tests: start, wait, kill."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from standins import free_port

from bench.learner_ingest import sample_frames
from deployment.config import load_config
from protocol.messages import Hello

REPO = Path(__file__).resolve().parents[1]  # tests/ -> the repository
CONFIG_HASH = load_config(environ={}).config_hash()
IMAGES = sample_frames(2)


class Learner:
    """`python -m vlaloop.cli learn ...` in its own process group; always killed at the end."""

    def __init__(self, run_dir: Path, *args: str, port: int | None = None, env: dict | None = None):
        self.run_dir, self.args = run_dir, args
        self.port = port or free_port()
        self.env = {**os.environ, "VLALOOP_LEARNER__BIND": f"tcp://127.0.0.1:{self.port}",
                    "VLALOOP_LEARNER__STATUS_INTERVAL_S": "0.2", "OMP_NUM_THREADS": "1", **(env or {})}
        self.proc: subprocess.Popen | None = None
        self.log = run_dir.parent / f"{run_dir.name}-learner.log"

    @property
    def endpoint(self) -> str:
        return f"tcp://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> Learner:
        status = self.run_dir / "status.json"
        started = time.time()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "vlaloop.cli", "--run-dir", str(self.run_dir), "learn", *self.args],
                cwd=REPO, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        while time.time() - started < timeout:  # ready once status.json names our endpoint, written by us
            if self.proc.poll() is not None:
                raise RuntimeError(f"learner exited {self.proc.returncode}:\n{self.log.read_text()[-3000:]}")
            try:
                st = json.loads(status.read_text())
                if st.get("pid") == self.proc.pid and st.get("ingest", {}).get("endpoint"):
                    return self
            except (FileNotFoundError, json.JSONDecodeError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"learner did not start:\n{self.log.read_text()[-3000:]}")

    def kill9(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 15.0) -> int:
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill9()
        return self.proc.returncode

    def logs(self) -> str:
        return self.log.read_text()


def hello(robot="r1", **kw) -> Hello:
    return Hello(robot_id=robot, config_hash=kw.pop("config_hash", CONFIG_HASH), **kw)
