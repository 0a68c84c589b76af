"""MicroBatcher with the real tiny policy (no HTTP): concurrent requests share one forward pass,
a lone robot does not wait for company, and a robot not expected back soon is not waited for."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch

from bench.harness import publish_tiny
from interface.policy import Observation
from server.batcher import MicroBatcher
from server.metrics import ServerMetrics
from server.policy_holder import PolicyHolder, RegistryLoader

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def holder(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    publish_tiny(run_dir)
    worker = ThreadPoolExecutor(1)
    h = PolicyHolder(RegistryLoader(run_dir / "checkpoints"), worker, ServerMetrics())
    assert h.check_once() and h.policy.version == 1
    yield h
    worker.shutdown()


def _obs(seed: int) -> Observation:
    image = np.random.default_rng(seed).integers(0, 255, (96, 96, 3), dtype=np.uint8)
    return Observation(images={"front": image}, state=np.zeros(7, np.float32), instruction="reach the red block")


async def _with_batcher(holder, max_wait_ms, body):
    batcher = MicroBatcher(holder, holder._worker, holder.metrics, max_batch=8, max_wait_ms=max_wait_ms)
    await batcher.start()
    try:
        return await body(batcher)
    finally:
        await batcher.stop()


def test_concurrent_requests_share_one_forward_pass_and_keep_their_own_answers(holder):
    obs = [_obs(i) for i in range(8)]

    async def body(b):
        return await asyncio.gather(*(b.submit(o, "greedy", f"rob{i}") for i, o in enumerate(obs)))

    results = asyncio.run(_with_batcher(holder, 2.0, body))
    assert [r.batch_size for r in results] == [8] * 8 and {r.version for r in results} == {1}
    alone = holder.policy.act_batch(obs, ["greedy"] * 8)  # the same batch, run directly
    for r, ref in zip(results, alone, strict=True):
        np.testing.assert_allclose(r.output.actions, ref.actions, atol=1e-5)
    assert len({round(float(r.output.actions[0, 0]), 7) for r in results}) > 1  # answers not mixed up


def test_a_lone_robot_and_a_slow_robot_are_not_waited_for(holder):
    # a 1 s window and a robot that comes back after 2 s: a batcher that waited would keep the lone
    # request ~1 s, five times the bounds below, so a loaded machine cannot fake a pass or a failure
    async def body(b):
        await b.submit(_obs(0), "greedy", "slow")
        await asyncio.sleep(2.0)
        await b.submit(_obs(0), "greedy", "slow")  # "slow" comes back 2 s after each reply
        t0 = time.perf_counter()
        lone = await b.submit(_obs(1), "greedy", "fast")
        return lone, time.perf_counter() - t0

    lone, elapsed = asyncio.run(_with_batcher(holder, 1000.0, body))
    assert lone.batch_size == 1
    assert lone.queue_s < 0.2, lone.queue_s  # max_wait is 1 s, but nobody is expected that soon
    assert elapsed < lone.infer_s + 0.2


def test_a_robot_expected_back_within_the_window_is_waited_for(holder):
    sizes: dict[str, list[int]] = {"a": [], "b": []}

    async def robot(b, name, think_s):
        for step in range(6):
            r = await b.submit(_obs(step), "greedy", name)
            sizes[name].append(r.batch_size)
            await asyncio.sleep(think_s)  # "b" needs a few ms between reply and next request

    async def body(b):
        await asyncio.gather(robot(b, "a", 0.0), robot(b, "b", 0.003))

    asyncio.run(_with_batcher(holder, 50.0, body))
    # after the first round teaches the batcher b's rhythm, a's requests wait for b's
    assert sizes["a"][2:] == [2] * 4, sizes


class _SlowForward:
    """The tiny policy with a 100 ms forward pass: a big backbone's, without its weights."""

    def __init__(self, policy):
        self.policy, self.version = policy, policy.version

    def act_batch(self, obs, modes):
        time.sleep(0.1)
        return self.policy.act_batch(obs, modes)


def test_the_window_is_at_least_one_forward_pass(holder, monkeypatch):
    # max_wait is 1 ms, robot "b" comes back 5 ms after each reply: with a 100 ms forward pass the
    # window follows the forward (20x b's gap), so b is waited for and the two share every pass
    # after the first round; with the 1 ms window alone they would alternate in batches of one
    slow = _SlowForward(holder.policy)
    monkeypatch.setattr(holder, "policy_for", lambda robot_id, episode_id=None: slow)
    sizes: dict[str, list[int]] = {"a": [], "b": []}

    async def robot(b, name, think_s):
        for step in range(6):
            r = await b.submit(_obs(step), "greedy", name)
            sizes[name].append(r.batch_size)
            await asyncio.sleep(think_s)

    async def body(b):
        await asyncio.gather(robot(b, "a", 0.0), robot(b, "b", 0.005))
        return b.window_s()

    window = asyncio.run(_with_batcher(holder, 1.0, body))
    assert sizes["a"][2:] == [2] * 4, sizes
    assert window >= 0.1
