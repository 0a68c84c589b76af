"""Between two episodes: the operator's scene reset ("ready") and the next episode's task.

After an episode's label the robot homes its arm and asks the server what comes next
(``POST /v1/robots/{id}/next_episode``, robot token). A robot that waits for a scene reset
(``robot.scene_reset: operator``) long-polls until the operator presses **Ready** on the page
(``POST /v1/robots/{id}/ready``, operator token) or the button on its own device; a simulator asks
without waiting. Either way the answer carries the task the operator set for the next episode
(``POST /v1/robots/{id}/next_task``: a task name from the robot's list, or a typed instruction);
the robot keeps it for the following episodes until the operator sets another. The robot checks
the task itself (the mock refuses an instruction it has no task for) and says so in its next call,
which the page shows (``GET /v1/scene``). docs/operator_page.md.

Where the operator set nothing, the next task is drawn from the learner's curriculum
(``runs/<run>/curriculum.json``, ``deployment.curriculum``; a small file read once per episode start).
All state lives on the server's event loop; nothing here blocks.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from dataclasses import dataclass, field
from pathlib import Path

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi import Path as PathParam
from pydantic import BaseModel, ConfigDict, Field, model_validator

from deployment.curriculum import CurriculumError, next_task, read_curriculum
from protocol.messages import ID_PATTERN
from server.auth import require_operator, require_robot

router = APIRouter(prefix="/v1", tags=["scene"])
RobotIdParam = PathParam(pattern=ID_PATTERN)
log = logging.getLogger(__name__)
MAX_WAIT_S = 30.0  # one long-poll at most; the robot asks again


class TaskOffer(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=128)
    instruction: str = Field(default="", max_length=512)


class NextEpisodeIn(BaseModel):
    """A robot between two episodes: whether it waits for the operator's ready, and what it offers."""

    model_config = ConfigDict(extra="forbid")
    waiting: bool = Field(default=False, description="the robot waits for the operator's ready (scene reset)")
    wait_s: float = Field(default=0.0, ge=0, le=MAX_WAIT_S, description="long-poll this long for the ready")
    tasks: list[TaskOffer] | None = Field(default=None, max_length=256, description="the tasks it may be given")
    task: str | None = Field(default=None, max_length=128, description="the task it runs now")
    instruction: str | None = Field(default=None, max_length=512, description="the instruction it runs now")
    refused: str = Field(default="", max_length=1000, description="why it refused the task last set")


class NextTaskIn(BaseModel):
    """The operator's choice for the robot's next episode: a task of its list, or a typed instruction."""

    model_config = ConfigDict(extra="forbid")
    task: str | None = Field(default=None, min_length=1, max_length=128)
    instruction: str | None = Field(default=None, min_length=1, max_length=512)

    @model_validator(mode="after")
    def _one_given(self) -> NextTaskIn:
        if self.task is None and self.instruction is None:
            raise ValueError("give a task name or an instruction")
        return self


class SceneView(BaseModel):
    robot_id: str
    waiting_reset: bool = Field(description="the arm is home and the robot waits for the operator's ready")
    waiting_since: float | None = Field(description="unix time the wait began")
    tasks: list[TaskOffer]
    task: str | None = Field(description="the task the robot runs now")
    instruction: str | None
    next_task: str | None = Field(description="set by the operator, not yet taken by the robot")
    next_instruction: str | None
    refused: str = Field(description="the robot's reason for refusing the last task set (empty: none)")


@dataclass
class _Between:
    robot_id: str
    waiting_since: float | None = None
    ready: bool = False
    event: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[TaskOffer] = field(default_factory=list)
    task: str | None = None
    instruction: str | None = None
    next_task: str | None = None
    next_instruction: str | None = None
    refused: str = ""

    def view(self) -> SceneView:
        return SceneView(robot_id=self.robot_id, waiting_reset=self.waiting_since is not None,
                         waiting_since=self.waiting_since, tasks=self.tasks, task=self.task,
                         instruction=self.instruction, next_task=self.next_task,
                         next_instruction=self.next_instruction, refused=self.refused)


