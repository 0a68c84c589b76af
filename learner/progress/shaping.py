"""Potential-based reward shaping with the progress model as the potential (Ng, Harada & Russell 1999).

Per decision t of a rollout: r'_t = r_t + scale * (gamma * Phi(s_{t+1}) * (1 - done_t) - Phi(s_t)),
with Phi the predicted progress of the decision's observation and the potential of a terminal state
taken as 0. The shaping terms telescope: over an episode that ends with ``done`` their discounted
sum is -scale * Phi(s_0), the same for every policy from that start, so the optimal policy is
unchanged while each decision gets a dense signal (progress made now rather than a bit at the end).

Which tasks get shaping (``shaping_decision``): only where the model passed its held-out check and
the task has something to learn progress from (a demo or a success). A task with neither, or whose
own held-out VOC is below the threshold, keeps the sparse reward, and the decision says why.
"""

from __future__ import annotations

import numpy as np


def shaped_rewards(rewards: np.ndarray, potentials: np.ndarray, dones: np.ndarray, gamma: float,
                   scale: float = 1.0) -> np.ndarray:
    """[N] rewards + shaping over a rollout's decisions in time order (several episodes may follow
    each other: ``dones`` separate them; the decision after a done starts a new episode). The last
    decision has no successor: unless it is done its next potential is its own (a cut rollout)."""
    r, phi, d = (np.asarray(a, np.float64) for a in (rewards, potentials, dones))
    if not (r.shape == phi.shape == d.shape and r.ndim == 1):
        raise ValueError(f"rewards, potentials and dones must be equal-length vectors: {r.shape} {phi.shape} {d.shape}")
    if not 0.0 <= gamma <= 1.0:
        raise ValueError(f"gamma must be in [0, 1], got {gamma}")
    if len(r) == 0:
        return r
    nxt = np.append(phi[1:], phi[-1])
    return r + scale * (gamma * nxt * (1.0 - d) - phi)


def task_data(metas: list[dict]) -> dict[str, dict]:
    """Per task: demos and successes (what progress can be learnt from) among trainable episodes."""
    out: dict[str, dict] = {}
    for m in metas:
        task = str(m.get("task") or "-")
        row = out.setdefault(task, {"demos": 0, "successes": 0, "failures": 0})
        if m.get("outcome") == "success":
            row["demos" if m.get("source") == "expert" else "successes"] += 1
        elif m.get("outcome") == "failure":
            row["failures"] += 1
    return out


def shaping_decision(task: str, report: dict | None) -> tuple[bool, str]:
    """(shape this task's rewards?, why) from a progress-model report (``ProgressModelTrainer``)."""
    if not report or report.get("state") != "fitted":
        state = (report or {}).get("state", "no progress model")
        return False, f"sparse reward: {state}"
    data = (report.get("tasks") or {}).get(task)
    if not data or not (data["demos"] or data["successes"]):
        return False, f"sparse reward: task {task!r} has no demos and no successes yet"
    quality = report.get("quality") or {}
    if not quality.get("usable"):
        return False, f"sparse reward: progress model unusable ({quality.get('reason', 'not checked')})"
    own = (quality.get("voc_per_task") or {}).get(task)
    if own is not None and own["voc"] < quality["min_voc"]:
        return False, (f"sparse reward: task {task!r} held-out VOC {own['voc']:.2f} is below "
                       f"{quality['min_voc']:.2f}")
    return True, f"shaped: {quality.get('reason')}"


def shape_decisions(rewards: np.ndarray, dones: np.ndarray, potentials: np.ndarray, gamma: float,
                    use: bool, scale: float = 1.0) -> np.ndarray:
    """One episode's decision rewards as an RL phase would train on them: shaped where
    ``shaping_decision`` allowed it (``use``), else the sparse rewards unchanged (a copy)."""
    if not use:
        return np.asarray(rewards, np.float64).copy()
    return shaped_rewards(rewards, potentials, dones, gamma, scale)
