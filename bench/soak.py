"""Load test: `python -m bench.soak --robots 8 --rate 10 --minutes 10`.

N mock robots (`vlaloop robot --backend mock`, separate processes) at R Hz against one server
(`vlaloop serve`, tiny model, auto-label) and one learner (`vlaloop learn --no-train`) for M
minutes. Measured:

* latency: every robot's /v1/act round trips, from the per-episode timing each robot stores in
  its EpisodeEnd (p50/p99 per episode), and the server's own stage histogram (/metrics);
* whether the robots keep their rate: executed steps per second per robot vs R, and the share of
  ticks a robot held for want of an action (hold_no_action / hold_watchdog counters);
* memory: RSS of every process sampled every few seconds; the slope of a straight-line fit after
  a warm-up (MB per minute) says whether it is flat;
* episodes lost: every episode a robot logged as ended must be complete in the store after the
  robots stop (SIGTERM: they close their episode and flush their outbox).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import re
import shutil
import signal
import sys
import time
from pathlib import Path

import httpx
import numpy as np

from bench.faults import ROOT, Proc, free_port

PAGE = 4096


def rss_mb(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE / 2**20
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return None


def cpu_seconds(pid: int) -> float | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            parts = f.read().rsplit(")", 1)[1].split()
        return (int(parts[11]) + int(parts[12])) / 100.0  # utime + stime, clock ticks (100 Hz)
    except (FileNotFoundError, IndexError, ValueError):
        return None


def write_config(run_dir: Path, server_port: int, learner_port: int, rate: float, max_steps: int) -> Path:
    import yaml

    from deployment.config import DeploymentConfig

    data = DeploymentConfig().model_dump()
    data["run_dir"] = str(run_dir)
    data["server"].update(host="127.0.0.1", port=server_port, auto_label=True)
    data["learner"].update(bind=f"tcp://127.0.0.1:{learner_port}")
    data["robot"].update(server_url=f"http://127.0.0.1:{server_port}", learner_addr=f"tcp://127.0.0.1:{learner_port}",
                         rate_hz=rate, max_steps=max_steps, realtime_priority=0, mode="sample", label_timeout_s=30.0)
    path = run_dir / "soak.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def server_total_quantiles(url: str) -> dict:
    """p50/p99 of the server's stage="total" histogram (bucket upper bounds)."""
    try:
        text = httpx.get(f"{url}/metrics", timeout=5).text
    except httpx.HTTPError:
        return {}
    from prometheus_client.parser import text_string_to_metric_families

    buckets = []
    for fam in text_string_to_metric_families(text):
        if fam.name == "vlaloop_act_stage_seconds":
            buckets += [(float(s.labels["le"]), s.value) for s in fam.samples
                        if s.name.endswith("_bucket") and s.labels.get("stage") == "total"]
    if not buckets or buckets[-1][1] == 0:
        return {}
    buckets.sort()
    total = buckets[-1][1]
    out = {"n": int(total)}
    for q in (0.5, 0.99):
        out[f"p{int(q * 100)}_ms_le"] = next(le for le, c in buckets if c >= q * total) * 1e3
    return out


def slope_mb_per_min(samples: list[tuple[float, float]], warmup_s: float) -> tuple[float, float]:
    """(slope MB/min after warm-up, growth MB from the end of warm-up to the end)."""
    pts = [(t, v) for t, v in samples if t >= warmup_s]
    if len(pts) < 3:
        return float("nan"), float("nan")
    t = np.array([p[0] for p in pts]) / 60.0
    v = np.array([p[1] for p in pts])
    return float(np.polyfit(t, v, 1)[0]), float(v[-1] - v[0])