class SceneBoard:
    """Per robot: is it waiting for a scene reset, its tasks, the operator's choice for its next episode."""

    def __init__(self, run_dir: str | Path | None = None, rng: random.Random | None = None) -> None:
        self.robots: dict[str, _Between] = {}
        # where the learner writes curriculum.json (learner.curriculum): the next task of a robot the
        # operator set none for is drawn from its weights; None or no file: no draw
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.rng = rng or random.Random()

    def _robot(self, robot_id: str) -> _Between:
        r = self.robots.get(robot_id)
        if r is None:
            r = self.robots[robot_id] = _Between(robot_id)
        return r

    async def between_episodes(self, robot_id: str, body: NextEpisodeIn) -> dict:
        """The robot's call between two episodes; waits (up to wait_s) for the operator's ready."""
        r = self._robot(robot_id)
        if body.tasks is not None:
            r.tasks = list(body.tasks)
        r.task, r.instruction = body.task, body.instruction
        # the robot's refusal is of the choice it last took: a newer choice the page set since wins
        pending = r.next_task is not None or r.next_instruction is not None
        r.refused = "" if pending else body.refused
        if body.waiting:
            if r.waiting_since is None:
                r.waiting_since = time.time()
            if not r.ready and body.wait_s > 0:
                r.event.clear()
                try:
                    await asyncio.wait_for(r.event.wait(), body.wait_s)
                except TimeoutError:
                    pass
            if not r.ready:
                return {"ready": False, "task": None, "instruction": None}
        # ready (or not waiting at all): the operator's choice goes with this answer, once
        r.ready, r.waiting_since = False, None
        task = r.next_task
        if task is None and r.next_instruction is None:  # the operator's choice wins over the draw
            task = self.curriculum_task(r)
        answer = {"ready": True, "task": task, "instruction": r.next_instruction}
        r.next_task = r.next_instruction = None
        return answer

    def curriculum_task(self, r: _Between) -> str | None:
        """A draw from the learner's curriculum over the robot's own tasks (None: no curriculum, or
        none of its tasks in it). A broken file is logged and ignored: the robot keeps its own choice."""
        if self.run_dir is None:
            return None
        try:
            cur = read_curriculum(self.run_dir)
        except CurriculumError as e:
            log.warning("curriculum ignored: %s", e)
            return None
        if cur is None:
            return None
        names = {t.name for t in r.tasks}
        weights = {t: w for t, w in cur["weights"].items() if t in names and w > 0}
        if not weights:
            return None
        return next_task({"weights": weights}, self.rng, pinned=cur.get("pinned") if cur.get("pinned") in weights
                         else None)

    def set_ready(self, robot_id: str) -> SceneView:
        r = self.robots.get(robot_id)
        if r is None or r.waiting_since is None:
            raise LookupError(f"robot {robot_id!r} is not waiting for a scene reset")
        r.ready = True
        r.event.set()
        return r.view()

    def set_next(self, robot_id: str, body: NextTaskIn) -> SceneView:
        r = self.robots.get(robot_id)
        if r is None:
            raise KeyError(robot_id)
        names = [t.name for t in r.tasks]
        if body.task is not None and names and body.task not in names:
            raise ValueError(f"task: robot {robot_id!r} has no task {body.task!r} (its tasks: {names})")
        r.next_task, r.next_instruction, r.refused = body.task, body.instruction, ""
        return r.view()

    def views(self) -> list[SceneView]:
        return [r.view() for _, r in sorted(self.robots.items())]


def board_of(request: Request) -> SceneBoard:
    return request.app.state.scene


@router.post("/robots/{robot_id}/next_episode", dependencies=[Depends(require_robot)])
async def next_episode(request: Request, body: NextEpisodeIn, robot_id: str = RobotIdParam,
                       board: SceneBoard = Depends(board_of)) -> dict:
    limit = request.app.state.config.server.label_poll_max_s  # the same cap as the label long-poll
    return await board.between_episodes(robot_id, body.model_copy(update={"wait_s": min(body.wait_s, limit)}))


@router.post("/robots/{robot_id}/ready", dependencies=[Depends(require_operator)],
             responses={409: {"description": "the robot is not waiting for a scene reset"}})
async def post_ready(robot_id: str = RobotIdParam, board: SceneBoard = Depends(board_of)) -> SceneView:
    try:
        return board.set_ready(robot_id)
    except LookupError as e:
        raise HTTPException(409, str(e)) from None


@router.post("/robots/{robot_id}/next_task", dependencies=[Depends(require_operator)],
             responses={404: {"description": "unknown robot"}, 422: {"description": "not one of its tasks"}})
async def post_next_task(body: NextTaskIn, robot_id: str = RobotIdParam,
                         board: SceneBoard = Depends(board_of)) -> SceneView:
    try:
        return board.set_next(robot_id, body)
    except KeyError:
        raise HTTPException(404, f"robot_id: unknown robot {robot_id!r} (not seen between episodes yet)") from None
    except ValueError as e:
        raise HTTPException(422, str(e)) from None


@router.get("/scene", dependencies=[Depends(require_operator)])
async def list_scene(board: SceneBoard = Depends(board_of)) -> list[SceneView]:
    return board.views()
