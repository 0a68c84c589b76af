"""Run a real server in-process for tests, benchmarks and the demo.

``ServerThread(config)`` starts uvicorn on a socket bound before start (port 0 = a free port) in a
background thread, waits until it accepts requests, and stops it gracefully on exit::

    with ServerThread(config) as srv:
        httpx.get(srv.url + "/healthz")
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import uvicorn

from deployment.config import DeploymentConfig
from server.cli import bind_socket
from server.http_server import uvicorn_config


class ServerThread:
    def __init__(self, config: DeploymentConfig, loader: Any | None = None, host: str = "127.0.0.1",
                 port: int = 0) -> None:
        from server.app import create_app

        self.app = create_app(config, loader=loader)
        self._sock = bind_socket(host, port)
        self.host, self.port = self._sock.getsockname()[:2]
        self.url = f"http://{self.host}:{self.port}"
        self._server = uvicorn.Server(uvicorn_config(self.app, config.server, log_level="warning", access_log=False,
                                                     timeout_graceful_shutdown=2, lifespan="on"))
        self._thread = threading.Thread(target=self._run, name="uvicorn", daemon=True)

    def _run(self) -> None:
        self._server.run(sockets=[self._sock])  # uvicorn's loop (uvloop when installed), as `vlaloop serve`

    def start(self, timeout: float = 20.0) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("server thread did not start")
            time.sleep(0.01)
        return self

    def wait_ready(self, timeout: float = 30.0) -> int:
        """Block until a policy is loaded; returns its version."""
        if not self.app.state.holder.wait_ready(timeout):
            raise TimeoutError(f"no policy loaded within {timeout} s: {self.app.state.holder.status()}")
        return int(self.app.state.holder.policy.version)

    def stop(self, timeout: float = 10.0) -> None:
        self._server.should_exit = True
        self._thread.join(timeout)
        self._sock.close()

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------- a published tiny model


def publish_tiny(run_dir: str | Path, mark: float | None = None, seed: int = 0):
    """Build the embedded tiny model and publish it as a full version into ``<run_dir>/checkpoints``.
    Returns ``(model, registry, version)``; ``model`` can then publish head-only versions."""
    from deployment.model import ModelConfig
    from vla.model import build_model
    from vla.normalization import Normalizer
    from vla.registry import CheckpointRegistry, publish

    model = build_model(ModelConfig(seed=seed))
    registry = CheckpointRegistry(Path(run_dir) / "checkpoints")
    if mark is not None:
        set_constant_actions(model, mark)
    version = publish(registry, model, Normalizer.identity(), kind="full")
    return model, registry, version


def set_constant_actions(model: Any, value: float) -> None:
    """Make the greedy action chunk equal ``value`` everywhere, whatever the observation (with the
    identity normalizer): a version stamped this way shows in every response which weights ran."""
    import torch

    last = model.heads.mean[-1]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.fill_(value)


def publish_head(model: Any, registry: Any, mark: float | None = None) -> int:
    """Publish ``model``'s heads as a head-only version (optionally stamped with ``mark``)."""
    from vla.normalization import Normalizer
    from vla.registry import publish

    if mark is not None:
        set_constant_actions(model, mark)
    return publish(registry, model, Normalizer.identity(), kind="head")
