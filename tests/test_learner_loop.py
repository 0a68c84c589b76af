"""The phase loop (learner/loop.py) in-process, driving a Trainer that follows the contract of
learner/trainer.py on the real tiny VLA and the real checkpoint registry. Covers the schedule,
which episodes feed RL, status.json, and the resume rule at every crash point of a round."""

from __future__ import annotations

import json
import threading
import time

import pytest
import torch

from learner.loop import LearnerState, PhaseLoop
from learner.status import StatusBoard
from learner.store import EpisodeStore
from protocol import encode_jpeg
from vla.registry import CheckpointRegistry, publish
from vlaloop.config import load_config

torch.set_num_threads(1)
JPG = encode_jpeg(__import__("numpy").full((8, 8, 3), 90, "uint8"))


class Crash(BaseException):
    """Stands in for SIGKILL at a chosen point (the subprocess tests use the real signal); a
    BaseException, so nothing in the loop can catch it, as nothing can catch a SIGKILL."""


@pytest.fixture(scope="module")
def model():
    from vla.model import build_model

    return build_model(load_config(environ={}).model)


def make_trainer_class(model, crash_at: str | None = None, crash_round: int = 0):
    from vla.normalization import Normalizer

    class ContractTrainer:
        calls: list = []

        def __init__(self, config, run_dir, log=None):
            self.registry = CheckpointRegistry(run_dir / "checkpoints")
            self.store = EpisodeStore(run_dir / "episodes")
            self.model, self.log, self.rounds = model, log, 0

        def has_policy(self):
            return self.registry.latest() is not None

        def bootstrap(self, progress=True):
            assert self.store.list_episodes(source="expert")
            return self.publish("full", "bootstrap", {"bc_loss": 1.0})

        def resume(self):
            from vla.registry import load_into

            load_into(self.model, self.registry)
            return self.registry.latest()

        def rl_round(self, episodes):
            self.rounds += 1
            if crash_at == "rl_round" and self.rounds > crash_round:
                raise Crash("during rl_round")
            ContractTrainer.calls.append(("rl", [e["episode_id"] for e in episodes]))
            with torch.no_grad():  # a real, tiny change to the head that the version carries
                next(self.model.heads.parameters()).add_(0.001)
            wins = sum(e["outcome"] == "success" for e in episodes)
            return {"policy_loss": 0.5 / self.rounds, "success_rate": wins / len(episodes),
                    "n_transitions": 10 * len(episodes)}

        def sft_phase(self, progress=True):
            if crash_at == "sft_phase":
                raise Crash("during sft")
            ContractTrainer.calls.append(("sft", []))
            return {"sft_loss": 0.25, "eval_loss": 0.3, "held_out_loss": float("nan")}

        def publish(self, kind, phase, metrics):
            version = publish(self.registry, self.model, Normalizer.identity(), kind=kind,
                              parent=self.registry.latest(), phase=phase, metrics=metrics)
            if crash_at == "after_publish" and phase == "rl" and self.rounds > crash_round:
                raise Crash("after publish, before the loop committed the round")
            return version

    return ContractTrainer


def add_episode(store: EpisodeStore, robot: str, ep: str, outcome="success", purpose="train", source=None):
    store.append_step(robot, ep, 0, {"policy_version": 1}, {"front": JPG})
    source = source or ("eval" if purpose == "eval" else "online")
    store.finish(robot, ep, {"source": source, "outcome": outcome, "purpose": purpose, "label_source": "auto",
                             "n_steps": 1, "instruction": "reach", "task": "reach", "policy_version": 1})


def config_for(run_dir, **learner):
    return load_config(environ={}, run_dir=str(run_dir)).model_copy(update={
        "learner": load_config(environ={}).learner.model_copy(update={
            "episodes_per_round": 2, "rl_rounds_per_phase": 2, "max_iterations": 1, **learner})})


def run_in_thread(loop: PhaseLoop) -> tuple[threading.Thread, list]:
    out: list = []

    def target():
        try:
            out.append(loop.run())
        except BaseException as e:  # noqa: BLE001 - surfaced to the test
            out.append(e)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    return t, out


def wait_for(pred, timeout=30.0):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if pred():
            return True
        time.sleep(0.02)
    return False


