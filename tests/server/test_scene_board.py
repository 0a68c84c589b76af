"""server/scene.py's SceneBoard on its own: what the page sees of a robot between episodes."""

import asyncio

from server.scene import NextEpisodeIn, NextTaskIn, SceneBoard


def test_a_refusal_reported_after_the_page_set_a_new_task_does_not_hide_that_task():
    board = SceneBoard()
    refused = NextEpisodeIn(task="reach", instruction="reach the red block",
                            refused="task refused: no task for the instruction 'make coffee'")
    asyncio.run(board.between_episodes("arm0", refused))
    assert board.robots["arm0"].view().refused.startswith("task refused")
    view = board.set_next("arm0", NextTaskIn(instruction="reach the blue block"))
    assert view.refused == "" and view.next_instruction == "reach the blue block"
    # the robot's status still carries its old refusal until it takes the new choice
    asyncio.run(board.between_episodes("arm0", refused.model_copy(update={"waiting": True})))
    view = board.robots["arm0"].view()
    assert view.refused == "" and view.next_instruction == "reach the blue block"
    # once it took the choice, what it reports is about that choice
    board.set_ready("arm0")
    answer = asyncio.run(board.between_episodes("arm0", refused.model_copy(update={"waiting": True})))
    assert answer == {"ready": True, "task": None, "instruction": "reach the blue block"}
    later = NextEpisodeIn(task="reach", instruction="reach the blue block", refused="")
    asyncio.run(board.between_episodes("arm0", later))
    assert board.robots["arm0"].view().refused == ""
