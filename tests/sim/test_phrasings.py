"""Held-out phrasings: every mock and MetaWorld task keeps some wordings out of demos and training;
evaluation gives them (and another task's instruction) to a trained policy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from deployment.model import ModelConfig
from learner.evaluate import LANGUAGE_CONDITIONS, given_instructions, language_success
from sim.metaworld import tasks as mw
from sim.mock import tasks as mock
from sim.mock.vec import VecScene
from vla.model import build_model
from vla.normalization import Normalizer
from vla.policy import Policy

SEEDS = range(400)


def held_out_mock_texts() -> set[str]:
    out = set()
    for family, templates in mock.HELD_OUT_TEMPLATES.items():
        for t in templates:
            for c in mock.COLORS:
                for words in ([w for ws in mock.DIRECTION_WORDS.values() for w in ws] if family == "push" else [""]):
                    out.add(t.format(c=c, d=words))
    return out


@pytest.mark.parametrize("family", mock.TASK_NAMES)
def test_mock_training_never_sees_a_held_out_phrasing_and_layouts_do_not_depend_on_it(family):
    held = held_out_mock_texts()
    for seed in SEEDS:
        trained = mock.sample_episode(seed, family)
        assert trained.task.instruction not in held
        every = mock.sample_episode(seed, family, phrasing="all")
        np.testing.assert_array_equal(trained.state.blocks, every.state.blocks)
        assert (trained.task.family, trained.task.color, trained.task.direction) == \
            (every.task.family, every.task.color, every.task.direction)
    assert any(mock.sample_episode(s, family, phrasing="all").task.instruction in held for s in SEEDS)
    assert all(mock.sample_episode(s, family, phrasing="held_out").task.instruction in held for s in SEEDS[:50])


def test_mock_variants_keep_the_task_or_name_another():
    for seed in SEEDS[:100]:
        task = mock.sample_episode(seed, "mixed").task
        reworded, other = mock.phrase(task, "held_out"), mock.other_task_instruction(task)
        assert reworded in held_out_mock_texts() and task.color in reworded
        assert task.color not in other and other not in held_out_mock_texts()
        if task.direction:
            assert mock.DIRECTION_WORDS[task.direction][0] in reworded
    with pytest.raises(ValueError, match="unknown phrasing"):
        mock.phrasing_templates("reach", "paraphrased")


def test_metaworld_training_never_sees_a_held_out_phrasing():
    for name in mw.TASKS:
        assert set(mw.phrases(name, "train")).isdisjoint(mw.phrases(name, "held_out"))
        assert mw.phrases(name, "train") + mw.phrases(name, "held_out") == mw.LANGUAGE[name]
    for seed in SEEDS:
        spec = mw.sample_task(seed, "bench", "all")
        assert spec.instruction in mw.phrases(spec.name, "train")
        assert spec.name == mw.sample_task(seed, "bench", "all", phrasing="held_out").name
        assert mw.other_task_instruction(spec.name, seed) not in mw.LANGUAGE[spec.name]


def test_evaluation_gives_each_condition_its_instruction_and_scores_the_episode_task(tiny_dir):
    vec = VecScene(6, image_size=96)
    vec.reset(range(6), "mixed")
    given = {c: given_instructions(vec, list(range(6)), c) for c in LANGUAGE_CONDITIONS}
    assert given["trained"] == [t.instruction for t in vec.tasks]
    for t, reworded, other in zip(vec.tasks, given["held_out_phrasing"], given["wrong_instruction"], strict=True):
        assert reworded != t.instruction and t.color in reworded
        assert t.color not in other
    torch.manual_seed(0)
    policy = Policy(build_model(ModelConfig(), backbone_dir=tiny_dir), Normalizer.identity())
    rates = language_success(policy, n=3, task="reach", max_steps=4)
    assert set(rates) == set(LANGUAGE_CONDITIONS) and all(0.0 <= r <= 1.0 for r in rates.values())


def test_metaworld_evaluation_gives_each_condition_its_instruction():
    from sim.metaworld.vec import MetaWorldVec

    seeds = [3, 4, 5]
    with MetaWorldVec(3, image_size=32, seeds=seeds, task="mt10") as vec:
        given = {c: given_instructions(vec, seeds, c) for c in LANGUAGE_CONDITIONS}
        assert given["trained"] == list(vec.instructions)
        for name, trained, reworded, other in zip(vec.task_names, *given.values(), strict=True):
            assert trained in mw.phrases(name, "train") and reworded in mw.phrases(name, "held_out")
            assert other not in mw.LANGUAGE[name]
