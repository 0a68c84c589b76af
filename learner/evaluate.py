"""In-process evaluation and data collection on a simulator (tests, benchmarks, bootstrap tuning):
no servers, no network -- a Policy drives N simulated scenes at once (the mock by default;
``backend="metaworld"``: sim.metaworld.vec.MetaWorldVec, optionally over env worker processes).

The scenes are `sim.mock.vec.VecScene`, the batched twin of `MockRobot` (same
layouts, physics, success predicates; the mock's tests check they agree step by step). Each
decision renders every camera, round-trips the frames through JPEG exactly like the robot client
and the server do, asks the policy for one chunk per scene in ONE batched forward pass, and executes
the chunk open-loop (the robot client's default). An episode ends at success or max steps.

`collect_episodes` also writes every episode to an EpisodeStore in the format the ZeroMQ ingest
writes (the StepMsg fields as the step record, `learner.ingest.episode_meta` as meta.json), so RL
on collected episodes exercises the same dataset path as episodes from real robots. On MetaWorld a
failed episode keeps frames at its decision steps only (every step of a success has its frames;
see `_Recorder`): the frames inside a chunk are drawn afterwards, from simulation snapshots, only
for the successes that SFT trains on.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from episodes.store import EpisodeStore
from interface.policy import Observation
from learner.features import FeatureCache
from protocol.images import decode_jpeg, encode_jpeg
from protocol.messages import EpisodeEnd, StepMsg
from sim.intervener import ScriptedIntervener
from sim.mock.demos import executed_action
from sim.mock.vec import VecScene

# StepMsg fields that are not part of the stored step record (as in learner.ingest)
from vla.policy import Policy, trunk_key

_NOT_IN_RECORD = {"images", "type", "schema_version", "robot_id", "episode_id", "step"}


@dataclass
class RolloutResult:
    success: np.ndarray  # [N] bool
    steps: np.ndarray  # [N] int
    seeds: list[int]
    metas: list[dict] = field(default_factory=list)  # stored episodes (collect_episodes)
    intervention_steps: np.ndarray | None = None  # [N] steps the scripted intervener drove

    @property
    def success_rate(self) -> float:
        return float(self.success.mean()) if len(self.success) else 0.0




BACKENDS = ("mock", "metaworld")
_WORKER_POOLS: dict[tuple[int, int], object] = {}  # (image size, workers) -> MetaWorldVec, kept open


def close_worker_pools() -> None:
    """Stop the MetaWorld env worker processes kept for rollouts (they are daemons: they also end
    with this process)."""
    while _WORKER_POOLS:
        _WORKER_POOLS.popitem()[1].close()


def make_scenes(backend: str, seeds: Sequence[int], task: str, split: str, image_size: int, workers: int = 0):
    """The batched scenes of a simulator backend, reset to one episode per seed: the mock's
    VecScene or MetaWorld's MetaWorldVec (``workers`` env processes; 0 = in this process)."""
    if backend == "mock":
        vec = VecScene(len(seeds), image_size=image_size)
        vec.reset(seeds, task, split)
        return vec
    if backend == "metaworld":
        from sim.metaworld.vec import MetaWorldVec

        if workers <= 0:  # in this process: the envs themselves are pooled (sim.metaworld.env)
            return MetaWorldVec(len(seeds), image_size=image_size, seeds=seeds, task=task, split=split)
        # worker processes cost seconds to start (imports, envs, GL contexts): one set per
        # (image size, worker count) serves every rollout of this process
        vec = _WORKER_POOLS.get((image_size, workers))
        if vec is None:
            vec = _WORKER_POOLS[(image_size, workers)] = MetaWorldVec(
                len(seeds), image_size=image_size, seeds=seeds, task=task, split=split, workers=workers)
        else:
            vec.reset(seeds, task, split)
        return vec
    raise ValueError(f"unknown simulator backend {backend!r} (one of {BACKENDS})")


LANGUAGE_CONDITIONS = ("trained", "held_out_phrasing", "wrong_instruction")


