"""`python -m bench.torch_threads`: wall and CPU time of the same small torch workload at 1, 2, ...
intra-op threads, interleaved, on this machine as it is now (run it on a busy machine to see why
`vlaloop demo` gives each of its processes one thread: `--torch-threads`, OMP_NUM_THREADS).

The workload is a two-layer MLP forward at the tiny model's width; the baseline row is 1 thread,
measured in the same run. Prints the load average before and after.

    python -m bench.torch_threads --threads 1,2 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import time

import torch


def workload(iters: int, width: int = 512, batch: int = 256) -> None:
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(batch, width, generator=g), torch.randn(width, width, generator=g)
    for _ in range(iters):
        (x @ w).relu() @ w


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.torch_threads", description=__doc__.splitlines()[0])
    p.add_argument("--threads", default="1,2", help="comma-separated thread counts (the first is the baseline)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds over the thread counts")
    p.add_argument("--iters", type=int, default=200)
    args = p.parse_args(argv)
    counts = [int(t) for t in args.threads.split(",")]
    load_before = os.getloadavg()
    wall: dict[int, list[float]] = {n: [] for n in counts}
    cpu: dict[int, list[float]] = {n: [] for n in counts}
    for _ in range(args.repeats):
        for n in counts:
            torch.set_num_threads(n)
            t, c = time.perf_counter(), time.process_time()
            workload(args.iters)
            wall[n].append(time.perf_counter() - t)
            cpu[n].append(time.process_time() - c)
    base = min(wall[counts[0]])
    print(f"load average before {load_before[0]:.1f}, after {os.getloadavg()[0]:.1f}; {os.cpu_count()} CPUs")
    print(f"{'threads':>7} {'wall s (best)':>13} {'wall s (median)':>15} {'CPU s (median)':>14} {'vs baseline':>11}")
    for n in counts:
        w, c = sorted(wall[n]), sorted(cpu[n])
        print(f"{n:>7} {w[0]:>13.2f} {w[len(w) // 2]:>15.2f} {c[len(c) // 2]:>14.2f} {w[0] / base:>10.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
