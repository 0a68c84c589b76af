"""The phase loop with learner.algorithm recap (learner/loop.py), in process on the tiny VLA and the
real registry: collect -> value -> labels -> sft -> a published "recap" version, each phase in
status.json; with nothing to condition on it waits and publishes nothing; a backbone whose prompt
cannot take the indicator stops the learner with a clear error before anything is trained -- but
runs AWR (recap_weighting awr, no indicator), which publishes an ordinary version."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from recap_prompt import WordPrompt
from test_learner_loop import add_episode, config_for, run_dir, run_in_thread, template, wait_for  # noqa: F401

from episodes.status import StatusBoard
from learner.loop import PhaseLoop
from learner.trainer import Trainer
from vla.advantage import META_KEY, check_prompt_takes_indicator
from vla.registry import CheckpointRegistry

torch.set_num_threads(1)
RECAP = {"algorithm": "recap", "recap": {"episodes_per_iteration": 2, "value_steps": 20}, "max_iterations": 1,
         "sft": {"batch_size": 8}}


class PhaseRecorder(StatusBoard):
    """The real status board; also remembers every phase it was set to, in order."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.phases: list[str] = []

    def set(self, **fields):
        if "phase" in fields and (not self.phases or self.phases[-1] != fields["phase"]):
            self.phases.append(fields["phase"])
        return super().set(**fields)


def _one_iteration(loop, root, status) -> dict:
    """Run the loop until one labelled success and one failure made it publish; the version's meta."""
    t, out = run_in_thread(loop)
    for i, outcome in enumerate(["success", "failure"]):
        loop.episode_changed(add_episode(root, f"e{i}", outcome))
    t.join(120)
    assert out == [0], out
    assert status.phases == ["collect", "value", "labels", "sft", "idle"]
    reg = CheckpointRegistry(root / "checkpoints")
    meta = reg.read_meta(reg.latest())
    assert reg.latest() == 2 and meta["phase"] == "recap"
    return meta


def test_a_recap_iteration_goes_through_its_phases_and_publishes(run_dir):  # noqa: F811
    status = PhaseRecorder(run_dir / "status.json", 0.05)
    loop = PhaseLoop(config_for(run_dir, **RECAP), run_dir, status=status, poll_s=0.05)
    meta = _one_iteration(loop, run_dir, status)
    assert meta["kind"] == "full"
    assert meta[META_KEY] == {"format": 1, "indicator": True, "guidance": 1.0}
    assert meta["metrics"]["labels_positive_fraction"] > 0
    state = json.loads((run_dir / "learner_state.json").read_text())
    assert state["iteration"] == 1 and state["pending"] is None and sorted(state["consumed"]) == ["r1/e0", "r1/e1"]
    labels = json.loads((run_dir / "recap" / "labels-it000.json").read_text())
    assert labels["made_by_version"] == 1 and labels["published_version"] == 2
    st = json.loads((run_dir / "status.json").read_text())
    assert [(h["phase"], h["version"]) for h in st["history"]] == [("bootstrap", 1), ("recap", 2)]


def test_with_nothing_to_imitate_it_waits_and_publishes_nothing(run_dir):  # noqa: F811
    shutil.rmtree(run_dir / "episodes")  # no demonstrations: only the robot's failures
    status = StatusBoard(run_dir / "status.json", 0.05)
    loop = PhaseLoop(config_for(run_dir, **RECAP), run_dir, status=status, poll_s=0.05)
    t, out = run_in_thread(loop)
    for i in range(2):
        loop.episode_changed(add_episode(run_dir, f"f{i}", "failure"))
    assert wait_for(lambda: json.loads((run_dir / "status.json").read_text()).get("waiting_for") == "demonstrations")
    loop.shutdown.event.set()
    t.join(30)
    assert out == [0], out
    assert CheckpointRegistry(run_dir / "checkpoints").versions() == [1]
    st = json.loads((run_dir / "status.json").read_text())
    assert st["phase"] == "collect" and "waiting for demonstrations" in st["detail"]


def test_a_backbone_whose_prompt_cannot_take_the_indicator_stops_the_learner(run_dir):  # noqa: F811
    class WordTrainer(Trainer):
        def resume(self, version=None):
            out = super().resume(version)
            self.model.preprocessor = WordPrompt()  # as a tokenizer without "positive"/"negative"
            return out

    loop = PhaseLoop(config_for(run_dir, **RECAP), run_dir, trainer_factory=WordTrainer, poll_s=0.05)
    with pytest.raises(RuntimeError, match="recap cannot run on this backbone.*cannot take the advantage indicator"):
        loop.run()
    assert CheckpointRegistry(run_dir / "checkpoints").versions() == [1]


class CutPrompt:
    """The backbone's own prompt behind a 21-character text window: it cuts the indicator off
    ("pick up the red block" + anything reads the same), as a backbone with a short text limit would."""

    def __init__(self, inner, limit: int = len("pick up the red block")):
        self.inner, self.limit = inner, limit

    def __call__(self, images, instructions):
        return self.inner(images, [t[:self.limit] for t in instructions])

    def text_inputs(self, instruction: str):
        return self.inner.text_inputs(instruction[:self.limit])

    def __getattr__(self, name):
        if name == "instruction_ids":  # a language encoder's tokens (vla/language.py): cut the same way
            read = getattr(self.inner, name)  # AttributeError where the backbone reads its own prompt
            return lambda instruction: read(instruction[:self.limit])
        return getattr(self.inner, name)


def test_awr_runs_the_same_phases_on_any_backbone_and_publishes_an_ordinary_version(run_dir):  # noqa: F811
    class CutTrainer(Trainer):  # a backbone whose prompt cannot take the indicator: AWR needs none
        def resume(self, version=None):
            out = super().resume(version)
            self.model.preprocessor = CutPrompt(self.model.preprocessor)
            return out

    status = PhaseRecorder(run_dir / "status.json", 0.05)
    probe = Trainer(config_for(run_dir), run_dir)
    probe.resume()
    with pytest.raises(ValueError, match="cannot take the advantage indicator"):  # RECAP could not run on it
        check_prompt_takes_indicator(CutPrompt(probe.model.preprocessor))
    loop = PhaseLoop(config_for(run_dir, **{**RECAP, "recap": {**RECAP["recap"], "weighting": "awr"}}), run_dir, status=status,
                     trainer_factory=CutTrainer, poll_s=0.05)
    meta = _one_iteration(loop, run_dir, status)
    assert META_KEY not in meta
    assert 0 < meta["metrics"]["sft_awr_ess_fraction"] <= 1
    labels = json.loads((run_dir / "recap" / "labels-it000.json").read_text())
    assert labels["published_version"] == 2 and "awr_ess_fraction" in labels