def given_instructions(vec, seeds: Sequence[int], language: str = "trained") -> list[str]:
    """The instruction each scene's policy is given under a language condition (see `rollout`)."""
    if getattr(vec, "task_names", None) is not None:  # MetaWorld: tasks by name
        from sim.metaworld import tasks as mw

        if language == "held_out_phrasing":
            return [mw.phrases(n, "held_out")[s % mw.HELD_OUT_PHRASES] for n, s in zip(vec.task_names, seeds,
                                                                                      strict=True)]
        if language == "wrong_instruction":
            return [mw.other_task_instruction(n, s) for n, s in zip(vec.task_names, seeds, strict=True)]
        return list(vec.instructions)
    from sim.mock.tasks import other_task_instruction, phrase

    if language == "held_out_phrasing":
        return [phrase(t, "held_out") for t in vec.tasks]
    if language == "wrong_instruction":
        return [other_task_instruction(t) for t in vec.tasks]
    return [t.instruction for t in vec.tasks]


def _frames(vec, cameras: Sequence[str], size: int) -> dict[str, list[bytes]]:
    return {cam: [encode_jpeg(img) for img in vec.render(size, cam)] for cam in cameras}


def rollout(policy: Policy, seeds: Sequence[int], task: str = "reach", mode: str = "greedy",
            generator: torch.Generator | None = None, store: EpisodeStore | None = None,
            robot_id: str = "sim0", split: str = "train", image_size: int | None = None,
            learner_phase: str = "rl", backend: str = "mock", workers: int = 0,
            max_steps: int | None = None, intervener: ScriptedIntervener | None = None,
            baseline_recording: bool = False, language: str = "trained",
            features: FeatureCache | None = None) -> RolloutResult:
    """Run one episode per seed, all in parallel; optionally store them like the ingest does (the
    steps of all scenes at one time step in one durable commit; on MetaWorld the frames inside a
    chunk drawn at the end, for the successes: `_Recorder`). ``baseline_recording``: every frame
    rendered as its step is taken and each step committed alone, as before (the throughput
    bench's baseline).
    ``max_steps`` caps the tasks' own step limits (smoke tests). ``intervener`` (sampled rollouts
    only): the scene's expert drives where it takes over; those steps are stored as interventions
    (``intervention``, ``intervention_source: "scripted"``, the policy's ``proposed_action``,
    ``on_policy: false``).
    ``language``: the instruction the policy is given (LANGUAGE_CONDITIONS): the episode's own
    (``trained``), the same task in a phrasing kept out of training (``held_out_phrasing``), or
    another task's (``wrong_instruction``); success is always the episode's own task's.
    ``features`` (with ``store``): the learner's feature cache, given the decision frames' features
    as the policy computes them to act, so the RL round on these episodes does not featurize the
    stored frames again (the same JPEG bytes and instruction through the same trunk)."""
    if language not in LANGUAGE_CONDITIONS:
        raise ValueError(f"unknown language condition {language!r} (one of {LANGUAGE_CONDITIONS})")
    if intervener is not None and mode == "greedy":
        raise ValueError("greedy evaluation never intervenes: pass intervener only to sampled rollouts")
    seeds = [int(s) for s in seeds]
    size = image_size or policy.spec.image_size
    vec = make_scenes(backend, seeds, task, split, size, workers)
    if max_steps:
        vec.max_steps = np.minimum(vec.max_steps, int(max_steps))
    try:
        if backend == "metaworld":
            from sim.metaworld.actions import executed_action as executed
        else:
            executed = executed_action
        acting = _ActingFeatures(policy, features if store is not None else None)
        return _rollout(policy, vec, seeds, task, mode, generator, store, robot_id, size, learner_phase, executed,
                        intervener, baseline_recording, language, acting)
    except BaseException:  # a pooled set of workers in an unknown state is not reused
        for key, pooled in list(_WORKER_POOLS.items()):
            if pooled is vec:
                del _WORKER_POOLS[key]
                vec.close()
        raise
    finally:
        close = getattr(vec, "close", None)
        if close is not None and vec not in _WORKER_POOLS.values():
            close()


