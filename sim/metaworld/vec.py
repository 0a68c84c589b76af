"""N MetaWorld scenes stepped together, optionally spread over worker processes: the batched twin
of ``MetaWorldRobot`` for the learner's evaluation, RL collection and the benches.

Same interface as the mock's ``VecScene`` (``reset``, ``done``, ``succeeded``, ``steps``,
``states``, ``render``, ``step``, ``expert_actions``), so ``learner.evaluate.rollout`` drives
either. With ``workers`` > 0, scene i lives in worker ``i % workers`` (spawned processes, each
with its own MuJoCo models and GL context); one ``step`` or ``render`` is one round trip per
worker, so the policy sees all N observations at once and answers them in one batched call.
``reset`` may change N: the workers (and their envs and GL contexts) are kept, so one
``MetaWorldVec`` serves many rollouts (learner.evaluate keeps one per worker count).

    vec = MetaWorldVec(8, seeds=range(8), task="mt10", workers=2)
    while not vec.done.all():
        vec.step(vec.expert_actions(noise=0.1))
    print(vec.succeeded.mean())
    vec.close()
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterable

import numpy as np

from sim.metaworld.env import MetaWorldScene
from sim.metaworld.expert import add_noise


class _Shard:
    """The scenes of one worker (or of the calling process when there are no workers)."""

    def __init__(self, image_size: int):
        self.image_size = image_size
        self.scenes: list[MetaWorldScene] = []
        self.rngs: list[np.random.Generator] = []

    def reset(self, jobs: list[tuple[int, str, str]]) -> list[tuple[str, str, int, np.ndarray]]:
        while len(self.scenes) < len(jobs):
            self.scenes.append(MetaWorldScene(self.image_size))
        del self.scenes[len(jobs):]
        self.rngs = [np.random.default_rng([seed, 0xE4]) for seed, _, _ in jobs]  # as MetaWorldRobot's
        out = []
        for scene, (seed, task, split) in zip(self.scenes, jobs, strict=True):
            spec = scene.reset(task, seed, split)
            out.append((spec.name, spec.instruction, spec.max_steps, scene.state_vector()))
        return out

    def step(self, actions: np.ndarray, active: np.ndarray) -> list[tuple[np.ndarray, bool, bool]]:
        """(state, success, accepted) per scene; inactive scenes are not stepped."""
        out = []
        for scene, a, on in zip(self.scenes, actions, active, strict=True):
            ok = bool(on) and scene.step(a)
            out.append((scene.state_vector(), scene.success() if on else False, ok))
        return out

    def render(self, camera: str) -> np.ndarray:
        return np.stack([s.render(camera) for s in self.scenes]) if self.scenes else np.zeros((0,))

    def snapshots(self, active: np.ndarray) -> list[np.ndarray | None]:
        return [s.snapshot() if on else None for s, on in zip(self.scenes, active, strict=True)]

    def render_snapshots(self, requests: list[tuple[int, list[np.ndarray]]], camera: str) -> list[np.ndarray]:
        return [np.stack([self.scenes[j].render_snapshot(st, camera) for st in states]) for j, states in requests]

    def expert(self, noise: float) -> np.ndarray:
        if not self.scenes:
            return np.zeros((0, 7))
        return np.stack([add_noise(s.expert_action(), rng, noise) for s, rng in zip(self.scenes, self.rngs,
                                                                                       strict=True)])

    def close(self) -> None:
        for s in self.scenes:
            s.close()


def _worker(conn, image_size: int) -> None:
    shard = _Shard(image_size)
    try:
        while True:
            cmd, args = conn.recv()
            if cmd == "close":
                break
            try:
                conn.send(("ok", getattr(shard, cmd)(*args)))
            except Exception as e:  # report, keep serving: the parent raises it
                conn.send(("error", f"{type(e).__name__}: {e}"))
    except (EOFError, KeyboardInterrupt):
        pass
    finally:
        shard.close()


class MetaWorldVec:
    def __init__(self, n: int, image_size: int = 96, seeds: Iterable[int] | None = None, task: str = "mt10",
                 split: str = "train", workers: int = 0):
        self.n = int(n)
        self.image_size = int(image_size)
        self.workers = max(0, int(workers))
        self._local = _Shard(self.image_size) if self.workers == 0 else None
        self._conns, self._procs = [], []
        ctx = multiprocessing.get_context("spawn")  # no fork of a parent holding torch threads or GL
        for _ in range(self.workers):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_worker, args=(child, self.image_size), daemon=True)
            p.start()
            self._conns.append(parent)
            self._procs.append(p)
        self.reset(range(self.n) if seeds is None else seeds, task, split)

    # ------------------------------------------------------------ plumbing
    def _slots(self, w: int) -> list[int]:
        return list(range(w, self.n, self.workers)) if self.workers else list(range(self.n))

    def _call(self, cmd: str, per_shard_args) -> list:
        """Run ``cmd`` on every shard (in parallel over the workers); results in shard order."""
        if self._local is not None:
            return [getattr(self._local, cmd)(*per_shard_args(0))]
        for w, conn in enumerate(self._conns):
            conn.send((cmd, per_shard_args(w)))
        results = []
        for conn in self._conns:
            status, value = conn.recv()
            if status != "ok":
                raise RuntimeError(f"MetaWorld worker failed in {cmd}: {value}")
            results.append(value)
        return results

    def _scatter(self, per_shard: list[list]) -> list:
        out = [None] * self.n
        for w, values in enumerate(per_shard):
            for i, v in zip(self._slots(w), values, strict=True):
                out[i] = v
        return out

    # ------------------------------------------------------------ episodes
    def reset(self, seeds: Iterable[int], task: str = "mt10", split: str = "train") -> list[str]:
        seeds = [int(s) for s in seeds]
        if not seeds:
            raise ValueError("need at least one seed")
        self.n = len(seeds)  # the worker processes stay; each takes the scenes i % workers
        jobs = [(s, task, split) for s in seeds]
        got = self._scatter(self._call("reset", lambda w: ([jobs[i] for i in self._slots(w)],)))
        self.seeds = seeds
        self.task_names = [g[0] for g in got]
        self.instructions = [g[1] for g in got]
        self.max_steps = np.array([g[2] for g in got])
        self._states = np.stack([g[3] for g in got])
        self.steps = np.zeros(self.n, dtype=int)
        self.succeeded = np.zeros(self.n, dtype=bool)
        return list(self.instructions)

    @property
    def done(self) -> np.ndarray:
        """Succeeded or out of steps; done scenes are not stepped any more."""
        return self.succeeded | (self.steps >= self.max_steps)

    def states(self) -> np.ndarray:
        """[N, 7] float32: hand xyz, the fixed rpy, gripper opening."""
        return self._states.astype(np.float32)

    def render(self, size: int | None = None, camera: str = "front") -> np.ndarray:
        if size is not None and int(size) != self.image_size:
            raise ValueError(f"these scenes render {self.image_size} px, not {size}")
        return np.stack(self._scatter([list(x) for x in self._call("render", lambda w: (camera,))]))

    def snapshots(self) -> list[np.ndarray | None]:
        """Each scene's simulation state now (None for a done scene): what `render_snapshots` needs to
        draw this instant's frame later, for the episodes whose frames turn out to be needed."""
        live = ~self.done
        return self._scatter(self._call("snapshots", lambda w: (live[self._slots(w)],)))

    def render_snapshots(self, requests: dict[int, list[np.ndarray]], camera: str = "front") -> dict[int, np.ndarray]:
        """{scene i: [len(states), H, W, 3]}: each scene's frames at its `snapshots` ``states`` (of its
        current episode), as ``render`` drew them then; the workers draw theirs in parallel."""
        requests = {int(i): list(states) for i, states in requests.items() if len(states)}
        if self._local is not None:
            got = self._local.render_snapshots(list(requests.items()), camera)
            return dict(zip(requests, got, strict=True))
        per_worker: dict[int, list[int]] = {}
        for i in requests:
            per_worker.setdefault(i % self.workers, []).append(i)
        for w, scenes in per_worker.items():
            self._conns[w].send(("render_snapshots", ([(i // self.workers, requests[i]) for i in scenes], camera)))
        out = {}
        for w, scenes in per_worker.items():
            status, value = self._conns[w].recv()
            if status != "ok":
                raise RuntimeError(f"MetaWorld worker failed in render_snapshots: {value}")
            out.update(zip(scenes, value, strict=True))
        return out

    def expert_actions(self, noise: float = 0.0) -> np.ndarray:
        return np.stack(self._scatter([list(x) for x in self._call("expert", lambda w: (noise,))]))

    def step(self, actions: np.ndarray) -> np.ndarray:
        """One action per scene that is not done; returns the mask of accepted actions."""
        a = np.asarray(actions, dtype=np.float64)
        if a.shape != (self.n, 7):
            raise ValueError(f"actions must be [{self.n}, 7], got {a.shape}")
        was_done = self.done
        live = ~was_done
        got = self._scatter(self._call("step", lambda w: (a[self._slots(w)], live[self._slots(w)])))
        self._states = np.stack([g[0] for g in got])
        self.steps += live.astype(int)
        self.succeeded |= np.array([g[1] for g in got]) & live
        return np.array([g[2] for g in got])

    def close(self) -> None:
        if self._local is not None:
            self._local.close()
        for conn in self._conns:
            try:
                conn.send(("close", ()))
            except (BrokenPipeError, OSError):
                pass
        for p in self._procs:
            p.join(timeout=10)
            if p.is_alive():
                p.terminate()
        self._conns, self._procs = [], []

    def __enter__(self) -> MetaWorldVec:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
