"""The phase loop (learner/loop.py) in process, driving the real Trainer (learner/trainer.py) on the
tiny VLA and the real checkpoint registry, with small settings. Subclasses of the Trainer only add
fault injection. Covers which episodes feed RL, the schedule, status.json, the resume rule at every
crash point of a round and of SFT, SIGTERM, and a poison episode."""

from __future__ import annotations

import json
import shutil
import threading
import time

import pytest
import torch
from test_learner_resume import online_episode

from bench.learner_ingest import SEQ
from deployment.config import load_config
from episodes.status import StatusBoard, read_phase_log
from episodes.store import EpisodeStore
from learner.ingest import Ingest
from learner.loop import LearnerState, PhaseLoop
from protocol.messages import Hello, decode_message, encode_message
from vla.registry import CheckpointRegistry

torch.set_num_threads(1)
SMALL = {"bootstrap": {"demos": 4, "steps": 8}, "sft": {"steps": 6}, "episodes_per_round": 2,
         "rl_rounds_per_phase": 2, "max_iterations": 1, "ppo": {"update_epochs": 1}, "critic_warmup_rounds": 0}


class Crash(BaseException):
    """Stands in for SIGKILL at a chosen point (the subprocess tests use the real signal); a
    BaseException, so nothing in the loop can catch it, as nothing can catch a SIGKILL."""