class _ActingFeatures:
    """Acts like `Policy.act_batch` and, given a FeatureCache, keeps each decision frame's features
    for it (only the plain instruction's: a RECAP policy acts on other features and keeps none)."""

    def __init__(self, policy: Policy, cache: FeatureCache | None):
        self.policy = policy
        self.cache = cache if policy.advantage is None else None
        self.rows: dict[str, dict[int, torch.Tensor]] = {}

    def act(self, obs: list[Observation], mode: str, generator: torch.Generator | None,
            episode_ids: list[str], steps: list[int]) -> list:
        modes = [mode] * len(obs)
        if self.cache is None or not obs:
            return self.policy.act_batch(obs, modes, generator)
        feats = self.policy.features(obs)
        for episode_id, step, f in zip(episode_ids, steps, feats.float().cpu(), strict=True):
            self.rows.setdefault(episode_id, {})[step] = f.clone()
        states = np.stack([np.asarray(o.state, np.float32).reshape(-1) for o in obs])
        return self.policy.act_from_features(feats, states, modes, generator)

    def save(self, robot_id: str) -> None:
        if self.cache is None or not self.rows:
            return
        key = trunk_key(self.policy)
        for episode_id, rows in self.rows.items():
            self.cache.put(key, robot_id, episode_id, rows)


class _Recorder:
    """Stores a rollout's steps as the ingest does. ``deferred`` (scenes that can snapshot and redraw
    their state -- MetaWorld --, no intervener): a step inside a chunk keeps a simulation snapshot
    instead of its frames; at the end a success gets every frame drawn from its snapshots (SFT
    trains on every step of a success), a failure keeps the frames of its decision steps only (what
    RL, the feature cache and the reward model read): a failed episode costs one frame per chunk
    instead of one per step. Otherwise every step's frames, committed as the step is taken."""

    def __init__(self, store: EpisodeStore, vec, robot_id: str, episode_ids: list[str], cams, size: int,
                 group_commit: bool, deferred: bool):
        self.store, self.vec, self.robot_id, self.ids = store, vec, robot_id, episode_ids
        self.cams, self.size, self.group_commit, self.deferred = cams, size, group_commit, deferred
        self.pending: list[list[tuple]] = [[] for _ in episode_ids]  # deferred: (step, record, images, snapshot)
        self.batch: list[tuple] = []
        self.snaps: list | None = None

    def capture(self) -> dict[str, list[bytes]] | None:
        """The frames of a step inside a chunk (None: deferred, a snapshot was kept instead)."""
        if self.deferred:
            self.snaps = self.vec.snapshots()
            return None
        return _frames(self.vec, self.cams, self.size)

    def add(self, i: int, msg: StepMsg, decision: bool) -> None:
        record = msg.model_dump(exclude=_NOT_IN_RECORD)
        if not self.deferred:
            self.batch.append((self.robot_id, self.ids[i], msg.step, record, msg.images))
        else:
            self.pending[i].append((msg.step, record, msg.images, None if decision else self.snaps[i]))

    def end_of_step(self) -> None:
        if not self.batch:
            return
        if self.group_commit:
            self.store.append_steps(self.batch)
        else:  # one durable commit per step, as the ingest of one robot makes (the throughput baseline)
            for step in self.batch:
                self.store.append_step(*step)
        self.batch = []

    def close(self, succeeded: np.ndarray) -> None:
        """Deferred: draw the frames of the successes and commit every episode's steps."""
        if not self.deferred:  # every step was committed as it was taken
            return
        todo = {i: [n for n, step in enumerate(steps) if step[3] is not None]
                for i, steps in enumerate(self.pending) if succeeded[i]}
        for c in self.cams:  # every success at once: the workers draw in parallel
            drawn = self.vec.render_snapshots({i: [self.pending[i][n][3] for n in ns] for i, ns in todo.items()}, c)
            for i, frames in drawn.items():
                for n, img in zip(todo[i], frames, strict=True):
                    self.pending[i][n][2][c] = encode_jpeg(img)
        for i, steps in enumerate(self.pending):
            self.batch += [(self.robot_id, self.ids[i], step, record, images) for step, record, images, _ in steps]
        self.pending = [[] for _ in self.ids]
        if self.batch:
            self.end_of_step()


