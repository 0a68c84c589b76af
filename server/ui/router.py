"""The operator web page and the read-side JSON behind it.

The page itself (``/`` and ``/ui/static/*``) is public: it holds no data. Every JSON endpoint here
requires the operator token (``Authorization: Bearer <operator_token>``, ``server.auth``): camera
frames and episode data show the workshop and are nobody else's business. The live view and the buttons use the
server's operator endpoints (``/v1/robots``, ``/command``, ``/label``, live frames); this module adds

* ``GET  /v1/episodes``                                         stored episodes (newest first)
* ``GET  /v1/episodes/{robot_id}/{episode_id}``                 one episode: meta + per-step summary
* ``GET  /v1/episodes/{robot_id}/{episode_id}/frames/{step}/{camera}.jpg``  a stored frame (replay)
* ``POST /v1/episodes/{robot_id}/{episode_id}/relabel``         correct a label (inbox file, learner applies)
* ``GET  /v1/learning``                                         learner status.json + success curves

The store is only read here; the learner is its single writer. A relabel is therefore not applied
by the server but dropped as ``runs/<run>/inbox/relabel-<uuid>.json`` (atomic) for the learner.
"""

from __future__ import annotations

import json
import math
import os
import re
import threading
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, ConfigDict, Field

from episodes.store import EpisodeStore, StoreError, is_dry_run, write_json_atomic
from protocol.messages import ID_PATTERN
from server.auth import require_operator

STATIC_DIR = Path(__file__).parent / "static"
_ID = re.compile(ID_PATTERN)
MOVING_AVERAGE_WINDOW = 10
# Outcomes that count for the success curve; "aborted" (discarded, timed out, faulted) is not a try.
COUNTED_OUTCOMES = ("success", "failure")


# ---------------------------------------------------------------- response models (in /openapi.json)


class EpisodeSummary(BaseModel):
    robot_id: str
    episode_id: str
    source: str = Field(description='"expert" | "online" | "eval"')
    outcome: str | None = Field(description='"success" | "failure" | "aborted"')
    label_source: str | None = Field(description='"operator" | "auto" | "timeout"')
    policy_version: int | None = Field(description="policy version that chose most of the actions")
    n_steps: int
    instruction: str = ""
    task: str = ""
    purpose: str | None = Field(default=None, description='"train" | "eval" (from the episode end)')
    learner_phase: str | None = Field(default=None, description="learner phase when the episode was stored")
    finished: float | None = Field(description="unix seconds when the episode was stored")
    cameras: list[str]
    first_step: int | None = Field(description="first stored step (replay starts here)")
    last_step: int | None = Field(description="last stored step (the thumbnail shows it)")
    relabeled: bool = Field(description="the operator corrected the label after the fact")
    dry_run: bool = Field(default=False, description="a dry run (the arm held): cannot be labelled, never trained on")
    relabel_pending: str | None = Field(
        default=None, description="outcome of a correction queued in the inbox, not yet applied")


class EpisodeList(BaseModel):
    total: int = Field(description="episodes matching the filter (before limit)")
    episodes: list[EpisodeSummary]


class StepSummary(BaseModel):
    step: int
    policy_version: int | None = None
    chunk_index: int | None = None
    state: list[float] = Field(default_factory=list)
    action: list[float] = Field(default_factory=list)
    t_capture: float | None = None
    safety: dict[str, int] = Field(default_factory=dict)


class EpisodeDetail(BaseModel):
    summary: EpisodeSummary
    meta: dict[str, Any] = Field(description="meta.json as stored")
    steps: list[StepSummary]


class RelabelRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    outcome: Literal["success", "failure", "discard", "aborted"] = Field(
        description='"discard" is stored as outcome "aborted" (never trained on)')


class RelabelQueued(BaseModel):
    robot_id: str
    episode_id: str
    outcome: str
    inbox_file: str = Field(description="file name under runs/<run>/inbox/")


class LearnerStatus(BaseModel):
    """``status.json`` as the learner writes it; unknown fields pass through."""

    model_config = ConfigDict(extra="allow")
    phase: str | None = None
    iteration: int | None = None
    round: int | None = None
    progress: float | None = None
    losses: dict[str, Any] = Field(default_factory=dict)
    success_rate: dict[str, Any] = Field(default_factory=dict)
    episodes_per_phase: dict[str, Any] = Field(default_factory=dict)
    policy_version: int | None = None
    waiting_for: str | None = Field(default=None, description="what the learner waits for before it can "
                                    "train (\"demonstrations\"), null while it can")
    updated: float | None = None


