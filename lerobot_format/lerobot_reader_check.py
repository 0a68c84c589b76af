"""Read an export with LeRobot's own ``LeRobotDataset`` and compare every frame with the store it
came from. Not part of the test suite: it runs in a side environment with lerobot installed
(docs/lerobot.md, "Checked with LeRobot's reader", has the exact setup), because lerobot 0.4.x
wants a torch older than the project's pin:

    PYTHONPATH=$PWD HF_HUB_OFFLINE=1 /work/lerobot-venv/bin/python lerobot_format/lerobot_reader_check.py \\
        OUT_DIR RUN_DIR

torchvision has no build for the CPU torch here, and LeRobot's dataset modules import it only for
image transforms and for the pyav video backend; this check puts an empty stand-in module in its
place and decodes video with torchcodec (``video_backend="torchcodec"``), LeRobot's default
decoder. It prints what it compared and exits 1 on any difference beyond the stated video
tolerance.
"""

from __future__ import annotations

import argparse
import importlib.machinery
import json
import sys
import types
from pathlib import Path

import numpy as np

MEAN_ABS_TOLERANCE = 8.0  # grey levels: the mean |decoded - stored| per frame allowed for lossy video


def stand_in_torchvision() -> None:
    """Empty torchvision modules, so LeRobot's imports succeed (nothing of them is called here)."""
    names = ["torchvision", "torchvision.transforms", "torchvision.transforms.v2",
             "torchvision.transforms.functional", "torchvision.transforms.v2.functional"]
    for name in names:
        module = types.ModuleType(name)
        module.__spec__ = importlib.machinery.ModuleSpec(name, None, is_package=True)
        module.__path__ = []
        sys.modules[name] = module
    for name in names[1:]:
        parent, _, child = name.rpartition(".")
        setattr(sys.modules[parent], child, sys.modules[name])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dataset", help="the exported dataset directory")
    parser.add_argument("run_dir", help="the run it was exported from")
    args = parser.parse_args(argv)
    stand_in_torchvision()
    import lerobot
    import torch
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    from episodes.store import EpisodeStore

    ds = LeRobotDataset("vlaloop/export", root=args.dataset, video_backend="torchcodec")
    print(f"lerobot {lerobot.__version__ if hasattr(lerobot, '__version__') else '?'}, torch {torch.__version__}: "
          f"LeRobotDataset loaded {ds.num_episodes} episodes, {len(ds)} frames at {ds.fps} fps, "
          f"cameras {ds.meta.camera_keys}")
    store = EpisodeStore(Path(args.run_dir) / "episodes")
    rows = {int(r["episode_index"]): r for r in ds.meta.episodes}
    worst, failures = 0.0, 0
    for i in range(len(ds)):
        item = ds[i]
        meta = json.loads(rows[int(item["episode_index"])]["vlaloop/meta"])
        ep = store.load(meta["robot_id"], meta["episode_id"])
        step = ep.steps[int(item["frame_index"])]
        failures += not np.allclose(item["observation.state"].numpy(), step["state"], atol=1e-6)
        failures += not np.allclose(item["action"].numpy(), step["action"], atol=1e-6)
        failures += item["task"] != (step.get("instruction") or meta.get("instruction"))
        for key in ds.meta.camera_keys:
            decoded = (item[key].permute(1, 2, 0).numpy() * 255.0).round()
            stored = ep.frame(int(step["step"]), key.removeprefix("observation.images.")).astype(np.float64)
            err = float(np.abs(decoded - stored).mean())
            worst = max(worst, err)
            failures += err > MEAN_ABS_TOLERANCE
    chunked = LeRobotDataset("vlaloop/export", root=args.dataset, video_backend="torchcodec",
                             delta_timestamps={"action": [k / ds.fps for k in range(5)]})
    batch = next(iter(torch.utils.data.DataLoader(chunked, batch_size=8, shuffle=False)))
    print(f"compared {len(ds)} frames with the store: state, action, task {'equal' if not failures else 'DIFFER'}; "
          f"video: worst per-frame mean |decoded - stored| {worst:.2f} grey levels (tolerance {MEAN_ABS_TOLERANCE})")
    print(f"a DataLoader batch with 5-step action chunks (delta_timestamps): action {tuple(batch['action'].shape)}, "
          f"padding flags {int(batch['action_is_pad'].sum())} of {batch['action_is_pad'].numel()}")
    print("OK" if not failures else f"FAILED: {failures} difference(s)")
    return 0 if not failures else 1


if __name__ == "__main__":
    sys.exit(main())