def _rollout(policy: Policy, vec, seeds: list[int], task: str, mode: str, generator: torch.Generator | None,
             store: EpisodeStore | None, robot_id: str, size: int, learner_phase: str,
             executed, intervener: ScriptedIntervener | None = None,
             baseline_recording: bool = False, language: str = "trained",
             acting: _ActingFeatures | None = None) -> RolloutResult:
    from learner.ingest import episode_meta

    instructions = given_instructions(vec, seeds, language)
    # the task each episode actually ran (a task set draws one per seed)
    task_names = list(getattr(vec, "task_names", None) or [task] * len(seeds))
    cams = policy.spec.cameras
    episode_ids = [f"{task}-{uuid.uuid4().hex[:12]}" for _ in seeds]
    recording = store is not None
    chunk = policy.spec.chunk
    if intervener is not None:
        intervener.start(vec.n)
    rec = _Recorder(store, vec, robot_id, episode_ids, cams, size, group_commit=not baseline_recording,
                    deferred=intervener is None and hasattr(vec, "render_snapshots") and not baseline_recording
                    ) if recording else None
    driven_steps = np.zeros(vec.n, int)
    acting = acting or _ActingFeatures(policy, None)
    while not vec.done.all():
        active = np.flatnonzero(~vec.done)
        jpegs = _frames(vec, cams, size)
        states = vec.states()
        obs = [Observation({c: decode_jpeg(jpegs[c][i]) for c in cams}, states[i], instructions[i]) for i in active]
        outs = acting.act(obs, mode, generator, [episode_ids[i] for i in active], [int(vec.steps[i]) for i in active])
        plan = np.zeros((vec.n, chunk, 7), np.float32)
        for j, i in enumerate(active):
            plan[i] = outs[j].actions
        for k in range(chunk):
            if vec.done.all():
                break
            if recording and k > 0:
                jpegs = rec.capture()
            if k > 0 and (recording or intervener is not None):
                states = vec.states()
            live = ~vec.done
            act = plan[:, k]
            driven = np.zeros(vec.n, bool)
            if intervener is not None:
                expert = vec.expert_actions(intervener.cfg.expert_noise)
                driven = intervener.decide(plan[:, k], expert, states, live, decision_boundary=k == 0)
                act = np.where(driven[:, None], expert, plan[:, k]).astype(np.float32)
                driven_steps += driven
            if recording:
                for j, i in enumerate(active):
                    if not live[i]:
                        continue
                    first = k == 0
                    teleop = bool(driven[i])
                    msg = StepMsg(robot_id=robot_id, episode_id=episode_ids[i], step=int(vec.steps[i]),
                                  images={c: jpegs[c][i] for c in cams} if jpegs else {}, state=states[i].tolist(),
                                  action=executed(act[i]),
                                  action_chunk=plan[i].tolist() if first else None, chunk_index=k,
                                  log_prob=outs[j].log_prob if first else None,
                                  value=outs[j].value if first else None, policy_version=policy.version,
                                  instruction=instructions[i], t_capture=time.time(), t_act=time.time(),
                                  on_policy=not teleop, intervention=teleop,
                                  intervention_source="scripted" if teleop else None,
                                  proposed_action=[float(x) for x in plan[i, k]] if teleop else None)
                    rec.add(i, msg, decision=first)
                rec.end_of_step()
            vec.step(act)
    result = RolloutResult(success=vec.succeeded.copy(), steps=vec.steps.copy(), seeds=seeds,
                           intervention_steps=driven_steps)
    if recording:
        rec.close(vec.succeeded)
        for i in range(vec.n):
            end = EpisodeEnd(robot_id=robot_id, episode_id=episode_ids[i],
                             outcome="success" if vec.succeeded[i] else "failure", label_source="auto",
                             n_steps=int(vec.steps[i]), instruction=instructions[i], task=task_names[i],
                             extra={"mode": mode, "purpose": "eval" if mode == "greedy" else "train",
                                    "seed": seeds[i]})
            store.finish(robot_id, episode_ids[i], episode_meta(store, end, learner_phase))
            result.metas.append(store.read_meta(robot_id, episode_ids[i]))
        acting.save(robot_id)
    return result


