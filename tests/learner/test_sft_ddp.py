"""SFT under torchrun: 2 CPU processes (DDP, gloo) follow the same loss curve as 1 process on the same
global batch (deterministic data order; DDP averages the gradients of the two half batches)."""

import json
import os
import subprocess
import sys

import pytest

from episodes.store import EpisodeStore
from sim.mock.demos import record_demos

pytestmark = pytest.mark.slow  # minutes, not seconds: `pytest -m "not slow"` skips it


def torchrun(run_dir, nproc: int, out) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "VLALOOP_RUN_DIR": str(run_dir),
           "VLALOOP_LEARNER__SFT__EVAL_FRACTION": "0.2"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}",
           "-m", "learner.sft_ddp", "--steps", "6", "--batch-size", "8", "--lr", "1e-3", "--seed", "3",
           "--metrics-out", str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.timeout(300)
def test_two_processes_match_one_process(tmp_path):
    record_demos(EpisodeStore(tmp_path / "episodes"), task="reach", n=6, seed=0)
    one = torchrun(tmp_path, 1, tmp_path / "one.json")
    two = torchrun(tmp_path, 2, tmp_path / "two.json")
    assert one["world_size"] == 1 and two["world_size"] == 2
    assert len(one["loss_curve"]) == len(two["loss_curve"]) == 6
    for a, b in zip(one["loss_curve"], two["loss_curve"], strict=True):
        assert abs(a - b) < 1e-4, (one["loss_curve"], two["loss_curve"])
    assert one["loss_curve"][-1] < one["loss_curve"][0]  # it trains
    assert abs(one["loss_eval"] - two["loss_eval"]) < 1e-4