class CurvePoint(BaseModel):
    index: int = Field(description="1-based count of counted (success/failure) online episodes")
    robot_id: str
    episode_id: str
    finished: float | None
    success: bool
    moving_average: float = Field(description=f"success rate over the last {MOVING_AVERAGE_WINDOW} episodes")
    policy_version: int | None
    purpose: str | None


class VersionPoint(BaseModel):
    policy_version: int
    episodes: int
    successes: int
    success_rate: float
    eval_episodes: int = Field(description="greedy evaluation episodes of this version")
    eval_success_rate: float | None


class LearningView(BaseModel):
    status: LearnerStatus | None = Field(description="status.json; null before the learner wrote it")
    status_age_s: float | None = Field(description="seconds since status.json was last written")
    window: int = MOVING_AVERAGE_WINDOW
    curve_total: int = Field(description="labelled episodes on the curve before thinning to max_points")
    curve: list[CurvePoint] = Field(description="oldest first; evenly thinned to at most max_points, "
                                                "always keeping the newest")
    versions: list[VersionPoint]
    outcome_counts: dict[str, int] = Field(description="online episodes by outcome (incl. aborted)")
    expert_episodes: int
    serving_version: int | None = Field(description="policy version this server answers /v1/act with")


# ---------------------------------------------------------------- per-app context


