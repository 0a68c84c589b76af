"""Dry runs are never training data: the real learner (`vlaloop learn --no-train`, real ZeroMQ)
stores a dry-run episode as such, refuses to relabel it (by message and by the server's inbox
file), and the training rules refuse it whatever its label says."""

from __future__ import annotations

import json
import time
import uuid

from ingest_harness import IMAGES, hello

from bench.learner_ingest import IngestClient, make_step
from learner.episode_rules import is_operator_labelled, is_rl_episode, is_sft_episode, is_trainable
from protocol.messages import EpisodeEnd, Relabel


def _dry_run_end(episode_id: str) -> EpisodeEnd:
    return EpisodeEnd(robot_id="r1", episode_id=episode_id, outcome="aborted", label_source="auto", n_steps=3,
                      instruction="reach the red block", task="reach",
                      extra={"mode": "sample", "purpose": "train", "end_reason": "max_steps", "dry_run": True})


def test_a_dry_run_is_stored_as_such_and_never_relabelled(learner_factory):
    lr = learner_factory("--no-train")
    ep = lr.run_dir / "episodes" / "r1" / "dry1"
    c = IngestClient(lr.endpoint)
    try:
        assert c.request(hello()).ok
        for step in range(3):
            assert c.request(make_step("r1", "dry1", step, IMAGES)).ok
        assert c.request(_dry_run_end("dry1")).ok
        meta = json.loads((ep / "meta.json").read_text())
        assert meta["dry_run"] is True and meta["outcome"] == "aborted"
        ack = c.request(Relabel(robot_id="r1", episode_id="dry1", outcome="success"))
        assert not ack.ok and "dry run" in ack.error
        inbox = lr.run_dir / "inbox"
        name = f"relabel-{uuid.uuid4().hex}.json"
        (inbox / f".{name}.tmp").write_text(json.dumps({"robot_id": "r1", "episode_id": "dry1", "outcome": "success"}))
        (inbox / f".{name}.tmp").rename(inbox / name)
        deadline = time.time() + 10
        while not (inbox / "rejected" / name).exists() and time.time() < deadline:
            time.sleep(0.05)
        assert (inbox / "rejected" / name).exists() and not (inbox / name).exists()
    finally:
        c.close()
    assert lr.stop() == 0
    meta = json.loads((ep / "meta.json").read_text())
    assert meta["outcome"] == "aborted" and "relabeled" not in meta


def test_the_training_rules_refuse_a_dry_run_whatever_its_label():
    labelled = {"robot_id": "r1", "episode_id": "dry1", "source": "online", "outcome": "success",
                "label_source": "operator", "purpose": "train", "mode": "sample", "intervention_steps": 2}
    assert is_trainable(labelled) and is_rl_episode(labelled) and is_sft_episode(labelled)
    for dry in ({**labelled, "dry_run": True}, {**labelled, "extra": {"dry_run": True}}):  # older stores: extra
        assert not is_trainable(dry) and not is_rl_episode(dry) and not is_sft_episode(dry)
        assert not is_operator_labelled(dry)  # nor does the reward model learn from it
