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

* Interventions (steps an operator or the scripted intervener drove: ``intervention: true``,
  ``on_policy: false``). They are not samples of the policy, and the policy's segment before a
  takeover was judged bad by the operator:
  - RL decisions: a decision any of whose executed steps was an intervention is dropped; the last
    decision before a takeover ends its segment (``done``) with reward ``takeover_reward`` (default
    0: the same as a failed episode; RLIF's view that a takeover is a failure of what led to it).
    The +1 of a success goes to the last decision only if the policy, not the operator, finished.
  - demonstrations: each maximal run of intervention steps is a demo segment of its own (targets
    stay inside it): SFT trains on them also in a failed episode (HG-DAgger), SAC puts them in the
    demo half of its batches (HIL-SERL). Of a failed episode SFT takes only those segments; of a
    successful one also the policy's steps after the last segment (it finished the task itself).

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


def online_decisions(meta: dict, episode: Episode, chunk: int, step_penalty: float = 0.0,
                     takeover_reward: float = 0.0) -> EpisodeDecisions:
    by_step = {int(s["step"]): s for s in episode.steps}
    decisions = [(by_step.get(_obs_step(s)), s) for s in episode.steps
                 if s.get("action_chunk") is not None and s.get("on_policy", True) and _obs_step(s) is not None]
    decisions = [(seen, s) for seen, s in decisions if seen is not None]
    teleop = sorted(int(s["step"]) for s in episode.steps if s.get("intervention"))
    if teleop:  # a chunk the operator cut into is no sample of the policy
        decisions = [(seen, s) for seen, s in decisions if not _span_has(teleop, *_executed_span(episode, s, chunk))]
    rows = [s for _, s in decisions]
    chunks = (np.asarray([r["action_chunk"] for r in rows], np.float32).reshape(len(rows), -1, ACTION_DIM) if rows
              else np.zeros((0, chunk, ACTION_DIM), np.float32))
    if len(rows) and chunks.shape[1] != chunk:
        raise ValueError(f"episode {meta.get('robot_id')}/{meta.get('episode_id')}: chunk length "
                         f"{chunks.shape[1]} != model chunk {chunk}")
    starts = [int(r["step"]) for r in rows]
    # a takeover between a decision and the next one ends the policy's segment there
    taken_over = [_span_has(teleop, start + 1, starts[i + 1] if i + 1 < len(starts) else None)
                  for i, start in enumerate(starts)]
    success = meta.get("outcome") == "success" and not (taken_over and taken_over[-1])
    rewards, dones = sparse_rewards(len(rows), success, step_penalty)
    for i, cut in enumerate(taken_over):
        if cut:
            rewards[i] += takeover_reward
            dones[i] = 1.0

    def col(name: str, default: float) -> np.ndarray:
        return np.asarray([default if r.get(name) is None else r[name] for r in rows], np.float64)

    return EpisodeDecisions(
        meta=meta, episode=episode, steps=[int(seen["step"]) for seen, _ in decisions],
        states=np.asarray([seen["state"] for seen, _ in decisions], np.float32).reshape(len(rows), -1) if rows
        else np.zeros((0, len(episode.steps[0]["state"]) if episode.steps else 7), np.float32),
        chunks=chunks, server_logprob=col("log_prob", np.nan), server_value=col("value", np.nan),
        versions=col("policy_version", -1).astype(np.int64), rewards=rewards, dones=dones,
        instruction=_instruction(meta, episode.steps))


def _executed_span(episode: Episode, decision: dict, chunk: int) -> tuple[int, int]:
    """[first, end) step numbers that executed this decision's chunk: from its step up to the next
    step that starts another chunk, at most ``chunk`` steps."""
    first = int(decision["step"])
    end = first + chunk
    for s in episode.steps:
        step = int(s["step"])
        if first < step < end and s.get("action_chunk") is not None:
            end = step
    return first, end


def _span_has(sorted_steps: list[int], first: int, end: int | None) -> bool:
    """Any of `sorted_steps` in [first, end) (end None: to the episode's end)."""
    i = int(np.searchsorted(sorted_steps, first))
    return i < len(sorted_steps) and (end is None or sorted_steps[i] < end)


def _obs_step(step: dict) -> int | None:
    """The step whose observation produced this step's chunk (None: unknown, not a decision)."""
    if step.get("obs_step") is not None:
        return int(step["obs_step"])
    return int(step["step"]) if int(step.get("chunk_index", 0)) == 0 else None


def expert_decisions(meta: dict, episode: Episode, chunk: int, stride: int | None = None,
                     step_penalty: float = 0.0, span: tuple[int, int] | None = None) -> EpisodeDecisions:
    """Demo steps as decisions: every step (stride 1, SFT) or every H-th step (SAC demo buffer).
    ``span`` [start, end): only these step indices, as a demonstration of their own (chunk targets
    padded inside it; the success reward only if it runs to the episode's end)."""
    start, end = span or (0, len(episode.steps))
    steps = episode.steps[start:end]
    actions = np.asarray([s["action"] for s in steps], np.float32).reshape(len(steps), -1)
    all_chunks = expert_chunks(actions, chunk) if len(steps) else np.zeros((0, chunk, ACTION_DIM), np.float32)
    keep = list(range(0, len(steps), stride or 1))
    to_the_end = end >= len(episode.steps)
    rewards, dones = sparse_rewards(len(keep), to_the_end and meta.get("outcome") == "success", step_penalty)
    if not to_the_end and len(keep):
        dones[-1] = 0.0  # the episode goes on after the segment
    n = len(keep)
    return EpisodeDecisions(
        meta=meta, episode=episode, steps=[int(steps[i]["step"]) for i in keep],
        states=np.asarray([steps[i]["state"] for i in keep], np.float32).reshape(n, -1),
        chunks=all_chunks[keep], server_logprob=np.full(n, np.nan), server_value=np.full(n, np.nan),
        versions=np.full(n, -1, np.int64), rewards=rewards, dones=dones,
        instruction=_instruction(meta, episode.steps))


def intervention_spans(episode: Episode) -> list[tuple[int, int]]:
    """[start, end) indices into ``episode.steps`` of each maximal run of intervention steps."""
    spans: list[tuple[int, int]] = []
    start = None
    for i, s in enumerate(episode.steps):
        if s.get("intervention") and start is None:
            start = i
        elif not s.get("intervention") and start is not None:
            spans.append((start, i))
            start = None
    if start is not None:
        spans.append((start, len(episode.steps)))
    return spans


def sft_step_spans(meta: dict, episode: Episode) -> list[tuple[int, int]]:
    """The runs of an episode's steps SFT trains on, each a demonstration of its own: a demo or an
    intervention-free success: all of it; otherwise the intervention segments, plus, in a success,
    the policy's steps after the last one (it finished the task from where the operator left it).
    The policy's own steps before a takeover are never imitated."""
    n = len(episode.steps)
    spans = intervention_spans(episode)
    if not spans:
        return [(0, n)] if n and (meta.get("source") == "expert" or meta.get("outcome") == "success") else []
    if meta.get("outcome") == "success" and spans[-1][1] < n:
        spans.append((spans[-1][1], n))
    return spans


def sft_decisions(store: EpisodeStore, meta: dict, chunk: int) -> list[EpisodeDecisions]:
    """Every SFT step of the episode (stride 1), one EpisodeDecisions per ``sft_step_spans`` run."""
    episode = store.load(meta["robot_id"], meta["episode_id"])
    return [expert_decisions(meta, episode, chunk, span=span) for span in sft_step_spans(meta, episode)]


def intervention_decisions(d: EpisodeDecisions, stride: int | None = None) -> list[EpisodeDecisions]:
    """The intervention segments of an already loaded episode as demo decisions, one every
    ``stride`` steps (default: the chunk length H, the rhythm of an executed chunk): what SAC adds
    to the demo half of its batches."""
    chunk = d.chunks.shape[1]
    return [expert_decisions(d.meta, d.episode, chunk, stride or chunk, span=span)
            for span in intervention_spans(d.episode)]


def load_decisions(store: EpisodeStore, meta: dict, chunk: int, step_penalty: float = 0.0,
                   expert_stride: int | None = None, as_demo: bool = False,
                   takeover_reward: float = 0.0) -> EpisodeDecisions:
    """`as_demo`: treat any episode like a demonstration (every executed step; SFT uses
    `sft_decisions`, which also cuts out what is not to be imitated)."""
    episode = store.load(meta["robot_id"], meta["episode_id"])
    has_chunks = any(s.get("action_chunk") is not None for s in episode.steps)
    if has_chunks and not as_demo:
        return online_decisions(meta, episode, chunk, step_penalty, takeover_reward)
    return expert_decisions(meta, episode, chunk, expert_stride, step_penalty)


def sft_episodes(store: EpisodeStore, include_online: bool = True, reward_model_labels: bool = False) -> list[dict]:
    """Expert demos ∪ successful online/eval episodes (iRe-VLA Stage 2) ∪ episodes with
    interventions: the expert data keeps the model from forgetting, the successes carry what RL
    found into the backbone, the operator's segments teach what the policy got wrong."""
    return [meta for meta in store.list_episodes() if is_sft_episode(meta, include_online, reward_model_labels)]
