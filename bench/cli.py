"""`vlaloop bench NAME`: run one benchmark (or `all`). Each prints its own table with a baseline
measured in the same run."""

from __future__ import annotations

import argparse
import importlib

BENCHMARKS = {
    "serving": "bench.serving",
    "control_loop": "bench.control_loop",
    "teleop": "bench.teleop_latency",
    "learner": "bench.learner",
    "ingest": "bench.learner_ingest",
    "metaworld_throughput": "bench.metaworld_throughput",  # needs the metaworld extra
    "vlm_gpu": "bench.vlm_gpu",  # full-size backbone on a GPU; prints "skipped" without one
    "learning": "bench.learning",  # ~45 min: the results table (docs/results.md); not part of `all`
    "hostile": "bench.hostile",  # hostile clients vs a 10 Hz robot; memory over 10 000 made-up ids
    "fuzz_hostile": "bench.fuzz_hostile",  # long property-based fuzzing of the decoders and the importer
    "interventions": "bench.interventions",  # long: interventions vs demos (docs/interventions.md); not in `all`
}
QUICK = [name for name in BENCHMARKS if name not in ("learning", "interventions", "metaworld_throughput", "fuzz_hostile")]


def configure(parser) -> None:
    parser.add_argument("name", choices=[*BENCHMARKS, "all"], help="which benchmark (all = every one but learning)")
    # REMAINDER: the benchmark's own options (--smoke, --quick, ...) pass through untouched
    parser.add_argument("rest", nargs=argparse.REMAINDER, help="arguments passed to the benchmark")


def run(args, config) -> int:
    names = QUICK if args.name == "all" else [args.name]
    rc = 0
    for name in names:
        print(f"\n=== bench {name} ===", flush=True)
        rc |= int(importlib.import_module(BENCHMARKS[name]).main(args.rest) or 0)
    return rc
