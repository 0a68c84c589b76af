"""Schemathesis against the server's own OpenAPI document: a real `vlaloop serve` (tiny model, tokens
on) on 127.0.0.1, every operation fuzzed with schema-derived and schema-violating inputs. No request
may get a 5xx, hang, or crash the server, and every 4xx must say what was wrong (a JSON ``detail``)."""

from __future__ import annotations

import time

import httpx
import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from standins import Proc, free_port, http_ok

TOKEN = "fuzz-token"  # the same token for both roles, so every operation can be reached
EXAMPLES = 10
HANG_S = 10.0
seen: dict[str, set[int]] = {}


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    import sys

    import torch

    from bench.harness import publish_tiny

    torch.set_num_threads(1)
    run_dir = tmp_path_factory.mktemp("fuzzrun")
    publish_tiny(run_dir)
    port = free_port()
    env = {"OMP_NUM_THREADS": "1", "VLALOOP_SERVER__ROBOT_TOKEN": TOKEN, "VLALOOP_SERVER__OPERATOR_TOKEN": TOKEN,
           "VLALOOP_SERVER__LABEL_POLL_MAX_S": "1.0"}  # label long-polls end within a second
    proc = Proc([sys.executable, "-m", "vlaloop.cli", "--run-dir", str(run_dir), "serve", "--port", str(port)],
                run_dir / "server.log", port=port, ready=lambda: http_ok(f"http://127.0.0.1:{port}/readyz"),
                env=env).start()
    try:
        yield f"http://127.0.0.1:{port}", proc, run_dir
    finally:
        proc.stop()
        print("\nstatus codes per operation:", {k: sorted(v) for k, v in sorted(seen.items())})


def check_case(case, url: str, proc) -> None:
    t0 = time.monotonic()
    resp = case.call(base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=HANG_S)
    took = time.monotonic() - t0
    seen.setdefault(f"{case.method} {case.path}", set()).add(resp.status_code)
    where = f"{case.method} {case.formatted_path} query={case.query} body={str(case.body)[:200]!r}"
    assert resp.status_code < 500, f"{where}: {resp.status_code} {resp.text[:300]}"
    assert took < HANG_S, f"{where}: took {took:.1f} s"
    if 400 <= resp.status_code < 500 and resp.status_code != 405:
        detail = resp.json().get("detail")
        assert detail and isinstance(detail, str), f"{where}: 4xx without a clear detail: {resp.text[:300]}"
    assert proc.proc.poll() is None, f"server died on {where}"


# schemathesis as a library (its pytest plugin does not load under pytest 9): one hypothesis run per
# operation and generation mode (positive: schema-valid inputs, negative: schema-violating ones)
@pytest.mark.parametrize("mode", list(schemathesis.GenerationMode), ids=lambda m: m.value)
def test_no_5xx_no_hang_clear_4xx(served, mode):
    url, proc, _ = served
    api = schemathesis.openapi.from_url(f"{url}/openapi.json")
    ops = [r.ok() for r in api.get_all_operations()]
    assert len(ops) >= 10, [o.label for o in ops]
    for op in ops:
        @settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(op.as_strategy(generation_mode=mode))
        def run(case):
            check_case(case, url, proc)

        try:
            run()
        except Unsatisfiable:  # negative mode on an operation with no inputs: nothing to violate
            assert mode == schemathesis.GenerationMode.NEGATIVE, op.label
def test_server_still_healthy_after_fuzzing(served):
    url, proc, _ = served
    assert proc.proc.poll() is None
    assert httpx.get(f"{url}/readyz", timeout=5).status_code == 200
    metrics = httpx.get(f"{url}/metrics", timeout=5).text
    assert 'kind="inference"' not in metrics or 'errors_total{kind="inference"} 0.0' in metrics
