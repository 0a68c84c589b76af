"""The app factory: ``create_app(config) -> FastAPI``.

Wires the pieces onto ``app.state`` — ``config``, ``metrics``, ``holder`` (PolicyHolder: serving
version + hot swap), ``batcher`` (MicroBatcher), ``robots`` (RobotRegistry: the operator page's
live picture; its labels feed the holder's promotion gate) — and the routers: act, health/metrics, robots. The lifespan starts the checkpoint
watcher and the batcher and stops them (and the inference thread) on shutdown.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from deployment.config import DeploymentConfig
from server import act, health, openpi_ws, openvla_rest, promotion_routes, robots, scene, teleop_routes, ui
from server.batcher import InferenceFailed, MicroBatcher
from server.decode import InputError, image_limit
from server.metrics import ServerMetrics
from server.policy_holder import NoPolicyLoaded, PolicyHolder, PolicyLoader, RegistryLoader
from server.reward_scorer import RewardScorer
from server.robots import RobotRegistry

log = logging.getLogger(__name__)


def _error(request: Request, status: int, kind: str, detail: str, field: str | None = None) -> JSONResponse:
    request.app.state.metrics.errors.labels(kind=kind).inc()
    body = {"detail": detail} if field is None else {"detail": detail, "field": field}
    return JSONResponse(body, status_code=status)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(InputError)
    async def _input_error(request: Request, e: InputError) -> JSONResponse:
        kind = {400: "malformed", 413: "too_large", 415: "content_type"}.get(e.status, "invalid_field")
        return _error(request, e.status, kind, str(e), e.field)

    @app.exception_handler(RecursionError)
    async def _too_deep(request: Request, e: RecursionError) -> JSONResponse:
        # a JSON body nested thousands deep, parsed by a route's own body model
        return _error(request, 400, "malformed", "body: malformed JSON: nested too deeply", "body")

    @app.exception_handler(NoPolicyLoaded)
    async def _no_policy(request: Request, e: NoPolicyLoaded) -> JSONResponse:
        run_dir = request.app.state.config.run_dir
        return _error(request, 503, "no_policy",
                      f"{e}: waiting for a checkpoint in {run_dir}/checkpoints (see /v1/policy)")

    @app.exception_handler(InferenceFailed)
    async def _inference(request: Request, e: InferenceFailed) -> JSONResponse:
        log.error("inference failed: %s", e)
        return _error(request, 500, "inference", f"inference failed: {e}")

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, e: StarletteHTTPException):
        if e.status_code == 400 and e.detail == "There was an error parsing the body":
            # FastAPI's word for a body its JSON parser gave up on (RecursionError: nested too deeply)
            return _error(request, 400, "malformed", "body: malformed JSON (not parseable: nested too deeply?)",
                          "body")
        kind = "auth" if e.status_code in (401, 403) else f"http_{e.status_code}"
        request.app.state.metrics.errors.labels(kind=kind).inc()
        return await http_exception_handler(request, e)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, e: RequestValidationError) -> JSONResponse:
        err = e.errors()[0] if e.errors() else {"loc": ("body",), "msg": "invalid"}
        if err.get("type") == "json_invalid":
            return _error(request, 400, "malformed", f"body: malformed JSON ({err.get('ctx', {}).get('error', '')})",
                          "body")
        loc = [str(p) for p in err["loc"] if p not in ("body", "query", "path")] or ["body"]
        field = ".".join(loc)
        msg = "unknown field" if err.get("type") == "extra_forbidden" else err["msg"]
        return _error(request, 422, "invalid_field", f"{field}: {msg}", field)


class BodyLimit:
    """413 for any HTTP body over ``limit`` bytes on every route (not only /v1/act), before a route
    reads it into memory: a declared Content-Length is checked up front, a streamed body as it comes."""

    def __init__(self, app, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope["headers"]).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > self.limit:
            body = {"detail": f"body: {int(declared)} bytes exceeds the limit of {self.limit}", "field": "body"}
            return await JSONResponse(body, status_code=413)(scope, receive, send)
        seen, exceeded, answered = 0, False, False

        async def limited_receive():
            nonlocal seen, exceeded
            message = await receive()
            seen += len(message.get("body", b"")) if message["type"] == "http.request" else 0
            if seen > self.limit:
                exceeded = True
                raise InputError(413, "body", f"more than {self.limit} bytes")
            return message

        async def guarded_send(message):
            # Once the body ran over, whatever the route makes of the refused read (FastAPI's JSON
            # routes turn it into a 400 "error parsing the body") is replaced by the 413 below.
            nonlocal answered
            if not exceeded:
                answered = answered or message["type"] == "http.response.start"
                await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except InputError:
            if not exceeded:
                raise
        if exceeded and not answered:
            body = {"detail": f"body: more than {self.limit} bytes", "field": "body"}
            await JSONResponse(body, status_code=413)(scope, receive, send)


def create_app(config: DeploymentConfig, loader: PolicyLoader | None = None, with_ui: bool = True) -> FastAPI:
    """``loader`` defaults to the checkpoint registry under ``config.run_dir``; ``with_ui`` mounts the
    operator page (``server.ui``)."""
    run_dir = Path(config.run_dir)
    if loader is None:
        loader = RegistryLoader(run_dir / "checkpoints", device=config.model.device, model=config.model)
    metrics = ServerMetrics()
    worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="inference")
    holder = PolicyHolder(loader, worker, metrics, interval_s=config.server.watch_interval_s,
                          promotion=config.server.promotion)
    batcher = MicroBatcher(holder, worker, metrics, config.server.max_batch, config.server.max_wait_ms)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        holder.start()
        await batcher.start()
        try:
            yield
        finally:
            holder.stop()
            await batcher.stop()
            worker.shutdown(wait=True, cancel_futures=True)
            app.state.decode_pool.shutdown(wait=True, cancel_futures=True)
            log.info("server stopped")

    app = FastAPI(title="vlaloop inference server", version="1",
                  description="Action chunks for robots (POST /v1/act), hot-swapped policy versions, "
                              "and the operator's channel to the robots.", lifespan=lifespan)
    app.state.config = config
    app.state.metrics = metrics
    app.state.holder = holder
    app.state.batcher = batcher
    app.state.worker = worker  # the inference thread: reward-model features run there too
    app.state.reward_scorer = RewardScorer(run_dir, config.reward_model)
    app.state.robots = RobotRegistry(auto_label=config.server.auto_label, stale_s=config.server.robot_stale_s,
                                     teleop_lock_s=config.server.teleop_lock_s,
                                     forget_s=config.server.robot_forget_s, max_robots=config.server.max_robots)
    app.state.robots.label_listeners.append(holder.record_label)
    app.state.robots.forget_listeners.append(app.state.reward_scorer.forget)
    app.state.decode_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="decode")
    app.state.image_limit = image_limit(config)
    app.state.metadata_cache = {}
    app.state.scene = scene.SceneBoard(run_dir)  # between episodes: scene reset, next task (server/scene.py)
    _install_error_handlers(app)
    app.add_middleware(BodyLimit, limit=config.server.max_body_bytes)
    app.include_router(act.router)
    app.include_router(health.router)
    app.include_router(robots.router)
    app.include_router(teleop_routes.router)
    app.include_router(scene.router)
    app.include_router(promotion_routes.router)
    app.include_router(openpi_ws.router)     # drop-in: openpi's websocket client at ws://host:port/
    app.include_router(openvla_rest.router)  # drop-in: OpenVLA deploy.py's POST /act
    if with_ui:
        ui.mount(app)  # the operator page at / (server/ui)
    return app
