"""The curriculum end to end across the process boundary: the learner's code writes curriculum.json
from a real episode store (learner.curriculum.publish_for_deployment), a real server (uvicorn in a
thread) reads it and hands each robot's next episode a task drawn from those weights, over the
robot's own tasks; an operator's choice wins; no curriculum file leaves the robot its own choice."""

from __future__ import annotations

from collections import Counter

import httpx
import pytest

from bench.harness import ServerThread, publish_tiny
from deployment.config import DeploymentConfig
from deployment.robot import TaskOption
from deployment.server import ServerConfig
from episodes.store import EpisodeStore
from learner.curriculum import publish_for_deployment

ROBOT, OPERATOR = "robot-token-cur", "operator-token-cur"
TASKS = [{"name": "reach", "instruction": ""}, {"name": "push", "instruction": ""}]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    import torch

    torch.set_num_threads(1)
    run = tmp_path_factory.mktemp("run")
    publish_tiny(run)
    config = DeploymentConfig(run_dir=str(run), server=ServerConfig(robot_token=ROBOT, operator_token=OPERATOR))
    with ServerThread(config) as srv:
        srv.wait_ready(60)
        yield srv, run, config


def _store_outcomes(run, per_task: dict[str, list[str]]) -> None:
    store = EpisodeStore(run / "episodes")
    for task, outcomes in per_task.items():
        for i, outcome in enumerate(outcomes):
            store.append_step("arm0", f"{task}-{i}", 0, {"policy_version": 1}, {})
            store.finish("arm0", f"{task}-{i}", {"source": "online", "outcome": outcome, "label_source": "auto",
                                                  "n_steps": 1, "task": task, "instruction": task})


def _next(robot: httpx.Client, robot_id: str) -> dict:
    r = robot.post(f"/v1/robots/{robot_id}/next_episode", json={"tasks": TASKS, "task": "reach"})
    assert r.status_code == 200, r.text
    return r.json()


def test_the_server_draws_the_next_task_from_the_learners_weights(server):
    srv, run, config = server
    robot = httpx.Client(base_url=srv.url, headers={"authorization": f"Bearer {ROBOT}"}, timeout=30)
    operator = httpx.Client(base_url=srv.url, headers={"authorization": f"Bearer {OPERATOR}"}, timeout=30)
    assert _next(robot, "r-none")["task"] is None  # no curriculum yet: the robot keeps its own choice
    # reach solved, push never: VLA-RL's rule practises push far more (the floor keeps reach alive)
    _store_outcomes(run, {"reach": ["success"] * 10, "push": ["failure"] * 10})
    config.robot.tasks = [TaskOption(**t) for t in TASKS]
    config.learner.curriculum.enabled = True
    doc = publish_for_deployment(config, run, EpisodeStore(run / "episodes").list_episodes())
    assert doc["weights"]["push"] > 0.9 > 0.05 <= doc["weights"]["reach"]
    drawn = Counter(_next(robot, "r1")["task"] for _ in range(200))
    assert set(drawn) <= {"reach", "push"} and drawn["push"] > 160 and drawn["reach"] >= 1
    # the operator's choice wins over the draw, for that one episode
    assert operator.post("/v1/robots/r1/next_task", json={"task": "reach"}).status_code == 200
    assert _next(robot, "r1")["task"] == "reach"
    robot.close()
    operator.close()


def test_off_or_a_single_task_writes_no_curriculum(server, tmp_path):
    _, _, config = server
    off = config.model_copy(deep=True)
    off.learner.curriculum.enabled = False
    assert publish_for_deployment(off, tmp_path, []) is None and not (tmp_path / "curriculum.json").exists()
    one = config.model_copy(deep=True)
    one.learner.curriculum.enabled, one.robot.tasks = True, [TaskOption(name="reach")]
    assert publish_for_deployment(one, tmp_path, []) is None