@dataclass
class UIContext:
    run_dir: Path
    # The page polls these endpoints every few seconds while the server also answers /v1/act, so a
    # poll must not re-read thousands of files: an episode's summary is cached under its meta.json
    # (mtime, size) signature. Steps and frames of an ended episode never change; a relabel
    # rewrites meta.json and so refreshes its entry.
    summaries: dict[tuple[str, str], tuple[tuple[int, int], EpisodeSummary]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @cached_property
    def store(self) -> EpisodeStore:
        return EpisodeStore(self.run_dir / "episodes")

    @property
    def inbox(self) -> Path:
        return self.run_dir / "inbox"


def _context(request: Request) -> UIContext:
    ctx = getattr(request.app.state, "ui", None)
    if ctx is None:
        config = getattr(request.app.state, "config", None)
        if config is None:
            raise HTTPException(500, "operator page: no configuration on app.state (call server.ui.mount)")
        ctx = request.app.state.ui = UIContext(run_dir=Path(config.run_dir))
    return ctx


router = APIRouter(tags=["operator page"])
_auth = [Depends(require_operator)]
RobotIdParam = PathParam(pattern=ID_PATTERN)
EpisodeIdParam = PathParam(pattern=ID_PATTERN)


# ---------------------------------------------------------------- helpers


def _frames_index(ep_dir: Path) -> tuple[list[str], int | None, int | None]:
    """Cameras and first/last step from the frame file names (``<step:05d>_<camera>.jpg``): a
    directory listing, much cheaper than decoding steps.log."""
    steps: set[int] = set()
    cameras: set[str] = set()
    try:
        names = os.listdir(ep_dir / "frames")
    except FileNotFoundError:
        names = []
    for name in names:
        stem, dot, ext = name.rpartition(".")
        step, _, cam = stem.partition("_")
        if dot and ext == "jpg" and step.isdigit() and cam:
            steps.add(int(step))
            cameras.add(cam)
    return sorted(cameras), min(steps, default=None), max(steps, default=None)


def _steps_policy_version(ctx: UIContext, robot_id: str, episode_id: str) -> int | None:
    """The version that produced most steps (for episodes whose meta.json lacks it)."""
    versions = Counter(int(s["policy_version"]) for s in ctx.store.load(robot_id, episode_id).steps
                       if isinstance(s.get("policy_version"), int) and s["policy_version"] >= 0)
    return versions.most_common(1)[0][0] if versions else None


def _pending_relabels(ctx: UIContext) -> dict[tuple[str, str], str]:
    pending: dict[tuple[str, str], str] = {}
    if not ctx.inbox.is_dir():
        return pending
    for path in sorted(ctx.inbox.glob("relabel-*.json"), key=lambda p: p.stat().st_mtime):
        try:
            item = json.loads(path.read_text())
            pending[(item["robot_id"], item["episode_id"])] = item["outcome"]
        except (OSError, ValueError, KeyError, TypeError):
            continue  # the learner may be deleting it right now
    return pending


def _meta_policy_version(meta: dict) -> int | None:
    v = meta.get("policy_version")
    return int(v) if isinstance(v, (int, float)) and v >= 0 else None


def _summary(ctx: UIContext, meta: dict, ep_dir: Path) -> EpisodeSummary:
    robot_id, episode_id = meta["robot_id"], meta["episode_id"]
    extra = meta.get("extra") if isinstance(meta.get("extra"), dict) else {}
    version = _meta_policy_version(meta)
    if version is None and meta.get("source") != "expert":
        version = _steps_policy_version(ctx, robot_id, episode_id)
    cameras, first, last = _frames_index(ep_dir)
    return EpisodeSummary(
        robot_id=robot_id, episode_id=episode_id,
        source=str(meta.get("source", "online")),
        outcome=meta.get("outcome"), label_source=meta.get("label_source"),
        policy_version=version,
        n_steps=int(meta.get("n_stored_steps", meta.get("n_steps", 0)) or 0),
        instruction=str(meta.get("instruction", "")), task=str(meta.get("task", "")),
        purpose=meta.get("purpose", extra.get("purpose")),
        learner_phase=meta.get("learner_phase"),
        finished=meta.get("finished"),
        cameras=cameras, first_step=first, last_step=last,
        relabeled="relabeled" in meta,
        dry_run=is_dry_run(meta),
    )


def _summaries(ctx: UIContext) -> list[EpisodeSummary]:
    """Every ended episode, oldest first (the order of ``EpisodeStore.list_episodes``)."""
    seen: dict[tuple[str, str], tuple[tuple[int, int], EpisodeSummary]] = {}
    with os.scandir(ctx.store.root) as robots:  # scandir + os.stat: ~3x faster than pathlib here
        robot_dirs = [e for e in robots if e.is_dir() and _ID.match(e.name)]
    for robot_dir in robot_dirs:
        with os.scandir(robot_dir.path) as episodes:
            ep_dirs = [e for e in episodes if _ID.match(e.name)]
        for ep_dir in ep_dirs:
            key = (robot_dir.name, ep_dir.name)
            meta_path = os.path.join(ep_dir.path, "meta.json")
            try:
                st = os.stat(meta_path)
            except (FileNotFoundError, NotADirectoryError):
                continue  # still running: not stored yet
            sig = (st.st_mtime_ns, st.st_size)
            cached = ctx.summaries.get(key)
            if cached is None or cached[0] != sig:
                try:
                    with open(meta_path) as f:
                        meta = json.load(f)
                    meta.update(robot_id=key[0], episode_id=key[1])
                    cached = (sig, _summary(ctx, meta, Path(ep_dir.path)))
                except (OSError, ValueError, KeyError, TypeError, StoreError):
                    continue  # a foreign or half-written directory: not the page's problem to show
            seen[key] = cached
    with ctx.lock:
        ctx.summaries = seen  # forget deleted episodes
    pending = _pending_relabels(ctx)
    out = [s if k not in pending else s.model_copy(update={"relabel_pending": pending[k]})
           for k, (_, s) in seen.items()]
    return sorted(out, key=lambda e: (e.finished or 0.0, e.robot_id, e.episode_id))


def _finite(value: Any) -> Any:
    """NaN/inf -> None, recursively: the learner may write NaN (e.g. a loss over zero samples, which
    Python's json accepts) but it is not JSON and would make the response fail."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value


def _read_status(ctx: UIContext) -> tuple[LearnerStatus | None, float | None]:
    path = ctx.run_dir / "status.json"
    try:
        raw = path.read_text()
        age = max(0.0, time.time() - path.stat().st_mtime)
        return LearnerStatus.model_validate(_finite(json.loads(raw))), age
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError):
        return None, None  # written atomically, so this is a foreign file: show "no status"


def learning_curves(episodes: list[EpisodeSummary], window: int = MOVING_AVERAGE_WINDOW,
                    max_points: int | None = None) -> tuple[list[CurvePoint], list[VersionPoint], int]:
    """Success curve over online episodes (oldest first), success rate per policy version, and the
    number of curve points before thinning. The moving average is computed over every episode; only
    then is the curve thinned evenly to ``max_points`` (always keeping the newest)."""
    online = [e for e in episodes if e.source != "expert" and e.outcome in COUNTED_OUTCOMES]
    online.sort(key=lambda e: (e.finished or 0.0, e.robot_id, e.episode_id))
    wins = [e.outcome == "success" for e in online]
    total = len(online)
    keep = range(total)
    if max_points is not None and total > max_points >= 2:
        stride = -(-(total - 1) // (max_points - 1))  # ceil: at most max_points - 1 before the newest
        keep = [*range(0, total - 1, stride), total - 1]
    curve: list[CurvePoint] = []
    running = 0  # successes among the last `window`
    averages = []
    for i, ok in enumerate(wins):
        running += ok - (wins[i - window] if i >= window else 0)
        averages.append(running / min(i + 1, window))
    for i in keep:
        e = online[i]
        curve.append(CurvePoint(index=i + 1, robot_id=e.robot_id, episode_id=e.episode_id, finished=e.finished,
                                success=wins[i], moving_average=averages[i],
                                policy_version=e.policy_version, purpose=e.purpose))
    by_version: dict[int, list[EpisodeSummary]] = {}
    for e in online:
        if e.policy_version is not None:
            by_version.setdefault(e.policy_version, []).append(e)
    versions = []
    for v in sorted(by_version):
        eps = by_version[v]
        n_wins = sum(e.outcome == "success" for e in eps)
        evals = [e for e in eps if e.purpose == "eval"]
        eval_wins = sum(e.outcome == "success" for e in evals)
        versions.append(VersionPoint(policy_version=v, episodes=len(eps), successes=n_wins,
                                     success_rate=n_wins / len(eps), eval_episodes=len(evals),
                                     eval_success_rate=eval_wins / len(evals) if evals else None))
    return curve, versions, total


# ---------------------------------------------------------------- endpoints


@router.get("/", include_in_schema=False)
def index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


@router.get("/v1/episodes", response_model=EpisodeList, dependencies=_auth)
def list_episodes(
    ctx: UIContext = Depends(_context),
    source: str | None = Query(default=None, description='"online", "expert", "eval"; all if omitted'),
    robot_id: str | None = Query(default=None, pattern=ID_PATTERN),
    limit: int = Query(default=100, ge=1, le=2000),
    offset: int = Query(default=0, ge=0),
) -> EpisodeList:
    """Stored (complete) episodes, newest first."""
    eps = [e for e in _summaries(ctx)
           if (source is None or e.source == source) and (robot_id is None or e.robot_id == robot_id)]
    eps.reverse()
    return EpisodeList(total=len(eps), episodes=eps[offset: offset + limit])


def _load_meta(ctx: UIContext, robot_id: str, episode_id: str) -> dict:
    try:
        meta = ctx.store.read_meta(robot_id, episode_id)
    except StoreError:
        meta = None
    if meta is None:
        raise HTTPException(404, f"no stored episode {robot_id}/{episode_id}")
    return meta


@router.get("/v1/episodes/{robot_id}/{episode_id}", response_model=EpisodeDetail, dependencies=_auth)
def episode_detail(robot_id: str = RobotIdParam, episode_id: str = EpisodeIdParam,
                   ctx: UIContext = Depends(_context)) -> EpisodeDetail:
    meta = _load_meta(ctx, robot_id, episode_id)
    episode = ctx.store.load(robot_id, episode_id)
    steps = [StepSummary(step=int(s["step"]), policy_version=s.get("policy_version"),
                         chunk_index=s.get("chunk_index"), state=list(s.get("state") or []),
                         action=list(s.get("action") or []), t_capture=s.get("t_capture"),
                         safety=dict(s.get("safety") or {}))
             for s in episode.steps]
    summary = _summary(ctx, {**meta, "robot_id": robot_id, "episode_id": episode_id},
                       ctx.store.episode_dir(robot_id, episode_id))
    pending = _pending_relabels(ctx).get((robot_id, episode_id))
    return EpisodeDetail(summary=summary.model_copy(update={"relabel_pending": pending}), meta=meta, steps=steps)


@router.get("/v1/episodes/{robot_id}/{episode_id}/frames/{step}/{camera}.jpg", dependencies=_auth,
            response_class=Response,
            responses={200: {"content": {"image/jpeg": {}}, "description": "the stored JPEG frame"}})
def episode_frame(robot_id: str = RobotIdParam, episode_id: str = EpisodeIdParam,
                  step: int = PathParam(ge=0, le=10_000_000), camera: str = PathParam(pattern=ID_PATTERN),
                  ctx: UIContext = Depends(_context)) -> Response:
    """A stored frame, for replay. Ids are checked against the store's id pattern (no '..', no '/')."""
    try:
        ep_dir = ctx.store.episode_dir(robot_id, episode_id)
        data = (ep_dir / "frames" / f"{step:05d}_{camera}.jpg").read_bytes()
    except (StoreError, FileNotFoundError, NotADirectoryError):
        raise HTTPException(404, f"no frame {step} of camera {camera!r} in {robot_id}/{episode_id}") from None
    # Stored frames never change: let the browser keep them while replaying back and forth.
    return Response(data, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=3600"})


@router.post("/v1/episodes/{robot_id}/{episode_id}/relabel", response_model=RelabelQueued,
             dependencies=_auth, status_code=202)
def relabel_episode(body: RelabelRequest, robot_id: str = RobotIdParam, episode_id: str = EpisodeIdParam,
                    ctx: UIContext = Depends(_context)) -> RelabelQueued:
    """Queue a label correction for the learner (which owns the store): an atomic inbox file."""
    meta = _load_meta(ctx, robot_id, episode_id)  # only episodes that ended can be relabelled
    if is_dry_run(meta):
        raise HTTPException(409, f"episode {robot_id}/{episode_id} is a dry run (the arm did not move): "
                                 "it cannot be labelled and is never trained on")
    outcome = "aborted" if body.outcome == "discard" else body.outcome
    ctx.inbox.mkdir(parents=True, exist_ok=True)
    path = ctx.inbox / f"relabel-{uuid.uuid4().hex}.json"
    write_json_atomic(path, {"robot_id": robot_id, "episode_id": episode_id, "outcome": outcome,
                             "requested": time.time()})
    return RelabelQueued(robot_id=robot_id, episode_id=episode_id, outcome=outcome, inbox_file=path.name)


def _serving_version(request: Request) -> int | None:
    holder = getattr(request.app.state, "holder", None)  # the server's PolicyHolder, if this app has one
    if holder is None:
        return None
    policy = holder.policy
    return None if policy is None else int(policy.version)


@router.get("/v1/learning", response_model=LearningView, dependencies=_auth)
def learning(request: Request, ctx: UIContext = Depends(_context),
             max_points: int = Query(default=800, ge=2, le=100_000,
                                     description="most curve points returned (a canvas is ~1000 px wide)"),
             ) -> LearningView:
    """The learner's status.json plus success curves computed from the stored episodes' metadata."""
    episodes = _summaries(ctx)
    curve, versions, total = learning_curves(episodes, max_points=max_points)
    status, age = _read_status(ctx)
    counts = Counter(str(e.outcome) for e in episodes if e.source != "expert")
    return LearningView(status=status, status_age_s=age, curve_total=total, curve=curve, versions=versions,
                        outcome_counts=dict(counts),
                        expert_episodes=sum(e.source == "expert" for e in episodes),
                        serving_version=_serving_version(request))


def mount(app: FastAPI, config: Any = None) -> None:
    """Add the operator page to ``app``. ``config`` (a DeploymentConfig) defaults to ``app.state.config``,
    read at the first request, so this may be called before the server fills app.state."""
    if config is not None:
        app.state.ui = UIContext(run_dir=Path(config.run_dir))
    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=STATIC_DIR), name="ui-static")


__all__ = ["router", "mount", "learning_curves", "UIContext", "STATIC_DIR",
           "EpisodeSummary", "EpisodeList", "EpisodeDetail", "LearningView", "RelabelRequest",
           "RelabelQueued"]
