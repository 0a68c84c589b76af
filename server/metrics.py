"""Prometheus metrics of one server instance.

Each app gets its own ``CollectorRegistry`` (not the process-global one) so that several servers
in one process — tests, benchmarks — never collide on metric names.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Latency buckets from 0.1 ms to 2.5 s: inference of the tiny model is ~1-10 ms, a real VLA ~100 ms.
_LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1,
                    0.25, 0.5, 1.0, 2.5)
STAGES = ("decode", "queue", "infer", "total")


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.stage_seconds = Histogram(
            "vlaloop_act_stage_seconds", "Time per /v1/act stage", ["stage"],
            buckets=_LATENCY_BUCKETS, registry=r)
        self.batch_size = Histogram(
            "vlaloop_batch_size", "Observations per forward pass",
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32), registry=r)
        self.queue_depth = Gauge("vlaloop_queue_depth", "Requests waiting for a batch", registry=r)
        self.requests = Counter("vlaloop_act_requests_total", "Answered /v1/act requests",
                                ["encoding"], registry=r)
        self.errors = Counter("vlaloop_errors_total", "Refused or failed requests by kind",
                              ["kind"], registry=r)
        self.swaps = Counter("vlaloop_policy_swaps_total", "Policy versions swapped in", registry=r)
        self.swap_failures = Counter("vlaloop_policy_swap_failures_total",
                                     "Policy versions refused (load or validation failed)", registry=r)
        self.promotion_decisions = Counter("vlaloop_promotion_decisions_total",
                                           "Canary decisions of the promotion gate", ["action"], registry=r)
        self.canary_version = Gauge("vlaloop_canary_version", "Version in canary (-1 = none)", registry=r)
        self.canary_version.set(-1)
        self.policy_version = Gauge("vlaloop_policy_version", "Version now serving (-1 = none)",
                                    registry=r)
        self.policy_version.set(-1)

    def observe_stages(self, decode_s: float, queue_s: float, infer_s: float, total_s: float) -> None:
        for stage, seconds in zip(STAGES, (decode_s, queue_s, infer_s, total_s), strict=True):
            self.stage_seconds.labels(stage=stage).observe(seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)
