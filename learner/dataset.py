"""From stored episodes (episodes.store) to what the algorithms train on.

* Online episodes (robots running a policy): a step that carries ``action_chunk`` is the first to
  execute it; the chunk is a DECISION made on the observation (frames + state + instruction) of
  step ``obs_step`` (itself when the chunk starts at index 0; an earlier step when the reply came
  while the arm kept moving; records without ``obs_step`` count only at ``chunk_index == 0``), with
  the server's ``log_prob`` / ``value`` under ``policy_version``. Steps recorded ``on_policy:
  false`` (an ensemble average was executed, not the chunk) are no decision. RL transitions are
  decision to decision. Reward: +1 on the last decision of a success, 0 otherwise, plus an
  optional per-decision penalty; ``done`` on the last decision.
* Expert demonstrations (``action_chunk`` None, one executed action per step): the chunk target at
  step t is the next H executed actions t..t+H-1, padded with the last action at the episode end.
  SFT / bootstrap train on every step; the SAC demo buffer uses every H-th step as a decision (the
  same rhythm as an open-loop chunk executed by the robot).

Which episodes each phase trains on is learner/episode_rules.py.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from episodes.store import Episode, EpisodeStore
from interface.action import ACTION_DIM
from interface.policy import Observation
from learner.episode_rules import is_sft_episode


@dataclass
class EpisodeDecisions:
    """The decision points of one episode, in time order (robot units; normalize at training time)."""
    meta: dict
    episode: Episode
    steps: list[int]  # step numbers of the decisions (their frames are the observations)
    states: np.ndarray  # [N, state_dim] raw
    chunks: np.ndarray  # [N, H, action_dim] raw: the chunk the decision produced (or the expert's)
    server_logprob: np.ndarray  # [N] NaN where unknown (expert)
    server_value: np.ndarray  # [N]
    versions: np.ndarray  # [N] int policy_version (-1 = expert)
    rewards: np.ndarray  # [N]
    dones: np.ndarray  # [N]
    instruction: str

    def __len__(self) -> int:
        return len(self.steps)

    def observation(self, i: int, cameras: list[str]) -> Observation:
        step = self.steps[i]
        images = {cam: self.episode.frame(step, cam) for cam in cameras}
        return Observation(images=images, state=self.states[i], instruction=self.instruction)


def expert_chunks(actions: np.ndarray, chunk: int) -> np.ndarray:
    """[T, 7] executed actions -> [T, H, 7]: at t the next H actions, padded with the last one."""
    actions = np.asarray(actions, np.float32)
    t = actions.shape[0]
    idx = np.minimum(np.arange(t)[:, None] + np.arange(chunk)[None, :], t - 1)
    return actions[idx]


def sparse_rewards(n: int, success: bool, step_penalty: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    rewards = np.full(n, -float(step_penalty), np.float32)
    dones = np.zeros(n, np.float32)
    if n:
        rewards[-1] += 1.0 if success else 0.0
        dones[-1] = 1.0
    return rewards, dones


def _instruction(meta: dict, steps: list[dict]) -> str:
    return str(meta.get("instruction") or (steps[0].get("instruction") if steps else "") or "")


def online_decisions(meta: dict, episode: Episode, chunk: int, step_penalty: float = 0.0) -> EpisodeDecisions:
    by_step = {int(s["step"]): s for s in episode.steps}
    decisions = [(by_step.get(_obs_step(s)), s) for s in episode.steps
                 if s.get("action_chunk") is not None and s.get("on_policy", True) and _obs_step(s) is not None]
    decisions = [(seen, s) for seen, s in decisions if seen is not None]
    rows = [s for _, s in decisions]
    chunks = (np.asarray([r["action_chunk"] for r in rows], np.float32).reshape(len(rows), -1, ACTION_DIM) if rows
              else np.zeros((0, chunk, ACTION_DIM), np.float32))
    if len(rows) and chunks.shape[1] != chunk:
        raise ValueError(f"episode {meta.get('robot_id')}/{meta.get('episode_id')}: chunk length "
                         f"{chunks.shape[1]} != model chunk {chunk}")
    rewards, dones = sparse_rewards(len(rows), meta.get("outcome") == "success", step_penalty)

    def col(name: str, default: float) -> np.ndarray:
        return np.asarray([default if r.get(name) is None else r[name] for r in rows], np.float64)

    return EpisodeDecisions(
        meta=meta, episode=episode, steps=[int(seen["step"]) for seen, _ in decisions],
        states=np.asarray([seen["state"] for seen, _ in decisions], np.float32).reshape(len(rows), -1) if rows
        else np.zeros((0, len(episode.steps[0]["state"]) if episode.steps else 7), np.float32),
        chunks=chunks, server_logprob=col("log_prob", np.nan), server_value=col("value", np.nan),
        versions=col("policy_version", -1).astype(np.int64), rewards=rewards, dones=dones,
        instruction=_instruction(meta, episode.steps))


def _obs_step(step: dict) -> int | None:
    """The step whose observation produced this step's chunk (None: unknown, not a decision)."""
    if step.get("obs_step") is not None:
        return int(step["obs_step"])
    return int(step["step"]) if int(step.get("chunk_index", 0)) == 0 else None


def expert_decisions(meta: dict, episode: Episode, chunk: int, stride: int | None = None,
                     step_penalty: float = 0.0) -> EpisodeDecisions:
    """Demo steps as decisions: every step (stride 1, SFT) or every H-th step (SAC demo buffer)."""
    steps = episode.steps
    actions = np.asarray([s["action"] for s in steps], np.float32).reshape(len(steps), -1)
    all_chunks = expert_chunks(actions, chunk) if len(steps) else np.zeros((0, chunk, ACTION_DIM), np.float32)
    keep = list(range(0, len(steps), stride or 1))
    rewards, dones = sparse_rewards(len(keep), meta.get("outcome") == "success", step_penalty)
    n = len(keep)
    return EpisodeDecisions(
        meta=meta, episode=episode, steps=[int(steps[i]["step"]) for i in keep],
        states=np.asarray([steps[i]["state"] for i in keep], np.float32).reshape(n, -1),
        chunks=all_chunks[keep], server_logprob=np.full(n, np.nan), server_value=np.full(n, np.nan),
        versions=np.full(n, -1, np.int64), rewards=rewards, dones=dones,
        instruction=_instruction(meta, steps))


def load_decisions(store: EpisodeStore, meta: dict, chunk: int, step_penalty: float = 0.0,
                   expert_stride: int | None = None, as_demo: bool = False) -> EpisodeDecisions:
    """`as_demo`: treat any episode like a demonstration (SFT on a successful online episode trains
    on every executed step, like on the expert's)."""
    episode = store.load(meta["robot_id"], meta["episode_id"])
    has_chunks = any(s.get("action_chunk") is not None for s in episode.steps)
    if has_chunks and not as_demo:
        return online_decisions(meta, episode, chunk, step_penalty)
    return expert_decisions(meta, episode, chunk, expert_stride, step_penalty)


def sft_episodes(store: EpisodeStore, include_online: bool = True, reward_model_labels: bool = False) -> list[dict]:
    """Expert demos ∪ successful online/eval episodes (iRe-VLA Stage 2): the expert data keeps the
    model from forgetting, the successes carry what RL found into the backbone."""
    return [meta for meta in store.list_episodes() if is_sft_episode(meta, include_online, reward_model_labels)]
