"""Accuracy of hand-eye calibration on the mock rig over many seeds and noise levels, and how
often a clean run is refused (it should never be).

    python -m bench.calib_sweep --seeds 10 --noise 2 5
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from calibration.handeye import HandEyeRefused, MotionPlan, collect_samples, solve_handeye
from calibration.mock_rig import make_mock_rig
from calibration.transforms import invert, rotation_angle

PIVOT = {"eye-in-hand": 0.2, "eye-to-hand": 0.0}


def sweep(mode: str, noise: float, seeds: range, max_angle_deg: float) -> dict:
    errors, refused = [], 0
    for seed in seeds:
        rig = make_mock_rig(mode, noise_sigma=noise, seed=seed)
        plan = MotionPlan(max_angle_deg=max_angle_deg, pivot_m=PIVOT[mode], step_period_s=0, settle_s=0, seed=seed)
        samples = collect_samples(rig.arm, rig.camera, plan)
        try:
            sol = solve_handeye(samples, mode, rig.scene.spec, rig.scene.intrinsics)
        except HandEyeRefused:
            refused += 1
            continue
        D = invert(rig.scene.truth()) @ sol.best.T
        errors.append((np.linalg.norm(D[:3, 3]) * 1000, math.degrees(rotation_angle(D[:3, :3]))))
    e = np.array(errors) if errors else np.full((1, 2), math.nan)
    return {"runs": len(seeds), "refused": refused, "mean": e.mean(axis=0), "max": e.max(axis=0)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=10)
    p.add_argument("--first-seed", type=int, default=10)
    p.add_argument("--noise", type=float, nargs="+", default=[2.0, 5.0])
    p.add_argument("--max-angle", type=float, default=MotionPlan.max_angle_deg)
    args = p.parse_args()
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    print("| mode | pixel noise σ | runs | refused | error mean (mm / deg) | error max (mm / deg) |")
    print("|---|---|---|---|---|---|")
    for noise in args.noise:
        for mode in PIVOT:
            r = sweep(mode, noise, seeds, args.max_angle)
            print(f"| {mode} | {noise:g} | {r['runs']} | {r['refused']} | {r['mean'][0]:.2f} / {r['mean'][1]:.3f} | "
                  f"{r['max'][0]:.2f} / {r['max'][1]:.3f} |", flush=True)


if __name__ == "__main__":
    main()