def test_schedule_consumes_only_new_labelled_online_episodes(tmp_path, model):
    store = EpisodeStore(tmp_path / "episodes")
    add_episode(store, "expert", "demo0", source="expert")
    cls = make_trainer_class(model)
    cls.calls = []
    status = StatusBoard(tmp_path / "status.json", 0.05)
    loop = PhaseLoop(config_for(tmp_path), tmp_path, status=status, trainer_factory=cls, poll_s=0.05)
    t, out = run_in_thread(loop)
    assert wait_for(lambda: CheckpointRegistry(tmp_path / "checkpoints").latest() == 1)  # bootstrapped
    # never for RL: eval episodes, aborted (discarded) ones, and an episode that has not ended
    add_episode(store, "r1", "ev1", "success", "eval")
    add_episode(store, "r1", "ab1", "aborted")
    store.append_step("r1", "open1", 0, {}, {"front": JPG})
    for i, outcome in enumerate(["success", "failure", "failure", "success"]):
        add_episode(store, "r1", f"e{i}", outcome)
        loop.episode_changed(store.read_meta("r1", f"e{i}"))
    t.join(60)
    assert out == [0], out
    assert cls.calls == [("rl", ["e0", "e1"]), ("rl", ["e2", "e3"]), ("sft", [])]
    reg = CheckpointRegistry(tmp_path / "checkpoints")
    assert reg.latest() == 4 and [reg.read_meta(v)["kind"] for v in (1, 2, 3, 4)] == ["full", "head", "head", "full"]
    assert [reg.read_meta(v)["phase"] for v in (2, 3, 4)] == ["rl", "rl", "sft"]
    state = json.loads((tmp_path / "learner_state.json").read_text())
    assert state["iteration"] == 1 and state["pending"] is None
    assert state["consumed"] == {"r1/e0": {"iteration": 0, "round": 0, "version": 2},
                                 "r1/e1": {"iteration": 0, "round": 0, "version": 2},
                                 "r1/e2": {"iteration": 0, "round": 1, "version": 3},
                                 "r1/e3": {"iteration": 0, "round": 1, "version": 3}}
    st = json.loads((tmp_path / "status.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert st["phase"] == "idle" and st["policy_version"] == 4 and st["iteration"] == 1
    assert [(h["phase"], h["version"]) for h in st["history"]] == [("bootstrap", 1), ("rl", 2), ("rl", 3), ("sft", 4)]
    assert st["history"][1]["success_rate"] == 0.5 and st["losses"] == {"sft_loss": 0.25, "eval_loss": 0.3,
                                                                       "held_out_loss": None}
    assert (tmp_path / "tb").is_dir() and any((tmp_path / "tb").iterdir())


@pytest.mark.parametrize("crash_at", ["rl_round", "after_publish", "sft_phase"])
def test_restart_after_a_crash_neither_loses_nor_double_counts(tmp_path, model, crash_at):
    store = EpisodeStore(tmp_path / "episodes")
    for i in range(6):
        add_episode(store, "r1", f"e{i}", "success" if i % 2 else "failure")
    reg = CheckpointRegistry(tmp_path / "checkpoints")
    cfg = config_for(tmp_path)
    # first learner: bootstraps, does round 0, then "dies" in round 1 (or in SFT)
    first = make_trainer_class(model, crash_at=crash_at, crash_round=1)
    first.calls = []
    loop = PhaseLoop(cfg, tmp_path, trainer_factory=first, poll_s=0.05)
    add_episode(store, "expert", "d0", source="expert")
    with pytest.raises(Crash):
        loop.run()
    state = LearnerState(tmp_path / "learner_state.json")
    latest_before = reg.latest()
    assert state.pending is not None  # the crash left work in flight
    assert reg.read_meta(latest_before)["kind"] in ("full", "head")  # LATEST names a complete version
    # restart: a fresh loop and trainer on the same run dir
    second = make_trainer_class(model)
    second.calls = []
    loop2 = PhaseLoop(cfg, tmp_path, trainer_factory=second, poll_s=0.05)
    assert loop2.run() == 0
    state = LearnerState(tmp_path / "learner_state.json")
    assert state.pending is None and state.iteration == 1 and reg.latest() > latest_before
    rl_rounds = [r for r in state.data["rounds"] if r["phase"] == "rl"]
    consumed = [k for r in rl_rounds for k in r["episodes"]]
    assert len(consumed) == len(set(consumed)) == 4  # two rounds of two, nothing counted twice
    assert consumed == ["r1/e0", "r1/e1", "r1/e2", "r1/e3"]
    for r in state.data["rounds"]:  # every committed round names a complete version of its phase
        assert reg.read_meta(r["version"])["phase"] == r["phase"]
    if crash_at == "after_publish":  # the version was out: the restart adopts it, does not retrain
        assert second.calls == [("sft", [])]
    elif crash_at == "rl_round":  # round 1 never published: redone on the same episodes
        assert second.calls == [("rl", ["e2", "e3"]), ("sft", [])]
    else:
        assert second.calls == [("sft", [])]
    assert reg.latest() == max(reg.versions())


def test_plateau_schedule_switches_to_sft_early(tmp_path):
    cfg = config_for(tmp_path, rl_schedule="plateau", rl_rounds_per_phase=10, plateau_rounds=2, plateau_delta=0.05)
    loop = PhaseLoop(cfg, tmp_path, trainer_factory=lambda *a, **k: None)
    for rate in [0.2, 0.5, 0.52, 0.51]:
        loop.state.begin("rl", [], None)
        loop.state.commit(len(loop.state.data["rounds"]) + 1, {"success_rate": rate})
        if rate == 0.52:
            assert not loop.plateau()  # one round without gain is not yet a plateau
    assert loop.plateau() and loop.rl_phase_done()
    fixed = PhaseLoop(config_for(tmp_path / "b", rl_rounds_per_phase=10), tmp_path / "b",
                      trainer_factory=lambda *a, **k: None)
    fixed.state.data["rounds"] = loop.state.data["rounds"]
    assert not fixed.plateau() and not fixed.rl_phase_done()


@pytest.mark.parametrize("during", ["training", "publish"])
def test_sigterm_abandons_training_but_not_a_publish(tmp_path, model, during):
    import os
    import signal

    from learner.loop import Shutdown

    store = EpisodeStore(tmp_path / "episodes")
    add_episode(store, "expert", "d0", source="expert")
    for i in range(4):
        add_episode(store, "r1", f"e{i}")
    base = make_trainer_class(model)

    class SignalledTrainer(base):
        def rl_round(self, episodes):
            if during == "training" and self.rounds == 1:  # round 1 "trains" for a long time
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(30)
            return super().rl_round(episodes)

        def publish(self, kind, phase, metrics):
            if during == "publish" and phase == "rl" and self.rounds == 1:  # SIGTERM mid-publish
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.2)
            return super().publish(kind, phase, metrics)

    shutdown = Shutdown()
    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    shutdown.install()
    try:
        loop = PhaseLoop(config_for(tmp_path, rl_rounds_per_phase=3), tmp_path, shutdown=shutdown,
                         trainer_factory=SignalledTrainer, poll_s=0.05)
        t0 = time.time()
        assert loop.run() == 0
        assert time.time() - t0 < 25  # a 30 s "training" would have been abandoned
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    reg = CheckpointRegistry(tmp_path / "checkpoints")
    state = LearnerState(tmp_path / "learner_state.json")
    # round 0 was published and committed (a SIGTERM during its publish waited for it); nothing
    # after it was committed, nothing consumed twice, LATEST on a complete version
    assert reg.latest() == 2 and reg.read_meta(2)["phase"] == "rl"
    assert [r["version"] for r in state.data["rounds"]] == [2]
    assert sorted(state.consumed) == ["r1/e0", "r1/e1"]
    if during == "training":  # round 1 was abandoned mid-training: pending, redone after a restart
        assert state.pending["episodes"] == ["r1/e2", "r1/e3"]
    else:
        assert state.pending is None


def test_a_poison_episode_is_set_aside_and_a_broken_trainer_stops(tmp_path, model):
    store = EpisodeStore(tmp_path / "episodes")
    add_episode(store, "expert", "d0", source="expert")
    for i in range(6):
        add_episode(store, "r1", f"e{i}")
    base = make_trainer_class(model)

    class PoisonTrainer(base):
        broken = False

        def rl_round(self, episodes):
            if self.broken or any(e["episode_id"] == "e1" for e in episodes):
                raise ValueError("chunk length 3 != 4")
            return super().rl_round(episodes)

    base.calls = []
    assert PhaseLoop(config_for(tmp_path), tmp_path, trainer_factory=PoisonTrainer, poll_s=0.05).run() == 0
    state = LearnerState(tmp_path / "learner_state.json")
    assert sorted(state.data["rejected"]) == ["r1/e0", "r1/e1"]
    assert "chunk length" in state.data["rejected"]["r1/e1"]["error"]
    assert base.calls == [("rl", ["e2", "e3"]), ("rl", ["e4", "e5"]), ("sft", [])]
    # a trainer that fails on everything is a bug: the learner stops with the error
    for i in range(6, 12):
        add_episode(store, "r1", f"e{i}")
    PoisonTrainer.broken = True
    with pytest.raises(RuntimeError, match="3 RL rounds in a row failed"):
        PhaseLoop(config_for(tmp_path, max_iterations=2), tmp_path, trainer_factory=PoisonTrainer,
                  poll_s=0.05).run()
