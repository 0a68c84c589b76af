"""The baseline protocol for bench.serving: the same policy behind an OpenVLA-``deploy.py``-style
server. OpenVLA's reference server (``vla-scripts/deploy.py``) is a FastAPI app whose ``/act``
takes one JSON payload with the image as a nested array and the instruction, runs the model, and
returns ONE action as JSON. This file reproduces that shape faithfully with our policy: image as
nested JSON lists (H x W x 3 ints), a plain synchronous handler, one action per request, no batching.

    python -m bench.json_lists_baseline --run-dir runs/x --port 0
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

import numpy as np


def create_baseline_app(policy: Any):
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    from interface.policy import Observation

    app = FastAPI(title="JSON-lists baseline (OpenVLA deploy.py shape)")

    @app.post("/act")
    def predict_action(payload: dict[str, Any]) -> JSONResponse:  # sync: FastAPI runs it in its threadpool
        image = np.asarray(payload["image"], dtype=np.uint8)
        state = np.asarray(payload.get("state", np.zeros(policy.spec.state_dim)), dtype=np.float32)
        obs = Observation(images={policy.spec.cameras[0]: image}, state=state,
                          instruction=payload["instruction"])
        action = policy.act(obs, mode="greedy").actions[0]  # one action per request
        return JSONResponse(action.tolist())

    return app


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    from server.cli import bind_socket
    from vla.policy import Policy
    from vla.registry import CheckpointRegistry

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    policy = Policy.load(CheckpointRegistry(f"{args.run_dir}/checkpoints"))
    sock = bind_socket(args.host, args.port)  # same TCP_NODELAY socket as our server: a fair comparison
    host, port = sock.getsockname()[:2]
    print(f"listening on http://{host}:{port}", file=sys.stderr, flush=True)
    uvicorn.Server(uvicorn.Config(create_baseline_app(policy), log_level=logging.WARNING,
                                  access_log=False)).run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
