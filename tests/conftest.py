"""Fixtures shared by the test packages. Helpers that tests import (stand-in processes, the learner
as a process) live next to this file: `standins.py`, `ingest_harness.py`."""

import os
import signal
import sys
from pathlib import Path

import pytest

# Two cores: keep each test process to one intra-op thread so parallel processes don't thrash.
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

TESTS = Path(__file__).resolve().parent
if str(TESTS) not in sys.path:  # the helper modules above, importable from every test package
    sys.path.insert(0, str(TESTS))


@pytest.fixture(scope="session")
def tiny_dir(tmp_path_factory):
    """The embedded tiny backbone, built once per session (ensure_tiny_backbone is idempotent)."""
    from vla.tiny import ensure_tiny_backbone

    return ensure_tiny_backbone(tmp_path_factory.getbasetemp() / "vla_tiny_backbone", seed=0)


@pytest.fixture
def learner_factory(tmp_path):
    """Start `vlaloop learn ...` processes; every one still running is killed at the end."""
    from ingest_harness import Learner

    started: list[Learner] = []

    def make(*args: str, run_dir: Path | None = None, **kw) -> Learner:
        lr = Learner(run_dir or tmp_path / "run", *args, **kw)
        started.append(lr)
        return lr.start()

    yield make
    for lr in started:
        if lr.proc is not None and lr.proc.poll() is None:
            os.killpg(lr.proc.pid, signal.SIGKILL)
            lr.proc.wait(10)


@pytest.fixture
def procs():
    """Processes a test started (``standins.Proc``): append them; each is stopped after the test."""
    started = []
    yield started
    for p in started:
        p.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """One headless Chromium per test module (tests/browser.py)."""
    from browser import chromium

    with chromium(tmp_path_factory.mktemp("chromium-profile")) as driver:
        yield driver
