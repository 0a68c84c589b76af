"""A RECAP version (advantage indicator + classifier-free guidance in its metadata) hot-swapped into a
real server under load: no failed request, every answer from the version it names, the metadata on
/v1/policy; a version whose advantage metadata this server cannot serve is refused and the
previous one keeps serving."""

from __future__ import annotations

import json
import time

import httpx
import pytest
import torch
from test_server_swap import Hammer, _check_consistent, _wait_answered_by, _wait_refused, _wait_version, mark

from bench.harness import ServerThread, publish_tiny, set_constant_actions
from deployment.config import DeploymentConfig
from deployment.server import ServerConfig
from vla.advantage import META_KEY, AdvantagePrompt
from vla.normalization import Normalizer
from vla.registry import publish

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    model, registry, v1 = publish_tiny(run_dir, mark=mark(1))
    config = DeploymentConfig(run_dir=str(run_dir), server=ServerConfig(watch_interval_s=0.02))
    with ServerThread(config) as srv:
        assert srv.wait_ready() == v1
        yield srv, model, registry


def _publish_recap(model, registry, version_mark: float, conditioning: dict) -> int:
    set_constant_actions(model, version_mark)  # positive and unconditioned means both equal the mark
    return publish(registry, model, Normalizer.identity(), kind="full", phase="recap",
                   run_time={META_KEY: conditioning})


def test_a_recap_version_is_hot_swapped_under_load_with_no_failed_request(served):
    srv, model, registry = served
    with Hammer(srv.url) as hammer:
        _wait_answered_by(hammer, 1)
        guided = _publish_recap(model, registry, mark(2), AdvantagePrompt(True, 2.0).to_meta())
        _wait_version(srv, guided)
        _wait_answered_by(hammer, guided)  # the guided (two-prompt) forward pass answers the clients
        # metadata this server cannot serve right: refused, the guided version keeps serving
        bad = _publish_recap(model, registry, mark(3), {"format": 99, "indicator": True})
        _wait_refused(srv, bad)
        time.sleep(0.2)
        assert srv.app.state.holder.policy.version == guided
    versions = _check_consistent(hammer)
    assert {1, guided} <= versions and bad not in versions
    with httpx.Client(base_url=srv.url) as c:
        info = c.get("/v1/policy").json()
    assert info["version"] == guided
    assert info["metadata"][META_KEY] == {"format": 1, "indicator": True, "guidance": 2.0}
    assert "format 99 is not supported" in json.dumps(info["last_swap_error"])
