"""One MetaWorld scene for vlaloop: per-seed layouts, a fast offscreen renderer, 7-D actions.

``MetaWorldScene`` holds one goal-observable MetaWorld env per task it has met (creating one costs
~0.3 s; switching task between episodes reuses it) and a ``mujoco.Renderer`` per env.

* Layouts: ``reset(task, seed)`` seeds the env's generator and draws a fresh layout from it
  (``_freeze_rand_vec = False``, ``seeded_rand_vec = True``): every seed its own layout, the same
  seed the same layout. (``gym.make('Meta-World/MT1', seed=s)`` instead picks one of 50 frozen
  layouts and ignores ``reset(seed=...)``.)
* Rendering: gymnasium's ``env.render()`` draws with a 4096 shadow map and 4x multisampling
  (~100 ms a frame on CPU). Here a separate ``mujoco.Renderer`` at the model's image size, with
  ``model.vis.quality.offsamples = 0`` set before it is created and the shadow and reflection
  flags off (a few ms at 96 px). The corner cameras come out of MuJoCo rotated by 180 degrees:
  they are flipped (``img[::-1, ::-1]``) so the table is at the bottom of the image.
* Success: MetaWorld's own ``info["success"]`` after each step is the auto label.
* Steps: per-task limits (tasks.MAX_STEPS); MetaWorld's own 500-step truncation is lifted.

``MUJOCO_GL`` defaults to ``egl`` (Mesa's llvmpipe on a machine without a GPU); set
``MUJOCO_GL=osmesa`` where only libosmesa6 is installed.
"""

from __future__ import annotations

import atexit
import os

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np  # noqa: E402

from sim.metaworld.actions import HOME_RPY, to_metaworld  # noqa: E402
from sim.metaworld.expert import add_noise, expert_action, scripted_policy  # noqa: E402
from sim.metaworld.tasks import LANGUAGE, TaskSpec, sample_task  # noqa: E402

# vlaloop camera name -> (MuJoCo camera, flip 180 degrees)
CAMERAS = {"front": ("corner", True), "side": ("corner2", True), "top": ("topview", False),
           "wrist": ("gripperPOV", False)}
CAMERA_NAMES = tuple(CAMERAS)


def make_env(task: str):
    """The goal-observable MetaWorld env of ``task``, set up for seeded per-episode layouts."""
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE

    if task not in LANGUAGE:
        raise ValueError(f"unknown MetaWorld task {task!r} (one of {tuple(LANGUAGE)})")
    env = ALL_V3_ENVIRONMENTS_GOAL_OBSERVABLE[f"{task}-v3-goal-observable"]()
    env._freeze_rand_vec = False  # a new layout at every reset ...
    env.seeded_rand_vec = True  # ... drawn from env.np_random, which reset() seeds
    env.max_path_length = 1_000_000  # our own per-task limits apply
    return env


class FastRenderer:
    """Offscreen frames of one MetaWorld env: no multisampling, no shadows, no reflections."""

    def __init__(self, env, size: int):
        import mujoco

        self._mujoco = mujoco
        env.model.vis.quality.offsamples = 0  # must be set before the renderer's context exists
        self.size = int(size)
        self.renderer = mujoco.Renderer(env.model, self.size, self.size)
        global _EXIT_HOOK
        if not _EXIT_HOOK:  # after the first context (and mujoco's EGL exit hook): runs before that hook
            atexit.register(_close_renderers)
            _EXIT_HOOK = True
        self.env = env

    def render(self, camera: str, data=None) -> np.ndarray:
        """A frame of ``data`` (default: this env's). Another env of the same task may pass its
        own: the scene's geometry is placed from ``data`` alone (positions and orientations that
        the layout and the motion set), the rest (meshes, textures, materials) is the task's."""
        if camera not in CAMERAS:
            raise ValueError(f"unknown MetaWorld camera {camera!r} (one of {CAMERA_NAMES})")
        name, flip = CAMERAS[camera]
        flags = self._mujoco.mjtRndFlag
        self.renderer.update_scene(self.env.data if data is None else data, camera=name)
        self.renderer.scene.flags[flags.mjRND_SHADOW] = False
        self.renderer.scene.flags[flags.mjRND_REFLECTION] = False
        img = self.renderer.render()
        return np.ascontiguousarray(img[::-1, ::-1] if flip else img)

    def close(self) -> None:
        self.renderer.close()


class _Sim:
    """A MetaWorld env of one task and its expert; frames come from the task's shared renderer."""

    def __init__(self, task: str, image_size: int):
        self.task = task
        self.env = make_env(task)
        self.image_size = image_size
        self.expert = None

    def render(self, camera: str) -> np.ndarray:
        return _renderer(self.task, self.image_size, self.env).render(camera, self.env.data)


# One renderer (GL context) per (task, image size) in a process, shared by all its envs of that
# task: a context holds the task's meshes and textures, ~130 MB on llvmpipe, and a rollout of 24
# scenes used to make one per scene (12 GB for the learning bench's evaluation). The frames are the
# same (tests/sim/test_metaworld_sim.py).
_RENDERERS: dict[tuple[str, int], FastRenderer] = {}
_EXIT_HOOK = False


