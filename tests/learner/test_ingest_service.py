"""The learner's ingest as a real process (`vlaloop learn --no-train`) talking to real ZeroMQ DEALERs."""

from __future__ import annotations

import json
import os
import threading
import time
import uuid

import pytest
from ingest_harness import CONFIG_HASH, IMAGES, REPO, Learner, free_port, hello  # noqa: F401

from bench.learner_ingest import SEQ, IngestClient, make_step
from episodes.store import EpisodeStore, _read_records
from protocol.codec import packb
from protocol.messages import EpisodeEnd, Relabel, encode_message


def test_refusals_are_clear_and_ingestion_continues(learner_factory, tmp_path):
    lr = learner_factory("--no-train", env={"VLALOOP_LEARNER__TOKEN": "s3cret",
                                            "VLALOOP_LEARNER__MAX_MESSAGE_BYTES": "200000"})
    c = IngestClient(lr.endpoint)
    try:
        # steps before hello
        ack = c.request(make_step("r1", "e1", 0, IMAGES))
        assert not ack.ok and ack.error == "hello first"
        # wrong schema: a hand-built payload claiming schema 99
        c.send_raw([SEQ.pack(7), packb({"schema": 99, "type": "hello", "robot_id": "r1",
                                              "config_hash": CONFIG_HASH, "token": "s3cret"})])
        ack = c.recv_ack()
        assert ack.seq == 7 and not ack.ok and "schema version 99" in ack.error and "speaks 1" in ack.error
        # wrong config hash: both hashes named
        ack = c.request(hello(config_hash="deadbeefdeadbeef", token="s3cret"))
        assert not ack.ok and "config hash mismatch" in ack.error
        assert "deadbeefdeadbeef" in ack.error and CONFIG_HASH in ack.error
        # wrong / missing token
        for token in ("wrong", ""):
            ack = c.request(hello(token=token))
            assert not ack.ok and "bad token" in ack.error and "s3cret" not in ack.error
        assert not c.request(make_step("r1", "e1", 0, IMAGES)).ok  # still not hello'd
        # malformed: garbage payload, 3 frames, a short seq frame
        c.send_raw([SEQ.pack(11), b"\xc1not msgpack"])
        ack = c.recv_ack()
        assert ack.seq == 11 and not ack.ok and "msgpack" in ack.error
        c.send_raw([SEQ.pack(12), b"a", b"b"])
        ack = c.recv_ack()
        assert not ack.ok and "expected 2 frames" in ack.error
        c.send_raw([b"\x01\x02", encode_message(hello(token="s3cret"))])
        assert "seq frame must be 8 bytes" in c.recv_ack().error
        # ...and the same learner still ingests: a good hello, a step, an invalid step, a good step
        assert c.request(hello(token="s3cret")).ok
        assert c.request(make_step("r1", "e1", 0, IMAGES)).ok
        bad = packb({**make_step("r1", "e1", 1, IMAGES).to_wire(), "action": [0.0, 1.0]})
        c.send_raw([SEQ.pack(99), bad])
        ack = c.recv_ack()
        assert not ack.ok and "action must have 7 values" in ack.error
        ack = c.request(make_step("r2", "e1", 1, IMAGES))  # another robot's id on this connection
        assert not ack.ok and "does not match" in ack.error
        assert c.request(make_step("r1", "e1", 1, IMAGES)).ok
        ep = EpisodeStore(lr.run_dir / "episodes").load("r1", "e1")
        assert [s["step"] for s in ep.steps] == [0, 1]
        # a second robot on its own connection is unaffected by the first one's refusals
        c2 = IngestClient(lr.endpoint)
        assert c2.request(hello("r2", token="s3cret")).ok and c2.request(make_step("r2", "e9", 0, IMAGES)).ok
        # over learner.max_message_bytes: ZeroMQ drops the peer without reading it; others go on
        big = make_step("r2", "e9", 1, {"front": b"\xff" * 300_000})
        c2.send(big)
        with pytest.raises(TimeoutError):
            c2.recv_ack(timeout=1.0)
        c2.close()
        assert c.request(make_step("r1", "e1", 2, IMAGES)).ok
        assert [x["step"] for x in EpisodeStore(lr.run_dir / "episodes").load("r2", "e9").steps] == [0]
    finally:
        c.close()
    time.sleep(0.4)
    st = json.loads((lr.run_dir / "status.json").read_text())
    assert st["ingest"]["refused"] == 11 and st["ingest"]["steps"] == 4
    assert lr.stop() == 0
    assert "refused message" in lr.logs() and "hello first" in lr.logs()


