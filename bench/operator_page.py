"""How long the page's polled endpoints take with many stored episodes.

    .venv/bin/python -m bench.operator_page --episodes 2000

Fills a temporary run directory with N ended episodes in the store's layout (meta.json + one
frame each; written directly, without the store's per-step fsync, to keep the setup short), starts
a real server on 127.0.0.1 and times GET /v1/learning and GET /v1/episodes: the first call (reads
every meta.json) and the median of 10 warm calls (summaries cached under the meta.json signature).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np

from protocol.images import encode_jpeg


class _NoPolicy:
    def latest(self) -> int | None:
        return None

    def load(self, version, base):  # pragma: no cover - latest() is None
        raise AssertionError


def fill(run_dir: Path, n: int) -> None:
    jpeg = encode_jpeg(np.zeros((96, 96, 3), np.uint8))
    for i in range(n):
        d = run_dir / "episodes" / f"robot{i % 4}" / f"ep{i:06d}"
        (d / "frames").mkdir(parents=True)
        (d / "frames" / "00000_front.jpg").write_bytes(jpeg)
        meta = {"robot_id": d.parent.name, "episode_id": d.name, "source": "online", "n_steps": 1,
                "outcome": "success" if i % 3 else "failure", "label_source": "auto",
                "policy_version": 1 + i // 100, "finished": 1.0e9 + i, "instruction": "reach the red block"}
        (d / "meta.json").write_text(json.dumps(meta))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--episodes", type=int, default=2000)
    args = parser.parse_args()
    from bench.harness import ServerThread
    from deployment.config import load_config

    with tempfile.TemporaryDirectory() as tmp:
        run_dir = Path(tmp) / "run"
        fill(run_dir, args.episodes)
        config = load_config(environ={}, run_dir=str(run_dir))
        with ServerThread(config, loader=_NoPolicy()) as srv, httpx.Client(base_url=srv.url, timeout=60) as c:
            print(f"| endpoint ({args.episodes} episodes) | first call s | warm median s | response KB |")
            print("|---|---|---|---|")
            for path in ("/v1/learning", "/v1/episodes?limit=200"):
                t = time.perf_counter()
                first = c.get(path)
                first_s = time.perf_counter() - t
                warm = []
                for _ in range(10):
                    t = time.perf_counter()
                    c.get(path).raise_for_status()
                    warm.append(time.perf_counter() - t)
                print(f"| GET {path} | {first_s:.3f} | {statistics.median(warm):.3f} | {len(first.content) / 1024:.0f} |")


if __name__ == "__main__":
    main()
