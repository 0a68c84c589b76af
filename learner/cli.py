"""``vlaloop learn``: ingest (ZeroMQ -> episode store) plus the RL/SFT phase loop.

  vlaloop learn               ingest + phase loop (bootstrap first if there is no policy yet)
  vlaloop learn --bootstrap   Stage 0 only (train from the expert demos, publish), then exit
  vlaloop learn --no-train    ingest only: a pure recorder

SIGTERM / SIGINT shut down cleanly: the ingest thread finishes the message it is writing and acks
it; training in progress is abandoned between durable writes (a publish or a state save is never
cut in half), and a restart resumes from the registry, the store and learner_state.json.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from deployment.network import learner_bind_refusal
from episodes.status import StatusBoard
from episodes.store import EpisodeStore
from learner.ingest import Ingest
from learner.loop import PhaseLoop, Shutdown, ShutdownRequested

log = logging.getLogger("learner")


def configure(parser: argparse.ArgumentParser) -> None:
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--bootstrap", action="store_true",
                      help="run Stage 0 (SFT on expert demos) only, publish a version and exit")
    mode.add_argument("--no-train", action="store_true",
                      help="ingest only: record robot episodes into the store, never train")


def run(args: argparse.Namespace, config) -> int:
    from vla.device import startup_problem

    if problem := startup_problem(config.model):  # before any model is built on it
        print(f"vlaloop learn: {': '.join(problem)}", file=sys.stderr)
        return 2
    run_dir = Path(config.run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    shutdown = Shutdown()
    shutdown.install()
    store = EpisodeStore(run_dir / "episodes")
    status = StatusBoard(run_dir / "status.json", interval_s=config.learner.status_interval_s)
    status.record_episodes(store.list_episodes(), write=False)

    if args.bootstrap:
        loop = PhaseLoop(config, run_dir, status=status, shutdown=shutdown)
        return loop.run_bootstrap_only()

    refusal = learner_bind_refusal(config.learner.bind, config.learner.token)
    if refusal:
        log.error("%s", refusal)
        return 2
    ingest = Ingest.from_config(config, run_dir, store=store, status=status)
    try:
        endpoint = ingest.start()
    except RuntimeError as e:
        log.error("%s", e)
        return 2
    status.write()
    log.info("learner ingest on %s, run dir %s", endpoint, run_dir)
    code, detail = 0, "stopped"
    try:
        if args.no_train:
            while not shutdown.event.wait(0.5):
                if not ingest.alive:
                    log.error("ingest thread died")
                    code = 1
                    break
        else:
            loop = PhaseLoop(config, run_dir, status=status, shutdown=shutdown, ingest=ingest)
            code = loop.run()
            if not shutdown.event.is_set():
                detail = status.snapshot()["detail"]  # the loop's own last word ("done: N iterations")
    except ShutdownRequested:
        log.info("training interrupted by shutdown; it resumes from the last published version")
    finally:
        ingest.stop()
        status.set(phase="idle", detail=detail)
    return code