def test_ack_after_durable_duplicates_meta_last_and_relabels(learner_factory):
    lr = learner_factory("--no-train")
    ep_dir = lr.run_dir / "episodes" / "r1" / "e1"
    c = IngestClient(lr.endpoint)
    try:
        assert c.request(hello()).ok
        for step in range(5):
            ack = c.request(make_step("r1", "e1", step, IMAGES, version=3 if step < 4 else 4))
            assert ack.ok and not ack.duplicate
            # the ack means durable: a fresh reader sees the step and its frames right now
            ep = EpisodeStore(lr.run_dir / "episodes").load("r1", "e1")
            assert ep.steps[-1]["step"] == step and ep.frame_bytes(step, "cam1") == IMAGES["cam1"]
            assert not (ep_dir / "meta.json").exists()
        log_size = (ep_dir / "steps.log").stat().st_size
        ack = c.request(make_step("r1", "e1", 2, IMAGES))  # resent after a lost ack
        assert ack.ok and ack.duplicate
        assert (ep_dir / "steps.log").stat().st_size == log_size
        end = EpisodeEnd(robot_id="r1", episode_id="e1", outcome="success", label_source="auto", n_steps=5,
                         instruction="reach the red block", task="reach",
                         extra={"mode": "sample", "purpose": "train", "calibration": {"workspace": [0.3, 0.7]}})
        assert c.request(end).ok
        meta = json.loads((ep_dir / "meta.json").read_text())
        assert meta["source"] == "online" and meta["outcome"] == "success" and meta["label_source"] == "auto"
        assert meta["n_steps"] == meta["n_stored_steps"] == 5 and meta["task"] == "reach"
        assert meta["policy_versions"] == [3, 4] and meta["policy_version"] == 3
        assert meta["safety"] == {"clamped": 2} and meta["calibration"] == {"workspace": [0.3, 0.7]}
        assert meta["extra"] == {"mode": "sample", "purpose": "train"} and meta["missing_steps"] == 0
        # meta.json is the last thing written into the episode
        newest = max(p.stat().st_mtime_ns for p in ep_dir.rglob("*") if p.is_file() and p.name != "meta.json")
        assert (ep_dir / "meta.json").stat().st_mtime_ns >= newest
        assert c.request(end).duplicate  # a resent end
        assert c.request(make_step("r1", "e1", 5, IMAGES)).duplicate  # a step after the end is dropped
        # an eval episode (greedy, during SFT) is stored as source "eval"
        assert c.request(make_step("r1", "e2", 0, IMAGES)).ok
        assert c.request(EpisodeEnd(robot_id="r1", episode_id="e2", outcome="failure", label_source="auto",
                                    n_steps=1, instruction="x", extra={"purpose": "eval", "mode": "greedy"})).ok
        assert json.loads((lr.run_dir / "episodes/r1/e2/meta.json").read_text())["source"] == "eval"
        # relabel by message
        assert c.request(Relabel(robot_id="r1", episode_id="e1", outcome="failure")).ok
        meta = json.loads((ep_dir / "meta.json").read_text())
        assert meta["outcome"] == "failure" and meta["original_outcome"] == "success"
        assert meta["label_source"] == "operator"
        ack = c.request(Relabel(robot_id="r1", episode_id="e7", outcome="failure"))
        assert not ack.ok and "not ended" in ack.error
        # relabel by inbox file (the server's path): applied and deleted; a bad file is set aside
        inbox = lr.run_dir / "inbox"
        f = inbox / f"relabel-{uuid.uuid4().hex}.json"
        tmp = inbox / f".{f.name}.tmp"
        tmp.write_text(json.dumps({"robot_id": "r1", "episode_id": "e2", "outcome": "success"}))
        os.replace(tmp, f)
        (inbox / "relabel-bad.json").write_text("{not json")
        deadline = time.time() + 10
        while (f.exists() or (inbox / "relabel-bad.json").exists()) and time.time() < deadline:
            time.sleep(0.05)
        assert not f.exists() and (inbox / "rejected" / "relabel-bad.json").exists()
        meta2 = json.loads((lr.run_dir / "episodes/r1/e2/meta.json").read_text())
        assert meta2["outcome"] == "success" and meta2["original_outcome"] == "failure"
        time.sleep(0.4)
        st = json.loads((lr.run_dir / "status.json").read_text())
        assert st["episodes_per_source"] == {"eval": 1, "online": 1}
        assert st["success_rate"]["eval_by_version"] == {"0": {"rate": 1.0, "n": 1}}
        assert st["success_rate"]["online_by_version"] == {"3": {"rate": 0.0, "n": 1}}
    finally:
        c.close()
    assert lr.stop() == 0


