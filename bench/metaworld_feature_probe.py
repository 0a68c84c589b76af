"""Are the frozen features good enough for the head? A linear probe of the object's position.

    python -m bench.metaworld_feature_probe --run-dir RUN [--n 120] [--tasks drawer-open window-close button-press]

The head-only RL of iRe-VLA sees the scene only through the backbone + pooler features (frozen in
the RL stage) and the robot state. The hand position is in the state; where the object is (the
drawer handle, the window handle, the button: MetaWorld's observation[4:7]) the head can only learn
from the features. This fits a ridge regression from the features of one `front` frame to the
object's position, per task, on the frames of episode seeds 0..0.67n and reports it on the other
seeds (R^2 per axis, and the error in cm next to the spread of the layouts), for:

* the model in RUN (LATEST, e.g. a bench's Stage 0: ``/work/mw-table/stage0/s0``),
* the same architecture untrained (random init: what the architecture gives for free).

Frames: from each seed's layout, the noisy scripted expert runs a random 0..40 steps first, so the
hand is in the picture at varied places, as it is during an episode.
"""

from __future__ import annotations

import argparse
import json
import tempfile

import numpy as np

import sim.metaworld  # noqa: F401  (MUJOCO_GL before mujoco)

RIDGE = (1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0)


def frames(task: str, n: int, image_size: int):
    """n (frame, state, instruction, object position) samples, one per seed 0..n-1."""
    from sim.metaworld.env import MetaWorldScene
    from sim.metaworld.expert import add_noise

    scene, out = MetaWorldScene(image_size), []
    for seed in range(n):
        spec = scene.reset(task, seed)
        rng = np.random.default_rng([seed, 0x9B])
        for _ in range(int(rng.integers(0, 41))):
            scene.step(add_noise(scene.expert_action(), rng, 0.1))
        out.append((scene.render("front"), scene.state_vector(), spec.instruction, scene.obs[4:7].copy()))
    scene.close()
    return out


def features(policy, samples) -> np.ndarray:
    from interface.policy import Observation

    feats = []
    for i in range(0, len(samples), 32):
        obs = [Observation({"front": img}, state, text) for img, state, text, _ in samples[i:i + 32]]
        feats.append(policy.features(obs).numpy())
    return np.concatenate(feats)


def ridge_probe(x: np.ndarray, y: np.ndarray, n_train: int) -> dict:
    """Ridge from x to y, lambda picked on the last quarter of the training seeds; the test seeds'
    R^2 per axis and RMSE (m), next to the test targets' spread (std, m)."""
    mu, sd = x[:n_train].mean(0), x[:n_train].std(0) + 1e-6
    x = (x - mu) / sd
    fit_n = int(0.75 * n_train)

    def predict(lam, rows, at):  # the intercept (the targets' mean) is not shrunk
        y_mean = y[rows].mean(0)
        w = np.linalg.solve(x[rows].T @ x[rows] + lam * np.eye(x.shape[1]), x[rows].T @ (y[rows] - y_mean))
        return x[at] @ w + y_mean

    val = [float(((predict(lam, slice(0, fit_n), slice(fit_n, n_train)) - y[fit_n:n_train]) ** 2).mean())
           for lam in RIDGE]
    lam = RIDGE[int(np.argmin(val))]
    pred = predict(lam, slice(0, n_train), slice(n_train, None))
    test = y[n_train:]
    r2 = 1 - ((pred - test) ** 2).sum(0) / ((test - test.mean(0)) ** 2).sum(0).clip(1e-12)
    # an axis the layouts do not vary (under 1 mm) has no R^2 worth the name
    r2 = [float(v) if s > 1e-3 else None for v, s in zip(r2, test.std(0), strict=True)]
    return {"r2": r2, "rmse_cm": float(100 * np.sqrt(((pred - test) ** 2).sum(1).mean())),
            "spread_cm": float(100 * np.sqrt(((test - test.mean(0)) ** 2).sum(1).mean())), "lambda": lam}


def _r2(v: float | None) -> str:
    return "–" if v is None else f"{v:.2f}"


def main(argv: list[str] | None = None) -> int:
    import torch

    from bench.harness import publish_tiny
    from vla.policy import Policy
    from vla.registry import CheckpointRegistry

    p = argparse.ArgumentParser(prog="bench.metaworld_feature_probe", description=__doc__.splitlines()[0])
    p.add_argument("--run-dir", required=True, help="a run whose LATEST model is probed (e.g. a Stage 0)")
    p.add_argument("--n", type=int, default=120, help="episode seeds (frames) per task")
    p.add_argument("--tasks", nargs="+", default=["drawer-open", "window-close", "button-press"])
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    trained = Policy.load(CheckpointRegistry(f"{args.run_dir}/checkpoints"))
    _, registry, _ = publish_tiny(tempfile.mkdtemp(prefix="mw-probe-"))
    models = {f"trained ({args.run_dir}, v{trained.version})": trained, "untrained (random init)":
              Policy.load(registry)}
    n_train = int(round(2 * args.n / 3))
    rows = []
    for task in args.tasks:
        samples = frames(task, args.n, trained.spec.image_size)
        y = np.stack([s[3] for s in samples])
        for name, policy in models.items():
            rows.append({"task": task, "model": name, **ridge_probe(features(policy, samples), y, n_train)})
            r = rows[-1]
            print(f"{task:14s} {name}: R^2 x/y/z {' / '.join(_r2(v) for v in r['r2'])}, "
                  f"error {r['rmse_cm']:.1f} cm (spread {r['spread_cm']:.1f} cm)", flush=True)
    print(f"\nLinear probe of the object position from one front frame's features ({args.n} seeds per task, "
          f"test on the last {args.n - n_train})\n")
    print("| task | features | R² x | R² y | R² z | error, cm | layout spread, cm |\n|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['task']} | {r['model']} | {' | '.join(_r2(v) for v in r['r2'])} | {r['rmse_cm']:.1f} | "
              f"{r['spread_cm']:.1f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
