"""Dynamic micro-batching: concurrent /v1/act requests from several robots run as one forward pass.

Requests wait in an asyncio queue. One collector task forms a batch: it takes the first waiting
request, then keeps taking requests until the batch holds ``max_batch`` of them, or as many as
there are robots active in the last second, or ``max_wait_ms`` has passed since the first one
arrived (or since the worker became free, if it was busy). So a lone robot never waits for company, and a fleet's requests that arrive within a few
milliseconds of each other share one forward pass. While a batch runs, new requests queue up and
form the next batch. Inference runs in ONE worker thread (off the event loop, never two batches
at once); the batch takes the serving policy reference once, so the whole batch is produced by one
version, and a hot swap lands between batches.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from server.metrics import ServerMetrics
from server.policy_holder import PolicyHolder

log = logging.getLogger(__name__)

ACTIVE_WINDOW_S = 1.0  # a robot that sent a request within this window is expected to send again


class NoPolicyLoaded(RuntimeError):
    """No checkpoint has been loaded yet (or the server is shutting down)."""


class InferenceFailed(RuntimeError):
    """The policy raised or produced non-finite output for this observation."""


@dataclass
class BatchResult:
    output: Any            # vla.policy.ActOutput
    version: int
    queue_s: float
    infer_s: float
    batch_size: int


@dataclass
class _Pending:
    obs: Any
    mode: str
    robot_id: str
    future: asyncio.Future
    t_enqueue: float = field(default_factory=time.perf_counter)


class MicroBatcher:
    def __init__(self, holder: PolicyHolder, worker: Executor, metrics: ServerMetrics,
                 max_batch: int = 8, max_wait_ms: float = 2.0) -> None:
        self.holder = holder
        self.worker = worker
        self.metrics = metrics
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1e3
        self._queue: asyncio.Queue[_Pending] | None = None
        self._task: asyncio.Task | None = None
        self._last_seen: dict[str, float] = {}
        self._worker_free_since = 0.0

    async def start(self) -> None:
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._collect_forever(), name="micro-batcher")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
        while self._queue is not None and not self._queue.empty():
            item = self._queue.get_nowait()
            if not item.future.done():
                item.future.set_exception(NoPolicyLoaded("server is shutting down"))

    async def submit(self, obs: Any, mode: str, robot_id: str) -> BatchResult:
        if self.holder.policy is None:
            raise NoPolicyLoaded("no policy loaded yet")
        assert self._queue is not None, "batcher not started"
        item = _Pending(obs, mode, robot_id, asyncio.get_running_loop().create_future())
        self._last_seen[robot_id] = item.t_enqueue
        self._queue.put_nowait(item)
        self.metrics.queue_depth.set(self._queue.qsize())
        return await item.future

    # ------------------------------------------------------------------ collector

    def _expected_batch(self, now: float) -> int:
        active = sum(1 for t in self._last_seen.values() if now - t < ACTIVE_WINDOW_S)
        if len(self._last_seen) > 4 * self.max_batch:  # forget robots long gone
            self._last_seen = {r: t for r, t in self._last_seen.items() if now - t < ACTIVE_WINDOW_S}
        return max(1, min(self.max_batch, active))

    async def _next_batch(self) -> list[_Pending]:
        q = self._queue
        first = await q.get()
        batch = [first]
        expected = self._expected_batch(time.perf_counter())
        # The wait window opens when the worker is free, not when the first request came: requests
        # that queued behind the previous batch wait (briefly) for the robots that batch just
        # answered, instead of running as a small batch of their own (which splits a fleet into
        # groups that alternate forever).
        deadline = max(first.t_enqueue, self._worker_free_since) + self.max_wait_s
        while len(batch) < self.max_batch:
            if not q.empty():
                batch.append(q.get_nowait())
                continue
            remaining = deadline - time.perf_counter()
            if len(batch) >= expected or remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(q.get(), remaining))
            except TimeoutError:
                break
        self.metrics.queue_depth.set(q.qsize())
        return [p for p in batch if not p.future.done()]  # a client that went away is skipped

    async def _collect_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._next_batch()
            if not batch:
                continue
            policy = self.holder.policy  # taken ONCE: the whole batch is one version
            if policy is None:
                for p in batch:
                    p.future.set_exception(NoPolicyLoaded("no policy loaded yet"))
                continue
            try:
                results = await loop.run_in_executor(self.worker, self._run_batch, policy, batch)
            except Exception as e:  # executor shut down etc.: fail this batch, keep collecting
                results = [InferenceFailed(f"{type(e).__name__}: {e}")] * len(batch)
            for p, r in zip(batch, results, strict=True):
                if p.future.done():
                    continue
                if isinstance(r, Exception):
                    p.future.set_exception(r)
                else:
                    p.future.set_result(r)
            self._worker_free_since = time.perf_counter()

    # ------------------------------------------------------------------ worker thread

    def _run_batch(self, policy: Any, batch: list[_Pending]) -> list[BatchResult | Exception]:
        t0 = time.perf_counter()
        version = int(policy.version)
        try:
            outputs: list[Any] = list(policy.act_batch([p.obs for p in batch], [p.mode for p in batch]))
        except Exception as e:
            # One bad observation must not fail the others: retry one by one to find it.
            log.warning("batch of %d failed (%s); retrying one by one", len(batch), e)
            outputs = []
            for p in batch:
                try:
                    outputs.append(policy.act_batch([p.obs], [p.mode])[0])
                except Exception as e1:
                    outputs.append(InferenceFailed(f"{type(e1).__name__}: {e1}"))
        infer_s = time.perf_counter() - t0
        self.metrics.batch_size.observe(len(batch))
        results: list[BatchResult | Exception] = []
        for p, out in zip(batch, outputs, strict=True):
            if isinstance(out, Exception):
                results.append(out)
            elif not (np.all(np.isfinite(out.actions)) and np.isfinite(out.log_prob)
                      and np.isfinite(out.value)):
                results.append(InferenceFailed(f"policy version {version} produced non-finite output"))
            else:
                results.append(BatchResult(out, version, t0 - p.t_enqueue, infer_s, len(batch)))
        return results
