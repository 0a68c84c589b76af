"""``vlaloop serve``: run the inference server under uvicorn."""

from __future__ import annotations

import argparse
import logging
import socket
import sys

from deployment.config import DeploymentConfig
from server.auth import UnsafeBindError, check_bind_allowed

log = logging.getLogger("server")


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default=None, help="bind address (default: server.host, 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default: server.port; 0 = any free)")
    parser.add_argument("--auto-label", action="store_true", default=None,
                        help="answer label waits with the robot's auto outcome (demo/test mode)")
    parser.add_argument("--access-log", action="store_true", help="log every request")


def bind_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit TCP_NODELAY on Linux. Without it a response written as headers +
    # body waits for the client's delayed ACK: +40 ms per request on keep-alive connections.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.listen(2048)  # listening now: connections queue until uvicorn accepts (no 'refused' window)
    sock.set_inheritable(True)
    return sock


def with_overrides(config: DeploymentConfig, args: argparse.Namespace) -> DeploymentConfig:
    updates = {k: v for k, v in (("host", args.host), ("port", args.port), ("auto_label", args.auto_label))
               if v is not None}
    return config.model_copy(update={"server": config.server.model_copy(update=updates)})


def run(args: argparse.Namespace, config: DeploymentConfig) -> int:
    import uvicorn

    from server.app import create_app
    from server.http_server import uvicorn_config

    config = with_overrides(config, args)
    s = config.server
    try:
        check_bind_allowed(s.host, s)
    except UnsafeBindError as e:
        print(f"vlaloop serve: {e}", file=sys.stderr)
        return 2
    from vla.device import startup_problem

    if problem := startup_problem(config.model):  # before a checkpoint fails to load on it
        print(f"vlaloop serve: {': '.join(problem)}", file=sys.stderr)
        return 2
    try:
        app = create_app(config)
    except ImportError as e:
        print(f"vlaloop serve: cannot load the model package: {e}", file=sys.stderr)
        return 2
    try:
        sock = bind_socket(s.host, s.port)
    except OSError as e:
        print(f"vlaloop serve: cannot bind {s.host}:{s.port}: {e}", file=sys.stderr)
        return 2
    host, port = sock.getsockname()[:2]
    latest = app.state.holder.loader.latest()
    log.info("listening on http://%s:%s  run dir %s  checkpoints LATEST=%s%s", host, port, config.run_dir,
             latest if latest is not None else "none (not ready until the learner publishes one)",
             "  auto-label ON" if s.auto_label else "")
    if args.access_log:  # vlaloop.logs keeps per-request loggers at WARNING unless asked
        logging.getLogger("uvicorn.access").setLevel(logging.INFO)
    # log_config=None: uvicorn's lines go through vlaloop's handlers (the terminal and logs/server.log)
    uv = uvicorn.Server(uvicorn_config(app, s, log_level=logging.getLogger().level, access_log=args.access_log,
                                       log_config=None, timeout_graceful_shutdown=5, lifespan="on"))
    uv.run(sockets=[sock])  # SIGINT/SIGTERM: uvicorn stops accepting, the lifespan stops the workers
    return 0