def success_rate(policy: Policy, n: int = 50, task: str = "reach", seed: int = 10_000,
                 split: str = "train", backend: str = "mock", workers: int = 0,
                 max_steps: int | None = None) -> float:
    """Greedy success on `n` seeded simulated episodes (seeds seed..seed+n-1; the default range
    is disjoint from the demo seeds, which start at 0)."""
    return rollout(policy, range(seed, seed + n), task, "greedy", split=split, backend=backend,
                   workers=workers, max_steps=max_steps).success_rate


def language_success(policy: Policy, n: int = 50, task: str = "reach", seed: int = 10_000,
                     split: str = "train", backend: str = "mock", workers: int = 0,
                     max_steps: int | None = None) -> dict[str, float]:
    """Greedy success on the same `n` episodes under each language condition: the trained phrasing,
    a held-out phrasing of the same task (a policy that follows language keeps its success), and
    another task's instruction (a policy that reads the words drops; one that ignores them not)."""
    return {condition: rollout(policy, range(seed, seed + n), task, "greedy", split=split, backend=backend,
                               workers=workers, max_steps=max_steps, language=condition).success_rate
            for condition in LANGUAGE_CONDITIONS}


def collect_episodes(policy: Policy, store: EpisodeStore, n: int, task: str = "reach", seed: int = 0,
                     generator: torch.Generator | None = None, robot_id: str = "sim0",
                     mode: str = "sample", features: FeatureCache | None = None) -> RolloutResult:
    """`n` sampled episodes (seeds seed..seed+n-1) stored as the ingest stores robot episodes;
    with `features` (the learner's cache) their decision frames' features kept as computed to act."""
    return rollout(policy, range(seed, seed + n), task, mode, generator, store=store, robot_id=robot_id,
                   features=features)


def main(argv: list[str] | None = None) -> int:
    """`python -m learner.evaluate --run-dir runs/demo [--version V] [--n 50] [--task reach]`:
    greedy success of a published version on seeded mock episodes."""
    import argparse

    from vla.registry import CheckpointRegistry

    p = argparse.ArgumentParser(prog="learner.evaluate", description=main.__doc__.splitlines()[0])
    p.add_argument("--run-dir", required=True)
    p.add_argument("--version", type=int, default=None, help="default: LATEST")
    p.add_argument("--n", type=int, default=50)
    p.add_argument("--task", default="reach")
    p.add_argument("--seed", type=int, default=10_000)
    p.add_argument("--split", default="train")
    p.add_argument("--backend", default="mock", choices=BACKENDS)
    p.add_argument("--workers", type=int, default=0, help="metaworld: env processes")
    p.add_argument("--language", action="store_true",
                   help="also held-out phrasings and another task's instruction (LANGUAGE_CONDITIONS)")
    args = p.parse_args(argv)
    policy = Policy.load(CheckpointRegistry(f"{args.run_dir}/checkpoints"), args.version)
    if args.language:
        rates = language_success(policy, args.n, args.task, args.seed, args.split, args.backend, args.workers)
        print(f"v{policy.version}: greedy success on {args.n} {args.backend} {args.task} episodes (split "
              f"{args.split}): " + ", ".join(f"{k} {v:.2f}" for k, v in rates.items()))
        return 0
    rate = success_rate(policy, args.n, args.task, args.seed, args.split, args.backend, args.workers)
    print(f"v{policy.version}: greedy success {rate:.2f} on {args.n} {args.backend} {args.task} episodes "
          f"(seeds {args.seed}..{args.seed + args.n - 1}, split {args.split})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
