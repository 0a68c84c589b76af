"""Which task the next episode runs: the robot's list (``robot.tasks``) and the operator's choice.

The operator page sets the next episode's task (a name from the list) or types an instruction
(``server/scene.py``); the robot takes it when the next episode starts and keeps it until the operator
sets another. The backend decides whether it can run it: a simulator refuses an instruction it has
no task for (``sim.faults.SimulatedRobot.new_episode_for``), the Franka takes any instruction (the
policy is given it). A refused choice leaves the current task in force and is reported to the page.
"""

from __future__ import annotations

from collections.abc import Callable

from deployment.robot import TaskOption


class TaskChoice:
    """The task in force. ``check(instruction)`` raises ValueError when the backend cannot run it; it
    returns the backend's name of the task the instruction names (None: no name of its own)."""

    def __init__(self, options: list[TaskOption], task: str, instruction: str = "",
                 check: Callable[[str], str | None] | None = None):
        self.options = {t.name: t.instruction for t in options}
        self.task = task
        self.instruction = instruction or self.options.get(task, "")
        self.check = check

    def offer(self) -> list[dict]:
        return [{"name": name, "instruction": instruction} for name, instruction in self.options.items()]

    def choose(self, task: str | None, instruction: str | None) -> None:
        """Set the next episode's task: a name of the list (its instruction unless one is given) or
        an instruction alone (the task name stays). ValueError (the state unchanged) if refused."""
        if task is not None and task not in self.options:
            raise ValueError(f"no task {task!r} on this robot (its tasks: {sorted(self.options)})")
        name = self.task if task is None else task
        text = (instruction or "").strip() or (self.options.get(name, "") if task is not None else self.instruction)
        if text and self.check is not None:
            named = self.check(text)
            if task is None and named is not None:  # a typed instruction: the simulator's task it names
                name = named
        self.task, self.instruction = name, text


def simulator_choice(robot, options: list[TaskOption], task: str, task_names: tuple[str, ...]) -> TaskChoice:
    """A simulator's tasks: the deployment's list, else each of its own task names."""
    from sim.faults import normalize_instruction

    def check(instruction: str) -> str:
        name = robot.task_for_instruction(normalize_instruction(instruction))
        if name is None:
            raise ValueError(f"the {type(robot).__name__} has no task for the instruction {instruction!r}; it "
                             f"knows e.g. {robot.example_instructions()}")
        return name

    offered = options or [TaskOption(name=name) for name in task_names]
    if task not in {t.name for t in offered}:
        offered = [TaskOption(name=task), *offered]
    return TaskChoice(offered, task, check=check)


def franka_choice(options: list[TaskOption], task: str, instruction: str) -> TaskChoice:
    """The Franka's tasks: the deployment's list, else robot.task with robot.instruction."""
    offered = options or [TaskOption(name=task, instruction=instruction)]
    if task not in {t.name for t in offered}:
        task = offered[0].name
    choice = TaskChoice(offered, task, instruction)
    if not choice.instruction:
        raise ValueError("the franka backend needs an instruction (--instruction, robot.instruction, or an "
                         "instruction for each of robot.tasks)")
    return choice