def config_for(run_dir, **learner):
    base = load_config(environ={}, run_dir=str(run_dir))
    return base.model_copy(update={"learner": base.learner.updated(**SMALL).updated(**learner)})


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A run dir after Stage 0 (the mock's expert demos recorded, v1 published), made once."""
    from learner.trainer import Trainer

    run_dir = tmp_path_factory.mktemp("template") / "run"
    Trainer(config_for(run_dir), run_dir).bootstrap(progress=False)
    return run_dir


@pytest.fixture
def run_dir(template, tmp_path):
    shutil.copytree(template, tmp_path / "run")
    return tmp_path / "run"


def make_trainer_class(crash_at: str | None = None, crash_round: int = 0):
    from learner.trainer import Trainer

    class TestTrainer(Trainer):
        calls: list = []

        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.rounds = 0

        def rl_round(self, episodes, algorithm=None):
            self.rounds += 1
            if crash_at == "rl_round" and self.rounds > crash_round:
                raise Crash("during rl_round")
            TestTrainer.calls.append(("rl", [e["episode_id"] for e in episodes]))
            return super().rl_round(episodes, algorithm)

        def sft_phase(self, progress=True, on_progress=None):
            if crash_at == "sft_phase":
                raise Crash("during sft")
            TestTrainer.calls.append(("sft", []))
            return super().sft_phase(progress=False, **({"on_progress": on_progress} if on_progress else {}))

        def publish(self, kind, phase, metrics):
            version = super().publish(kind, phase, metrics)
            if crash_at == "after_publish" and phase == "rl" and self.rounds > crash_round:
                raise Crash("after publish, before the loop committed the round")
            return version

    TestTrainer.calls = []
    return TestTrainer


def add_episode(run_dir, ep: str, outcome="success", purpose="train", robot="r1", end=True) -> dict | None:
    """A mock episode streamed through the real ingest code (in process) as policy v1 would act."""
    ingest = Ingest(EpisodeStore(run_dir / "episodes"), "h")
    msgs = [Hello(robot_id=robot, config_hash="h"), *online_episode(robot, ep, 700 + int(ep[-1]), 1)]
    msgs[-1] = msgs[-1].model_copy(update={"outcome": outcome, "extra": {
        "purpose": purpose, "mode": "greedy" if purpose == "eval" else "sample"}})
    for seq, msg in enumerate(msgs if end else msgs[:-1]):
        ack = decode_message(ingest.handle(b"t", [SEQ.pack(seq), encode_message(msg)])[1])
        assert ack.ok, ack.error
    return ingest.store.read_meta(robot, ep)


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


def test_schedule_consumes_only_new_labelled_online_episodes(run_dir):
    cls = make_trainer_class()
    status = StatusBoard(run_dir / "status.json", 0.05)
    loop = PhaseLoop(config_for(run_dir), run_dir, status=status, trainer_factory=cls, poll_s=0.05)
    t, out = run_in_thread(loop)
    # never for RL: a greedy eval episode, an aborted (discarded) one, one that has not ended
    add_episode(run_dir, "ev1", "success", "eval")
    add_episode(run_dir, "ab1", "aborted")
    add_episode(run_dir, "open1", end=False)
    for i, outcome in enumerate(["success", "failure", "failure", "success"]):
        loop.episode_changed(add_episode(run_dir, f"e{i}", outcome))  # what the ingest thread does
    t.join(120)
    assert out == [0], out
    assert cls.calls == [("rl", ["e0", "e1"]), ("rl", ["e2", "e3"]), ("sft", [])]
    reg = CheckpointRegistry(run_dir / "checkpoints")
    assert reg.latest() == 4 and [reg.read_meta(v)["kind"] for v in (1, 2, 3, 4)] == ["full", "head", "head", "full"]
    assert [reg.read_meta(v)["phase"] for v in (1, 2, 3, 4)] == ["bootstrap", "rl", "rl", "sft"]
    state = json.loads((run_dir / "learner_state.json").read_text())
    assert state["iteration"] == 1 and state["pending"] is None
    assert state["consumed"] == {"r1/e0": {"iteration": 0, "round": 0, "version": 2},
                                 "r1/e1": {"iteration": 0, "round": 0, "version": 2},
                                 "r1/e2": {"iteration": 0, "round": 1, "version": 3},
                                 "r1/e3": {"iteration": 0, "round": 1, "version": 3}}
    st = json.loads((run_dir / "status.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert st["phase"] == "idle" and st["policy_version"] == 4 and st["iteration"] == 1
    assert [(h["phase"], h["version"]) for h in st["history"]] == [("bootstrap", 1), ("rl", 2), ("rl", 3), ("sft", 4)]
    assert st["history"][1]["success_rate"] == 0.5 and st["history"][2]["success_rate"] == 0.5
    assert "loss" in " ".join(st["losses"]) and st["losses"]["n_expert"] == 4
    assert (run_dir / "tb").is_dir() and any((run_dir / "tb").iterdir())
    # the phase record: each phase with the policy it served and the one it published, in order
    log = read_phase_log(run_dir / "phases.jsonl")
    assert [(p["phase"], p["iteration"], p["round"], p["serving_version"], p["version"]) for p in log["phases"]] == [
        ("rl", 0, 0, 1, 2), ("rl", 0, 1, 2, 3), ("sft", 0, 2, 3, 4)]
    assert [p["trained_on"] for p in log["phases"][:2]] == [["r1/e0", "r1/e1"], ["r1/e2", "r1/e3"]]
    collected = [k for p in log["phases"] for k in p["collected"]] + log["done"]["collected"]
    assert sorted(collected) == [f"r1/e{i}" for i in range(4)]  # each reported episode listed once
    assert log["done"]["version"] == 4 and log["done"]["iterations"] == 1


@pytest.mark.parametrize("crash_at", ["rl_round", "after_publish", "sft_phase"])
def test_restart_after_a_crash_neither_loses_nor_double_counts(run_dir, crash_at):
    for i in range(6):
        add_episode(run_dir, f"e{i}", "success" if i % 2 else "failure")
    reg = CheckpointRegistry(run_dir / "checkpoints")
    cfg = config_for(run_dir)
    # first learner: round 0, then "dies" in round 1 (or after publishing it, or in SFT)
    first = make_trainer_class(crash_at=crash_at, crash_round=1)
    with pytest.raises(Crash):
        PhaseLoop(cfg, run_dir, trainer_factory=first, poll_s=0.05).run()
    state = LearnerState(run_dir / "learner_state.json")
    latest_before = reg.latest()
    assert state.pending is not None  # the crash left work in flight
    assert reg.read_meta(latest_before)["kind"] in ("full", "head")  # LATEST names a complete version
    # restart: a fresh loop and trainer on the same run dir
    second = make_trainer_class()
    assert PhaseLoop(cfg, run_dir, trainer_factory=second, poll_s=0.05).run() == 0
    state = LearnerState(run_dir / "learner_state.json")
    assert state.pending is None and state.iteration == 1 and reg.latest() > latest_before
    rl_rounds = [r for r in state.data["rounds"] if r["phase"] == "rl"]
    consumed = [k for r in rl_rounds for k in r["episodes"]]
    assert consumed == ["r1/e0", "r1/e1", "r1/e2", "r1/e3"]  # two rounds of two, nothing counted twice
    for r in state.data["rounds"]:  # every committed round names a complete version of its phase
        assert reg.read_meta(r["version"])["phase"] == r["phase"]
    if crash_at == "after_publish":  # the version was out: the restart adopts it, does not retrain
        assert second.calls == [("sft", [])]
    elif crash_at == "rl_round":  # round 1 never published: redone on the same episodes
        assert second.calls == [("rl", ["e2", "e3"]), ("sft", [])]
    else:
        assert second.calls == [("sft", [])]
    assert reg.latest() == max(reg.versions()) and reg.read_meta(reg.latest())["phase"] == "sft"
    # the phase record agrees with the state: one phase per committed round (a crashed one merged)
    log = read_phase_log(run_dir / "phases.jsonl")
    assert [(p["phase"], p["round"], p["version"]) for p in log["phases"]] == [
        (r["phase"], r["round"], r["version"]) for r in state.data["rounds"]]
    assert [p["serving_version"] for p in log["phases"][1:]] == [p["version"] for p in log["phases"][:-1]]


def test_plateau_schedule_switches_to_sft_early(tmp_path):
    cfg = config_for(tmp_path, rl_schedule="plateau", rl_rounds_per_phase=10, plateau_rounds=2, plateau_delta=0.05)
    loop = PhaseLoop(cfg, tmp_path, trainer_factory=lambda *a, **k: None)
    for rate in [0.2, 0.5, 0.52, 0.51]:
        loop.state.begin("rl", [], None)
        loop.state.commit(len(loop.state.data["rounds"]) + 1, {"success_rate": rate})
        if rate == 0.52:  # one round without gain is not yet a plateau
            assert loop.recipe.next_phase(0, loop.state.done_this_iteration()).name == "rl"
    assert loop.recipe.next_phase(0, loop.state.done_this_iteration()).name == "sft"
    fixed = PhaseLoop(config_for(tmp_path / "b", rl_rounds_per_phase=10), tmp_path / "b",
                      trainer_factory=lambda *a, **k: None)
    assert fixed.recipe.next_phase(0, loop.state.done_this_iteration()).name == "rl"


@pytest.mark.parametrize("during", ["training", "publish"])
def test_sigterm_abandons_training_but_not_a_publish(run_dir, during):
    import os
    import signal

    from learner.loop import Shutdown

    for i in range(4):
        add_episode(run_dir, f"e{i}")
    base = make_trainer_class()

    class SignalledTrainer(base):
        def rl_round(self, episodes, algorithm=None):
            if during == "training" and self.rounds == 1:  # round 1 "trains" for a long time
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(30)
            return super().rl_round(episodes, algorithm)

        def publish(self, kind, phase, metrics):
            if during == "publish" and phase == "rl" and self.rounds == 1:  # SIGTERM mid-publish
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(0.2)
            return super().publish(kind, phase, metrics)

    shutdown = Shutdown()
    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    shutdown.install()
    try:
        loop = PhaseLoop(config_for(run_dir, rl_rounds_per_phase=3), run_dir, shutdown=shutdown,
                         trainer_factory=SignalledTrainer, poll_s=0.05)
        t0 = time.time()
        assert loop.run() == 0
        assert time.time() - t0 < 25  # a 30 s "training" would have been abandoned
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    reg = CheckpointRegistry(run_dir / "checkpoints")
    state = LearnerState(run_dir / "learner_state.json")
    # round 0 was published and committed (a SIGTERM during its publish waited for it); nothing
    # after it was committed, nothing consumed twice, LATEST on a complete version
    assert reg.latest() == 2 and reg.read_meta(2)["phase"] == "rl"
    assert [r["version"] for r in state.data["rounds"]] == [2]
    assert sorted(state.consumed) == ["r1/e0", "r1/e1"]
    if during == "training":  # round 1 was abandoned mid-training: pending, redone after a restart
        assert state.pending["episodes"] == ["r1/e2", "r1/e3"]
    else:
        assert state.pending is None


def test_a_poison_episode_is_set_aside_and_a_broken_trainer_stops(run_dir):
    for i in range(6):
        add_episode(run_dir, f"e{i}")
    base = make_trainer_class()

    class PoisonTrainer(base):
        broken = False

        def rl_round(self, episodes, algorithm=None):
            if self.broken or any(e["episode_id"] == "e1" for e in episodes):
                raise ValueError("chunk length 3 != 4")
            return super().rl_round(episodes, algorithm)

    assert PhaseLoop(config_for(run_dir), run_dir, trainer_factory=PoisonTrainer, poll_s=0.05).run() == 0
    state = LearnerState(run_dir / "learner_state.json")
    assert sorted(state.data["rejected"]) == ["r1/e0", "r1/e1"]
    assert "chunk length" in state.data["rejected"]["r1/e1"]["error"]
    assert base.calls == [("rl", ["e2", "e3"]), ("rl", ["e4", "e5"]), ("sft", [])]
    # a trainer that fails on everything is a bug: the learner stops with the error
    for i in range(6, 12):
        add_episode(run_dir, f"f{i}")
    PoisonTrainer.broken = True
    with pytest.raises(RuntimeError, match="3 RL rounds in a row failed"):
        PhaseLoop(config_for(run_dir, max_iterations=2), run_dir, trainer_factory=PoisonTrainer,
                  poll_s=0.05).run()


class RecordingStatus(StatusBoard):
    """The real status board, remembering every (phase, progress, waiting_for) it was told."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.reports: list[tuple] = []

    def set(self, **fields):
        super().set(**fields)
        self.reports.append((self.phase, self._fields["progress"], self._fields.get("waiting_for")))


def test_a_learner_with_a_registry_but_no_demos_waits_and_says_so(run_dir, tmp_path):
    aside = tmp_path / "demos-aside"
    shutil.move(run_dir / "episodes", aside)  # the registry stays: v1 exists, no demos to train SFT on
    status = RecordingStatus(run_dir / "status.json", 0.05)
    loop = PhaseLoop(config_for(run_dir, rl_rounds_per_phase=0), run_dir, status=status, trainer_factory=make_trainer_class(), poll_s=0.05)
    t, out = run_in_thread(loop)
    status_file = run_dir / "status.json"

    def waiting_for():
        return json.loads(status_file.read_text()).get("waiting_for") if status_file.exists() else None

    assert wait_for(lambda: waiting_for() == "demonstrations" or out, 120)
    assert waiting_for() == "demonstrations", (out, status.reports)  # the old loop published a skipped SFT
    st = json.loads(status_file.read_text())
    assert st["phase"] == "sft" and "waiting for demonstrations" in st["detail"]
    time.sleep(1.0)
    assert t.is_alive() and out == []  # waiting, not crashed
    assert CheckpointRegistry(run_dir / "checkpoints").latest() == 1  # nothing published meanwhile
    for robot_dir in aside.iterdir():  # demos recorded: the learner goes on by itself
        shutil.move(robot_dir, run_dir / "episodes" / robot_dir.name)
    t.join(180)
    assert out == [0], out
    reg = CheckpointRegistry(run_dir / "checkpoints")
    assert reg.latest() == 2 and reg.read_meta(2)["phase"] == "sft"
    assert json.loads(status_file.read_text())["waiting_for"] is None


def test_sft_progress_is_reported_as_it_goes(run_dir):
    status = RecordingStatus(run_dir / "status.json", 0.0)
    loop = PhaseLoop(config_for(run_dir, sft={"steps": 12}, rl_rounds_per_phase=0), run_dir, status=status, trainer_factory=make_trainer_class(),
                     poll_s=0.05)
    t, out = run_in_thread(loop)
    t.join(180)
    assert out == [0], out
    during = [p for phase, p, _ in status.reports if phase == "sft"]
    assert during[0] == 0.0 and during[-1] == 1.0
    between = [p for p in during if 0.0 < p < 1.0]
    assert len(between) >= 5 and between == sorted(between), during  # the old loop: 0 then 1