def _renderer(task: str, image_size: int, env) -> FastRenderer:
    key = (task, image_size)
    if key not in _RENDERERS:
        _RENDERERS[key] = FastRenderer(env, image_size)
    return _RENDERERS[key]


def _close_renderers() -> None:
    """Free the GL contexts while EGL is still up (freeing them during interpreter teardown raises)."""
    while _RENDERERS:
        _RENDERERS.popitem()[1].close()


# Idle envs by (task, image size): making an env and its GL context costs ~0.5 s, so scenes hand
# theirs back here when they switch task or close, and the next scene of that task reuses one.
_IDLE: dict[tuple[str, int], list[_Sim]] = {}


def _acquire(task: str, image_size: int) -> _Sim:
    idle = _IDLE.get((task, image_size))
    return idle.pop() if idle else _Sim(task, image_size)


def _release(sim: _Sim) -> None:
    _IDLE.setdefault((sim.task, sim.image_size), []).append(sim)


class MetaWorldScene:
    """One MetaWorld episode at a time, in vlaloop's conventions (see the module docstring)."""

    def __init__(self, image_size: int = 96):
        self.image_size = int(image_size)
        self._sim: _Sim | None = None
        self.task: TaskSpec | None = None
        self.obs: np.ndarray | None = None
        self.steps = 0
        self.last_success = False

    @property
    def env(self):
        if self._sim is None:
            raise RuntimeError("no episode: call reset() first")
        return self._sim.env

    def reset(self, task: str, seed: int, split: str = "train") -> TaskSpec:
        """Start an episode of ``task`` (a task or a task set) with the layout of ``seed``."""
        spec = sample_task(int(seed), task, split)
        if self._sim is None or self._sim.task != spec.name:
            if self._sim is not None:
                _release(self._sim)
            self._sim = _acquire(spec.name, self.image_size)
        env = self._sim.env
        env.seed(int(seed) % 2**32)
        self.obs, _ = env.reset()
        self.task, self.steps, self.last_success = spec, 0, False
        return spec

    def step(self, action: np.ndarray) -> bool:
        """Execute one 7-D action (see actions.py); returns False (nothing moved) for a
        non-finite action. ``success()`` is MetaWorld's success after the step."""
        a = np.asarray(action, dtype=np.float64).reshape(-1)
        if a.shape != (7,):
            raise ValueError(f"a vlaloop action has 7 values, got shape {np.shape(action)}")
        if not np.all(np.isfinite(a)):
            return False
        self.obs, _, _, _, info = self.env.step(to_metaworld(a))
        self.steps += 1
        self.last_success = bool(info["success"])
        return True

    def render(self, camera: str = "front") -> np.ndarray:
        if self._sim is None:
            raise RuntimeError("no episode: call reset() first")
        return self._sim.render(camera)

    def snapshot(self) -> np.ndarray:
        """The simulation state now (MuJoCo's integration state: positions, velocities, mocap,
        controls): `render_snapshot` draws the frame of this instant later, identical to
        ``render()`` now."""
        import mujoco

        env = self.env
        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        state = np.empty(mujoco.mj_stateSize(env.model, spec))
        mujoco.mj_getState(env.model, env.data, state, spec)
        return state

    def render_snapshot(self, state: np.ndarray, camera: str = "front") -> np.ndarray:
        """The frame of a `snapshot` of this episode; the scene is left as it was."""
        import mujoco

        env = self.env
        spec = mujoco.mjtState.mjSTATE_INTEGRATION
        now = self.snapshot()
        mujoco.mj_setState(env.model, env.data, state, spec)
        mujoco.mj_forward(env.model, env.data)
        try:
            return self.render(camera)
        finally:
            mujoco.mj_setState(env.model, env.data, now, spec)
            mujoco.mj_forward(env.model, env.data)

    def state_vector(self) -> np.ndarray:
        """[7] float32: hand x, y, z (m, MetaWorld's world frame), the fixed roll, pitch, yaw,
        gripper opening (0 closed .. 1 open, MetaWorld's normalised finger distance)."""
        o = self.obs
        return np.concatenate([o[:3], HOME_RPY, [np.clip(o[3], 0.0, 1.0)]]).astype(np.float32)

    def success(self) -> bool:
        return self.last_success

    def expert_action(self) -> np.ndarray:
        """The scripted expert's clean action [7] for the current observation."""
        if self._sim.expert is None:
            self._sim.expert = scripted_policy(self._sim.task)
        return expert_action(self._sim.expert, self.obs)

    def close(self) -> None:
        """Hand the env back to the idle pool (this process reuses it for the next scene)."""
        if self._sim is not None:
            _release(self._sim)
            self._sim = None


__all__ = ["CAMERAS", "CAMERA_NAMES", "FastRenderer", "MetaWorldScene", "add_noise", "make_env"]
