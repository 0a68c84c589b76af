"""What each phase takes from an episode an operator intervened in, on episodes stored like the
ingest stores them (real EpisodeStore on a tmp dir, meta.json from learner.ingest.episode_meta).

The episode: 16 steps, chunks of 4 (decisions at steps 0, 4, 8, 12). The operator takes over at step
6 (in the middle of the chunk decided at 4) and drives steps 6..11, then hands back at step 12.

* PPO: the decision at 4 (cut by the takeover) and at 8 (an intervention step) are no samples; the
  decision at 0 ends its segment (done, reward 0); 12 is the last; a success's +1 goes to 12 only.
* SFT (HG-DAgger): a failed episode gives exactly its operator steps 6..11 (targets inside the
  segment); a successful one also the policy's steps 12..15 that finished the task; the policy's
  steps before the takeover never.
* SAC: the segment, one decision every H steps (6 and 10), is a demonstration.
"""

import numpy as np
import pytest

from episodes.store import EpisodeStore
from learner.dataset import intervention_decisions, load_decisions, sft_episodes
from learner.episode_rules import has_interventions, is_rl_episode, is_sft_episode
from learner.ingest import episode_meta
from learner.sft import build_sft_data
from protocol.images import encode_jpeg
from protocol.messages import EpisodeEnd

H, N = 4, 16
TELEOP = range(6, 12)


def policy_action(step: int) -> list[float]:
    return [0.01, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]


def operator_action(step: int) -> list[float]:
    return [0.0, 0.02, float(step) / 1000, 0.0, 0.0, 0.0, 1.0]  # distinct per step: targets are checkable


def store_episode(store: EpisodeStore, episode_id: str, outcome: str, teleop=TELEOP) -> dict:
    frame = encode_jpeg(np.zeros((8, 8, 3), np.uint8))
    for step in range(N):
        k = step % H
        driven = step in teleop
        chunk = [policy_action(step)] * H
        record = {"state": [step / 100, 0, 0, 0, 0, 0, 1], "chunk_index": k,
                  "action": operator_action(step) if driven else policy_action(step),
                  "action_chunk": chunk if k == 0 else None, "log_prob": -1.0 if k == 0 else None,
                  "value": 0.0 if k == 0 else None, "policy_version": 1, "on_policy": not driven,
                  "intervention": driven, "intervention_source": "scripted" if driven else None,
                  "proposed_action": policy_action(step) if driven else None, "instruction": "reach the blue block"}
        store.append_step("r1", episode_id, step, record, {"front": frame})
    end = EpisodeEnd(robot_id="r1", episode_id=episode_id, outcome=outcome, label_source="auto", n_steps=N,
                     instruction="reach the blue block", task="reach", extra={"mode": "sample", "purpose": "train"})
    store.finish("r1", episode_id, episode_meta(store, end, "rl"))
    return store.read_meta("r1", episode_id)


@pytest.fixture
def store(tmp_path):
    return EpisodeStore(tmp_path / "episodes")


def test_meta_counts_intervention_steps_and_rules_follow(store):
    failed = store_episode(store, "failed", "failure")
    plain = store_episode(store, "plain", "failure", teleop=())
    assert failed["intervention_steps"] == len(TELEOP) and has_interventions(failed)
    assert plain["intervention_steps"] == 0 and not has_interventions(plain)
    assert is_rl_episode(failed) and is_sft_episode(failed)  # a failure, but its segment is a demo
    assert not is_sft_episode(plain)  # a failure without interventions teaches SFT nothing
    assert {m["episode_id"] for m in sft_episodes(store)} == {"failed"}


@pytest.mark.parametrize("outcome", ["failure", "success"])
def test_ppo_drops_decisions_the_operator_cut_into(store, outcome):
    d = load_decisions(store, store_episode(store, "ep", outcome), H)
    assert d.steps == [0, 12]  # 4: cut mid-chunk by the takeover; 8: the operator's
    assert d.dones.tolist() == [1.0, 1.0]  # the takeover ends the segment that led to it
    assert d.rewards.tolist() == [0.0, 1.0 if outcome == "success" else 0.0]
    penalised = load_decisions(store, store.read_meta("r1", "ep"), H, takeover_reward=-0.5)
    assert penalised.rewards[0] == -0.5


def test_success_finished_by_the_operator_gives_the_policy_no_reward(store):
    d = load_decisions(store, store_episode(store, "ep", "success", teleop=range(10, N)), H)
    assert d.steps == [0, 4]  # 8 was cut at step 10
    assert d.rewards.tolist() == [0.0, 0.0] and d.dones.tolist() == [0.0, 1.0]


def test_episode_without_interventions_is_unchanged(store):
    d = load_decisions(store, store_episode(store, "ep", "success", teleop=()), H)
    assert d.steps == [0, 4, 8, 12] and d.rewards.tolist() == [0, 0, 0, 1] and d.dones.tolist() == [0, 0, 0, 1]


def test_sft_takes_the_operator_segment_of_a_failed_episode_and_not_the_policy_steps(store):
    meta = store_episode(store, "failed", "failure")
    data = build_sft_data(store, [meta], H, eval_fraction=0.0)
    assert [s.step for s in data.train] == list(TELEOP)
    for s in data.train:  # the next H operator actions, padded inside the segment
        want = [operator_action(min(t, TELEOP[-1])) for t in range(s.step, s.step + H)]
        np.testing.assert_allclose(s.chunk, want, atol=1e-6)


def test_sft_on_a_success_adds_the_policy_steps_after_the_hand_back(store):
    meta = store_episode(store, "won", "success")
    data = build_sft_data(store, [meta], H, eval_fraction=0.0)
    assert [s.step for s in data.train] == [*TELEOP, 12, 13, 14, 15]
    np.testing.assert_allclose(data.train[-1].chunk, [policy_action(15)] * H, atol=1e-6)


def test_sac_demo_segments_are_the_operator_steps(store):
    d = load_decisions(store, store_episode(store, "ep", "failure"), H)
    (segment,) = intervention_decisions(d)
    assert segment.steps == [6, 10]  # every H-th operator step
    np.testing.assert_allclose(segment.chunks[1], [operator_action(t) for t in (10, 11, 11, 11)], atol=1e-6)
    assert segment.dones.tolist() == [0.0, 0.0]  # the episode went on after the segment
    assert segment.rewards.tolist() == [0.0, 0.0] and np.isnan(segment.server_logprob).all()


def test_sft_can_upsample_the_operator_segments(store):
    meta = store_episode(store, "failed", "failure")
    own = store_episode(store, "own", "success", teleop=())
    data = build_sft_data(store, [meta, own], H, eval_fraction=0.0, intervention_repeat=3)
    steps = [s.step for s in data.train]
    assert sorted(steps) == sorted([*TELEOP] * 3 + list(range(N)))  # the policy's own success once
