"""Scripted MetaWorld demonstrations into the episode store, exactly as the mock's demos are stored.

    vlaloop demos --backend metaworld --task button-press-topdown --n 20 [--noise 0.1] [--seed 0]

Episodes go to ``<run_dir>/episodes/expert/<task>-s<seed>/`` with ``source: "expert"``,
``label_source: "auto"`` and MetaWorld's success as the outcome; only successes are kept unless
``keep_failures``; recording continues with the next seeds until ``n`` are kept. ``task`` may be
a task set (``mt10``, ``bench``): each seed then draws its task from the set's ``split``.
"""

from __future__ import annotations

from episodes.store import EpisodeStore
from sim.demos import KeptDemos, record_expert_demos, record_expert_episode
from sim.metaworld.actions import executed_action
from sim.metaworld.backend import MetaWorldRobot
from sim.metaworld.expert import DEFAULT_NOISE

ROBOT_ID = "expert"


def record_episode(robot: MetaWorldRobot, seed: int, task: str, split: str = "train") -> tuple[list, bool]:
    """Run the expert for one episode; returns ([(record, frames)], success) without storing."""
    return record_expert_episode(robot, seed, task, split, executed_action)


def record_demos(store: EpisodeStore, task: str = "button-press-topdown", n: int = 20, seed: int = 0,
                 noise: float = DEFAULT_NOISE, image_size: int = 96, cameras: tuple[str, ...] = ("front",),
                 keep_failures: bool = False, split: str = "train", robot_id: str = ROBOT_ID,
                 progress: bool = False, max_attempts: int | None = None,
                 robot: MetaWorldRobot | None = None) -> KeptDemos:
    """Record expert episodes with seeds seed, seed+1, ... until ``n`` are kept (at most
    ``max_attempts``, default 2n+10, tried); returns the metadata of the kept episodes (also of
    those already in the store). Each returned list carries the attempts in ``.attempts``."""
    own = robot is None
    robot = robot or MetaWorldRobot(task=task, image_size=image_size, cameras=cameras, expert_noise=noise,
                                    split=split)
    try:
        return record_expert_demos(robot, store, executed_action, backend="metaworld", task=task, n=n,
                                   seed=seed, noise=noise, image_size=image_size, cameras=cameras,
                                   keep_failures=keep_failures, split=split, robot_id=robot_id,
                                   progress=progress, max_attempts=max_attempts)
    finally:
        if own:
            robot.close()