def run(robots: int, rate: float, minutes: float, run_dir: Path, max_steps: int = 60,
        sample_s: float = 5.0) -> dict:
    from bench.harness import publish_tiny
    from episodes.store import EpisodeStore

    if run_dir.exists():
        shutil.rmtree(run_dir)
    (run_dir / "logs").mkdir(parents=True)
    publish_tiny(run_dir)
    sp, lp = free_port(), free_port()
    cfg = ["-c", str(write_config(run_dir, sp, lp, rate, max_steps)), "--log-file", "none"]  # this harness keeps each output in logs/<name>.log
    base = {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    server = Proc("server", [*cfg, "serve"], base, run_dir / "logs")
    learner = Proc("learner", [*cfg, "learn", "--no-train"], base, run_dir / "logs")
    bots = [Proc(f"robot{i}", [*cfg, "robot", "--backend", "mock"],
                 {**base, "VLALOOP_ROBOT__ROBOT_ID": f"soak{i}", "VLALOOP_ROBOT__SEED": str(1000 * (i + 1))},
                 run_dir / "logs") for i in range(robots)]
    url = f"http://127.0.0.1:{sp}"
    procs = [server, learner, *bots]
    samples: dict[str, list[tuple[float, float]]] = {p.name: [] for p in procs}
    load: list[tuple[float, float]] = []
    try:
        server.start()
        learner.start()
        deadline = time.time() + 120
        while time.time() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            time.sleep(0.2)
        for b in bots:
            b.start()
        t0 = time.time()
        cpu0 = {p.name: cpu_seconds(p.p.pid) or 0.0 for p in procs}
        end = t0 + minutes * 60
        while time.time() < end:
            time.sleep(sample_s)
            t = time.time() - t0
            for p in procs:
                mb = rss_mb(p.p.pid)
                if mb is not None:
                    samples[p.name].append((t, mb))
            with open("/proc/loadavg") as f:
                load.append((t, float(f.read().split()[0])))
            dead = [p.name for p in procs if not p.alive()]
            if dead:
                raise RuntimeError(f"{dead} exited during the soak; see {run_dir / 'logs'}")
            print(f"[{t:5.0f}s] rss MB " + " ".join(f"{n}={v[-1][1]:.0f}" for n, v in samples.items() if v)
                  + f" load {load[-1][1]:.1f}", flush=True)
        cpu = {p.name: (cpu_seconds(p.p.pid) or 0.0) - cpu0[p.name] for p in procs}
        server_q = server_total_quantiles(url)
        for b in bots:  # all at once: a robot stopping must not leave the others running longer
            b.p.send_signal(signal.SIGTERM)
        duration = time.time() - t0
        for b in bots:
            b.term(40)
        learner.term(20)
        server.term(20)
    finally:
        for p in procs:
            with contextlib.suppress(Exception):
                p.kill9()
    return analyse(run_dir, robots, rate, duration, samples, load, cpu, server_q, EpisodeStore(run_dir / "episodes"))


def analyse(run_dir, robots, rate, duration, samples, load, cpu, server_q, store) -> dict:
    ended = set()
    for i in range(robots):
        text = (run_dir / "logs" / f"robot{i}.log").read_text(errors="replace")
        ended |= {(f"soak{i}", m) for m in re.findall(r"episode (\S+) ended:", text)}
    metas = {(m["robot_id"], m["episode_id"]): m for m in store.list_episodes(complete_only=True)}
    lost = ended - set(metas)
    p99s, p50s, steps, holds, ticks = [], [], 0, 0, 0
    for m in metas.values():
        extra = m.get("extra", {})
        tm = extra.get("timing", {})
        if tm.get("latency_p99_ms") is not None:
            p99s.append(tm["latency_p99_ms"])
            p50s.append(tm["latency_p50_ms"])
        steps += int(m.get("n_stored_steps", 0))
        c = extra.get("counters", {})
        holds += int(c.get("hold_no_action", 0)) + int(c.get("hold_watchdog", 0))
        ticks += int(tm.get("ticks", 0))
    warm = min(60.0, duration * 0.2)
    memory = {}
    for name, pts in samples.items():
        s, g = slope_mb_per_min(pts, warm)
        late, _ = slope_mb_per_min(pts, duration * 2 / 3)
        memory[name] = {"start_mb": pts[0][1] if pts else None, "end_mb": pts[-1][1] if pts else None,
                        "slope_mb_per_min": s, "growth_after_warmup_mb": g, "slope_last_third_mb_per_min": late}
    aborted = sum(1 for m in metas.values() if m.get("outcome") == "aborted"  # the final SIGTERM aside
                  and m.get("extra", {}).get("end_reason") != "stopped")
    return {
        "robots": robots, "rate_hz": rate, "duration_s": duration, "episodes_ended": len(ended),
        "episodes_stored": len(ended & set(metas)), "episodes_lost": len(lost), "episodes_aborted": aborted,
        "steps_stored": steps, "steps_per_s_per_robot": steps / duration / robots,
        "hold_fraction": holds / max(1, ticks),
        "latency_p50_ms_median": float(np.median(p50s)) if p50s else None,
        "latency_p99_ms_median": float(np.median(p99s)) if p99s else None,
        "latency_p99_ms_max": float(np.max(p99s)) if p99s else None,
        "server_total": server_q, "load_avg_mean": float(np.mean([v for _, v in load])) if load else None,
        "cpu_s": cpu, "memory": memory, "samples": samples, "load": load,
        "episode_p99": sorted((m.get("finished", 0), m.get("extra", {}).get("timing", {}).get("latency_p99_ms"))
                              for m in metas.values()),
    }


def table(r: dict) -> str:
    lines = [f"{r['robots']} robots at {r['rate_hz']:g} Hz for {r['duration_s'] / 60:.1f} min",
             "| measure | value |", "|---|---|",
             f"| episodes ended / stored / lost | {r['episodes_ended']} / {r['episodes_stored']} / {r['episodes_lost']} |",
             f"| episodes aborted by the robot (starved, server lost; the final stop aside) | {r['episodes_aborted']} |",
             f"| executed steps per second per robot (target {r['rate_hz']:g}) | {r['steps_per_s_per_robot']:.2f} |",
             f"| ticks held for want of an action | {r['hold_fraction']:.1%} |",
             f"| /v1/act round trip p50 (median over episodes) | {r['latency_p50_ms_median']:.1f} ms |"
             if r["latency_p50_ms_median"] is not None else "| /v1/act round trip p50 | - |",
             f"| /v1/act round trip p99 (median / max over episodes) | {r['latency_p99_ms_median']:.1f} / "
             f"{r['latency_p99_ms_max']:.1f} ms |" if r["latency_p99_ms_median"] is not None else "| p99 | - |",
             f"| server stage total p50 / p99 (histogram bucket) | {r['server_total'].get('p50_ms_le', '-')} / "
             f"{r['server_total'].get('p99_ms_le', '-')} ms |",
             f"| load average (mean, 2 cores) | {r['load_avg_mean']:.1f} |"]
    lines += ["", "| process | RSS start MB | RSS end MB | slope after warm-up MB/min | slope last third MB/min "
              "| CPU s |", "|---|---|---|---|---|---|"]
    for name, m in r["memory"].items():
        lines.append(f"| {name} | {m['start_mb']:.0f} | {m['end_mb']:.0f} | {m['slope_mb_per_min']:+.2f} | "
                     f"{m.get('slope_last_third_mb_per_min', float('nan')):+.2f} | {r['cpu_s'].get(name, 0):.0f} |")
    return "\n".join(lines)


def figure(r: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 3.8))
    for name, pts in r["samples"].items():
        if pts:
            a1.plot([t / 60 for t, _ in pts], [v - pts[0][1] for _, v in pts],
                    label=f"{name} ({pts[0][1]:.0f} MB at start)", lw=2 if name in ("server", "learner") else 0.8)
    a1.set_xlabel("minutes")
    a1.set_ylabel("RSS growth since the first sample (MB)")
    a1.set_title("memory of every process")
    a1.legend(fontsize=6, ncol=2)
    ep = [(f, p) for f, p in r["episode_p99"] if p is not None]
    if ep:
        f0 = ep[0][0]
        a2.scatter([(f - f0) / 60 for f, _ in ep], [p for _, p in ep], s=6)
    a2.set_xlabel("minutes (episode end)")
    a2.set_ylabel("/v1/act round trip p99 per episode (ms)")
    a2.set_title(f"{r['robots']} robots at {r['rate_hz']:g} Hz: {r['steps_per_s_per_robot']:.1f} steps/s/robot")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--robots", type=int, default=8)
    p.add_argument("--rate", type=float, default=10.0)
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--run-dir", default=str(ROOT / "runs" / "soak"))
    p.add_argument("--json", default=None)
    p.add_argument("--figure", default=str(ROOT / "docs" / "img" / "reliability_soak.png"))
    a = p.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    r = run(a.robots, a.rate, a.minutes, Path(a.run_dir))
    print(table(r))
    if a.json:
        Path(a.json).write_text(json.dumps(r, indent=1))
    if a.figure:
        figure(r, Path(a.figure))
    return 0 if r["episodes_lost"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