def _streamer(endpoint_box: list, n_steps: int, acked: set, stop: threading.Event, errors: list) -> None:
    """A robot with an in-memory outbox: window of unacked steps; on reconnect, hello + resend all."""
    outbox: dict[int, bytes] = {}
    next_step, seq = 0, 0
    client, connected_to = None, None
    try:
        while not stop.is_set() and (next_step < n_steps or outbox):
            if client is None or connected_to != endpoint_box[0]:
                if client is not None:
                    client.close()
                client, connected_to = IngestClient(endpoint_box[0]), endpoint_box[0]
                client.seq = seq
                try:
                    if not client.request(hello(), timeout=2).ok:
                        raise RuntimeError("hello refused")
                except TimeoutError:
                    client.close()
                    client = None
                    time.sleep(0.1)
                    continue
                seq = client.seq
                for s, payload in sorted(outbox.items()):
                    client.send_raw([SEQ.pack(s), payload])
            while next_step < n_steps and len(outbox) < 16:
                seq += 1
                outbox[seq] = encode_message(make_step("r1", "e1", next_step, IMAGES))
                client.send_raw([SEQ.pack(seq), outbox[seq]])
                next_step += 1
            client.seq = seq
            try:
                ack = client.recv_ack(timeout=1.0)
            except TimeoutError:
                client.close()
                client = None  # learner gone: reconnect, hello, resend the outbox
                continue
            if not ack.ok:
                raise RuntimeError(ack.error)
            payload = outbox.pop(ack.seq, None)
            if payload is not None:
                acked.add(ack.seq)
    except Exception as e:  # surfaced by the test
        errors.append(e)
    finally:
        if client is not None:
            client.close()


def test_kill9_while_streaming_then_resend_gives_every_step_exactly_once(learner_factory, tmp_path):
    n_steps = 300
    lr = learner_factory("--no-train")
    box, acked, stop, errors = [lr.endpoint], set(), threading.Event(), []
    t = threading.Thread(target=_streamer, args=(box, n_steps, acked, stop, errors), daemon=True)
    t.start()
    deadline = time.time() + 30
    while len(acked) < 60 and time.time() < deadline:
        time.sleep(0.01)
    lr.kill9()  # mid-stream: some steps durable but unacked, some in flight, maybe a torn record
    n_acked_before = len(acked)
    assert 0 < n_acked_before < n_steps
    store = EpisodeStore(lr.run_dir / "episodes")
    stored = {s["step"] for s in store.load("r1", "e1").steps}
    assert len(stored) >= n_acked_before  # everything acked is durable
    lr2 = learner_factory("--no-train", port=lr.port)  # same address: the robot just reconnects
    t.join(60)
    stop.set()
    assert not errors, errors
    assert len(acked) == n_steps
    records, _ = _read_records(lr.run_dir / "episodes" / "r1" / "e1" / "steps.log")  # the raw log
    assert sorted(r["step"] for r in records) == list(range(n_steps))  # every step exactly once
    assert lr2.stop() == 0
