"""The scalars of a metrics dict: what goes into a version's meta.json, learner_state.json,
status.json and TensorBoard (one rule for all of them)."""

from __future__ import annotations

import math


def scalar_metrics(metrics: dict) -> dict[str, float]:
    """Every number of `metrics` as a float (booleans as 0/1, non-finite as NaN); other values dropped."""
    out = {}
    for k, v in metrics.items():
        if isinstance(v, (bool, int, float)):
            out[k] = float(v) if math.isfinite(float(v)) else float("nan")
    return out
