"""The policy now serving, and the hot swap to new checkpoint versions.

A watcher thread polls ``checkpoints/LATEST``. A new version is loaded next to the serving one
(``Policy.load(registry, v, base=current)`` reuses the backbone, so a head-only version loads in
milliseconds), validated with a test forward pass on a dummy observation, and only then swapped
in. The swap is one reference assignment: a batch takes the reference once when it starts, so
every batch — and every response — is produced by exactly one version, and the switch happens
between batches. A version that fails to load or validate is refused, logged, counted and
reported in ``/v1/policy``; the old version keeps serving.
"""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import Executor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from interface.policy import BasePolicy, Observation
from server.metrics import ServerMetrics

log = logging.getLogger(__name__)

# Non-checkpoint failures (e.g. an I/O error) are retried this many times before the version is refused.
MAX_TRANSIENT_ATTEMPTS = 3


class PolicyLoader(Protocol):
    """Where versions come from. The default reads the run directory through ``vla.registry``."""

    def latest(self) -> int | None: ...
    def load(self, version: int, base: BasePolicy | None) -> BasePolicy: ...


class RegistryLoader:
    """Loads versions from ``<run_dir>/checkpoints`` with the vla API."""

    def __init__(self, checkpoints_dir: str | Path, device: str = "cpu") -> None:
        from vla.registry import CheckpointRegistry  # lazy: importing torch/transformers is slow

        self.root = Path(checkpoints_dir)
        self.device = device
        self.registry = CheckpointRegistry(self.root)

    def latest(self) -> int | None:
        if not self.root.exists():
            return None
        return self.registry.latest()

    def load(self, version: int, base: BasePolicy | None) -> BasePolicy:
        from vla.policy import Policy

        return Policy.load(self.registry, version, device=self.device, base=base)


class NoPolicyLoaded(RuntimeError):
    """No checkpoint has been loaded yet (or the server is shutting down)."""


class ValidationFailed(Exception):
    """A loaded version produced something unusable on the test observation."""


def validate_policy(policy: BasePolicy) -> None:
    """One greedy and one sampled forward pass on a dummy observation; everything must be finite
    and shaped [chunk, action_dim]. Raises ValidationFailed."""

    spec = policy.spec
    size = spec.image_size
    image = np.full((size, size, 3), 127, dtype=np.uint8)
    obs = Observation(images={cam: image for cam in spec.cameras},
                      state=np.zeros(spec.state_dim, dtype=np.float32), instruction="validate")
    outs = policy.act_batch([obs, obs], ["greedy", "sample"])
    for mode, out in zip(("greedy", "sample"), outs, strict=True):
        actions = np.asarray(out.actions)
        if actions.shape != (spec.chunk, spec.action_dim):
            raise ValidationFailed(f"{mode} actions have shape {actions.shape}, "
                                   f"expected {(spec.chunk, spec.action_dim)}")
        if not np.all(np.isfinite(actions)):
            raise ValidationFailed(f"{mode} actions are not finite")
        if not (np.isfinite(out.log_prob) and np.isfinite(out.value)):
            raise ValidationFailed(f"{mode} log_prob/value not finite ({out.log_prob}, {out.value})")


@dataclass
class SwapRecord:
    version: int
    ok: bool
    at: float               # unix time of the attempt
    load_ms: float
    validate_ms: float
    error: str = ""


class PolicyHolder:
    def __init__(self, loader: PolicyLoader, worker: Executor, metrics: ServerMetrics,
                 interval_s: float = 0.5, validate=validate_policy) -> None:
        self.loader = loader
        self.metrics = metrics
        self.interval_s = interval_s
        self._worker = worker          # the inference thread: validation never runs beside a batch
        self._validate = validate
        self._policy: BasePolicy | None = None
        self._loaded_at: float | None = None
        self._refused: dict[int, str] = {}
        self._attempts: dict[int, int] = {}
        self.last_swap: SwapRecord | None = None
        self.last_swap_error: SwapRecord | None = None
        self.swaps = 0
        self.swap_failures = 0
        self.last_poll_error = ""
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ serving side

    @property
    def policy(self) -> BasePolicy | None:
        """The version to use for the next batch (None until the first checkpoint loaded)."""
        return self._policy

    def require(self) -> BasePolicy:
        """The current policy, or NoPolicyLoaded (the HTTP layer answers 503)."""
        policy = self._policy
        if policy is None:
            raise NoPolicyLoaded("no policy loaded yet")
        return policy

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    def status(self) -> dict:
        p = self._policy
        return {
            "version": None if p is None else int(p.version),
            "loaded_at": self._loaded_at,
            "swaps": self.swaps,
            "swap_failures": self.swap_failures,
            "last_swap": None if self.last_swap is None else asdict(self.last_swap),
            "last_swap_error": None if self.last_swap_error is None else asdict(self.last_swap_error),
            "refused_versions": sorted(self._refused),
            "last_poll_error": self.last_poll_error,
        }

    # ------------------------------------------------------------------ watcher

    def start(self) -> None:
        self._thread = threading.Thread(target=self._watch, name="policy-watcher", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                self.check_once()
            except Exception as e:  # the watcher must never die: log (once per new error) and keep polling
                message = f"{type(e).__name__}: {e}"
                if message != self.last_poll_error:
                    log.error("policy watcher: %s (will keep polling)", message)
                self.last_poll_error = message
            self._stop.wait(self.interval_s)

    def check_once(self) -> bool:
        """Poll LATEST once; load, validate and swap if it names a new version. True if swapped."""
        latest = self.loader.latest()
        self.last_poll_error = ""
        current = self._policy
        if latest is None or latest in self._refused:
            return False
        if current is not None and int(current.version) == latest:
            return False
        return self._try_swap(latest, current)

    def _try_swap(self, version: int, current: BasePolicy | None) -> bool:
        t0 = time.perf_counter()
        load_ms = validate_ms = 0.0
        try:
            candidate = self.loader.load(version, current)
            load_ms = (time.perf_counter() - t0) * 1e3
            if int(candidate.version) != version:
                raise ValidationFailed(f"asked for version {version}, loaded {candidate.version}")
            t1 = time.perf_counter()
            self._worker.submit(self._validate, candidate).result()
            validate_ms = (time.perf_counter() - t1) * 1e3
        except Exception as e:
            self._refuse(version, e, load_ms, validate_ms)
            return False
        old = None if current is None else int(current.version)
        self._policy = candidate      # the swap: the next batch picks this reference up
        self._loaded_at = time.time()
        self.last_swap = SwapRecord(version, True, self._loaded_at, load_ms, validate_ms)
        self.swaps += 1
        self.metrics.swaps.inc()
        self.metrics.policy_version.set(version)
        self._ready.set()
        log.info("serving policy version %d (was %s; load %.1f ms, validate %.1f ms)",
                 version, old, load_ms, validate_ms)
        return True

    def _refuse(self, version: int, error: Exception, load_ms: float, validate_ms: float) -> None:
        from vla.registry import CheckpointError

        message = f"{type(error).__name__}: {error}"
        self._attempts[version] = self._attempts.get(version, 0) + 1
        permanent = isinstance(error, (CheckpointError, ValidationFailed))
        if permanent or self._attempts[version] >= MAX_TRANSIENT_ATTEMPTS:
            self._refused[version] = message
        self.swap_failures += 1
        self.metrics.swap_failures.inc()
        self.last_swap_error = SwapRecord(version, False, time.time(), load_ms, validate_ms, message)
        serving = None if self._policy is None else int(self._policy.version)
        log.error("refused policy version %d (still serving %s): %s", version, serving, message)
