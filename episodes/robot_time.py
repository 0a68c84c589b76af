"""Robot time: what a set of stored episodes cost the arm and its operator, in seconds.

On a real arm the scarce resource is the arm's time, not the learner's GPU: every episode costs its
executed control steps, a scene reset, and often an operator. This module turns stored episode
metadata (``episodes.store``) into those seconds, so a learning curve can be drawn against
robot-hours instead of episodes:

    robot seconds   = executed control steps x control period + reset_s per episode
    operator seconds = steps an operator drove x control period + takeover_s per takeover
                       (+ label_s per operator-labelled episode)

* Executed control steps: the episode's ``n_steps`` (what the robot client reports; an early stop or
  a fault makes it shorter). Aborted episodes count too: the arm's time was spent all the same.
* Control period: the period the robot client measured its ticks against (``extra.timing.period_ms``)
  where the episode carries it, else the setting (``1 / robot.rate_hz``, 10 Hz by default).
* Reset: a setting. A real arm needs about 10 s to go home and have its scene reset (by a person or a
  script). The simulators reset instantly, but the benches charge the same 10 s so that a curve on
  the mock or on MetaWorld predicts robot-hours on the arm (``RESET_S`` says it per backend; pass
  ``reset_s=0`` for simulated time only).
* Operator: steps with ``intervention`` (meta ``intervention_steps``) at the control period, plus
  ``takeover_s`` for each takeover (notice, take the device, hand back; the demo report's 2 s). The
  number of takeovers is the robot's counter (``extra.counters.takeovers``) where it is recorded,
  else counted from the stored steps (runs of intervention steps) when a store is given.
* Expert demonstrations: on a real arm they are teleoperated, so all their steps are operator time
  too; they are reported apart (``demo_s``) because most benches record them before the clock starts.

Torch-free and import-light: the server, the demo report and the benches can all use it.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from episodes.store import EpisodeStore

DEFAULT_RATE_HZ = 10.0
REAL_ARM_RESET_S = 10.0
RESET_S = {"franka": REAL_ARM_RESET_S, "mock": REAL_ARM_RESET_S, "metaworld": REAL_ARM_RESET_S}
"""Reset seconds charged per episode by backend: the simulators reset instantly but are charged what
the arm would take, so their curves are in robot-hours on the arm."""
TAKEOVER_S = 2.0


@dataclass(frozen=True)
class RobotTimeConfig:
    period_s: float = 1.0 / DEFAULT_RATE_HZ
    """Control period of an episode that does not record its own (1 / robot.rate_hz)."""
    reset_s: float = REAL_ARM_RESET_S
    """Seconds charged per episode for going home and resetting the scene."""
    takeover_s: float = TAKEOVER_S
    """Operator seconds per takeover besides the steps the operator drove."""
    label_s: float = 0.0
    """Operator seconds per episode the operator labelled (0: labelling is not counted)."""

    def __post_init__(self) -> None:
        if not self.period_s > 0:
            raise ValueError(f"period_s must be > 0, got {self.period_s}")
        for name in ("reset_s", "takeover_s", "label_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")

    @classmethod
    def for_backend(cls, backend: str, rate_hz: float = DEFAULT_RATE_HZ, **kw) -> RobotTimeConfig:
        """The setting a bench on `backend` uses (its reset from RESET_S); unknown backends refused."""
        if backend not in RESET_S:
            raise ValueError(f"unknown backend {backend!r} (known: {', '.join(sorted(RESET_S))})")
        return cls(period_s=1.0 / rate_hz, reset_s=kw.pop("reset_s", RESET_S[backend]), **kw)


@dataclass
class RobotTime:
    """Seconds spent, in total and per task. ``robot_s`` = control + reset of robot episodes
    (online and eval); demos are apart in ``demo_s``."""
    episodes: int = 0
    steps: int = 0
    control_s: float = 0.0
    reset_s: float = 0.0
    operator_s: float = 0.0
    demo_episodes: int = 0
    demo_s: float = 0.0
    per_task: dict[str, dict] = field(default_factory=dict)

    @property
    def robot_s(self) -> float:
        return self.control_s + self.reset_s

    @property
    def robot_h(self) -> float:
        return self.robot_s / 3600.0

    def to_json(self) -> dict:
        return {"episodes": self.episodes, "steps": self.steps, "control_s": self.control_s,
                "reset_s": self.reset_s, "robot_s": self.robot_s, "robot_h": self.robot_h,
                "operator_s": self.operator_s, "demo_episodes": self.demo_episodes, "demo_s": self.demo_s,
                "per_task": self.per_task}


def episode_period_s(meta: dict, cfg: RobotTimeConfig) -> float:
    """The control period the episode ran at: its recorded one, else the setting."""
    timing = (meta.get("extra") or {}).get("timing") or {}
    period_ms = timing.get("period_ms")
    if isinstance(period_ms, (int, float)) and period_ms > 0:
        return float(period_ms) / 1e3
    return cfg.period_s


def takeovers(meta: dict, store: EpisodeStore | None = None) -> int:
    """Times an operator took the arm: the robot's counter, else runs of intervention steps in the store
    (0 when neither is known and no step was driven)."""
    counters = (meta.get("extra") or {}).get("counters") or {}
    if "takeovers" in counters:
        return int(counters["takeovers"])
    if not int(meta.get("intervention_steps") or 0):
        return 0
    if store is None:
        return 1  # at least one: some step was driven
    steps = store.load(meta["robot_id"], meta["episode_id"]).steps
    flags = [bool(s.get("intervention")) for s in steps]
    return sum(1 for i, f in enumerate(flags) if f and (i == 0 or not flags[i - 1]))


def episode_seconds(meta: dict, cfg: RobotTimeConfig, store: EpisodeStore | None = None) -> dict:
    """{"steps", "control_s", "reset_s", "operator_s"} of one episode."""
    period = episode_period_s(meta, cfg)
    steps = int(meta.get("n_steps") or 0)
    driven = int(meta.get("intervention_steps") or 0)
    operator = driven * period + takeovers(meta, store) * cfg.takeover_s
    if meta.get("label_source") == "operator":
        operator += cfg.label_s
    return {"steps": steps, "control_s": steps * period, "reset_s": cfg.reset_s, "operator_s": operator}


def robot_time(metas: Iterable[dict], cfg: RobotTimeConfig | None = None,
               store: EpisodeStore | None = None) -> RobotTime:
    """Robot and operator seconds of `metas` (stored episodes' meta.json, incomplete ones skipped)."""
    cfg = cfg or RobotTimeConfig()
    out = RobotTime()
    for meta in metas:
        if meta.get("incomplete"):
            continue
        sec = episode_seconds(meta, cfg, store)
        if meta.get("source") == "expert":  # teleoperated on an arm: robot and operator time alike
            out.demo_episodes += 1
            out.demo_s += sec["control_s"] + sec["reset_s"]
            continue
        out.episodes += 1
        out.steps += sec["steps"]
        out.control_s += sec["control_s"]
        out.reset_s += sec["reset_s"]
        out.operator_s += sec["operator_s"]
        task = out.per_task.setdefault(str(meta.get("task") or "-"), {"episodes": 0, "control_s": 0.0,
                                                                      "reset_s": 0.0, "robot_s": 0.0, "operator_s": 0.0})
        task["episodes"] += 1
        task["control_s"] += sec["control_s"]
        task["reset_s"] += sec["reset_s"]
        task["robot_s"] += sec["control_s"] + sec["reset_s"]
        task["operator_s"] += sec["operator_s"]
    return out


def cumulative_robot_s(metas: Iterable[dict], cfg: RobotTimeConfig | None = None,
                       store: EpisodeStore | None = None) -> list[float]:
    """Robot seconds after each of `metas` in the given order (demos cost nothing here): the x-axis of
    a success curve against robot time."""
    cfg = cfg or RobotTimeConfig()
    total, out = 0.0, []
    for meta in metas:
        if not meta.get("incomplete") and meta.get("source") != "expert":
            sec = episode_seconds(meta, cfg, store)
            total += sec["control_s"] + sec["reset_s"]
        out.append(total)
    return out


def format_table(t: RobotTime) -> str:
    """Per task and in total: episodes, robot minutes (control + reset), operator minutes."""
    lines = ["| task | episodes | control min | reset min | robot min | operator min |", "|---|---:|---:|---:|---:|---:|"]
    for task, row in sorted(t.per_task.items()):
        lines.append(f"| {task} | {row['episodes']} | {row['control_s'] / 60:.1f} | {row['reset_s'] / 60:.1f} | "
                     f"{row['robot_s'] / 60:.1f} | {row['operator_s'] / 60:.1f} |")
    lines.append(f"| **all** | {t.episodes} | {t.control_s / 60:.1f} | {t.reset_s / 60:.1f} | {t.robot_s / 60:.1f} | "
                 f"{t.operator_s / 60:.1f} |")
    lines.append(f"\n{t.steps} executed steps; robot time {t.robot_h:.2f} h. Demos (apart): {t.demo_episodes} episodes, "
                 f"{t.demo_s / 60:.1f} min.")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """`python -m episodes.robot_time --run-dir runs/demo [--rate-hz 10] [--reset-s 10]`: the robot and
    operator time a run's stored episodes cost."""
    import argparse

    p = argparse.ArgumentParser(prog="episodes.robot_time", description=main.__doc__.splitlines()[0])
    p.add_argument("--run-dir", required=True)
    p.add_argument("--rate-hz", type=float, default=DEFAULT_RATE_HZ, help="control rate of episodes that record none")
    p.add_argument("--reset-s", type=float, default=REAL_ARM_RESET_S, help="seconds charged per episode for the reset")
    p.add_argument("--takeover-s", type=float, default=TAKEOVER_S)
    p.add_argument("--label-s", type=float, default=0.0, help="operator seconds per operator label")
    args = p.parse_args(argv)
    from pathlib import Path

    root = Path(args.run_dir) / "episodes"
    if not root.is_dir():
        print(f"episodes.robot_time: no episode store at {root}")
        return 2
    store = EpisodeStore(root)
    cfg = RobotTimeConfig(period_s=1.0 / args.rate_hz, reset_s=args.reset_s, takeover_s=args.takeover_s,
                          label_s=args.label_s)
    print(format_table(robot_time(store.list_episodes(), cfg, store)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
