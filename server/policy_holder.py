"""The policy now serving, and the hot swap to new checkpoint versions.

A watcher thread polls ``checkpoints/LATEST``. A new version is loaded next to the serving one
(``Policy.load(registry, v, base=current)`` reuses the backbone, so a head-only version loads in
milliseconds), validated with a test forward pass on a dummy observation, and only then swapped
in. The swap is one reference assignment: a batch takes the reference once when it starts, so
every batch — and every response — is produced by exactly one version, and the switch happens
between batches. A version that fails to load or validate is refused, logged, counted and
reported in ``/v1/policy``; the old version keeps serving.

With promotion gating on (``server.promotion.enabled``, server/promotion.py) a new version does not
replace the serving one: it is loaded and validated the same way, then serves a canary share of
episodes next to the promoted version until the labels promote it (it becomes the serving version)
or refuse it (marked in the registry, never served again). ``policy_for(robot, episode)`` is the
version an episode's requests go to. An operator pin serves one version to every episode and pauses
the gate; both the pin and the promoted version are kept in the registry, so a restart resumes them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from concurrent.futures import Executor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from deployment.model import ModelConfig
from deployment.promotion import PromotionConfig
from interface.policy import BasePolicy, Observation
from server.metrics import ServerMetrics
from server.promotion import Canary, CanaryGate, Decision

log = logging.getLogger(__name__)

# Non-checkpoint failures (e.g. an I/O error) are retried this many times before the version is refused.
MAX_TRANSIENT_ATTEMPTS = 3
KEPT_DECISIONS = 20  # promotion decisions shown in /v1/policy


class PolicyLoader(Protocol):
    """Where versions come from. The default reads the run directory through ``vla.registry``."""

    def latest(self) -> int | None: ...
    def load(self, version: int, base: BasePolicy | None) -> BasePolicy: ...


class RegistryLoader:
    """Loads versions from ``<run_dir>/checkpoints`` with the vla API. Remote code and the model dir
    come from the server's own ``model`` configuration, never from a checkpoint."""

    def __init__(self, checkpoints_dir: str | Path, device: str = "cpu", model: ModelConfig | None = None) -> None:
        from vla.registry import CheckpointRegistry, TrustedSource  # lazy: importing torch is slow

        self.root = Path(checkpoints_dir)
        self.device = device
        self.registry = CheckpointRegistry(self.root)
        self.trusted = TrustedSource.of(model)

    def latest(self) -> int | None:
        if not self.root.exists():
            return None
        return self.registry.latest()

    def load(self, version: int, base: BasePolicy | None) -> BasePolicy:
        from vla.policy import Policy

        return Policy.load(self.registry, version, device=self.device, base=base, trusted=self.trusted)


class NoPolicyLoaded(RuntimeError):
    """No checkpoint has been loaded yet (or the server is shutting down)."""


class PinRefused(RuntimeError):
    """The operator asked to pin a version that cannot be served (unknown, refused, or invalid)."""


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
                 interval_s: float = 0.5, validate=validate_policy,
                 promotion: PromotionConfig | None = None) -> None:
        self.loader = loader
        self.metrics = metrics
        self.interval_s = interval_s
        self._worker = worker          # the inference thread: validation never runs beside a batch
        self._validate = validate
        self._policy: BasePolicy | None = None          # served to everyone (the promoted or pinned version)
        self._canary: BasePolicy | None = None          # served to the canary's episodes
        self._pinned: int | None = None
        self._loaded_at: float | None = None
        self._refused: dict[int, str] = {}
        self._attempts: dict[int, int] = {}
        self.registry = getattr(loader, "registry", None)  # promotion markers live in the registry
        self.promotion = promotion or PromotionConfig()
        if self.promotion.enabled and self.registry is None:
            raise ValueError("promotion gating needs a loader with a checkpoint registry (RegistryLoader)")
        self.gate = CanaryGate(self.promotion) if self.promotion.enabled else None
        self.decisions: deque[dict] = deque(maxlen=KEPT_DECISIONS)
        self.last_swap: SwapRecord | None = None
        self.last_swap_error: SwapRecord | None = None
        self.swaps = 0
        self.swap_failures = 0
        self.last_poll_error = ""
        self._lock = threading.RLock()  # state changes: the watcher vs the operator's pin/unpin
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ serving side

    @property
    def policy(self) -> BasePolicy | None:
        """The version every request without an episode (and every non-canary episode) gets."""
        return self._policy

    def require(self) -> BasePolicy:
        """The current policy, or NoPolicyLoaded (the HTTP layer answers 503)."""
        policy = self._policy
        if policy is None:
            raise NoPolicyLoaded("no policy loaded yet")
        return policy

    def policy_for(self, robot_id: str, episode_id: str | None) -> BasePolicy:
        """The version serving this episode: the canary for the canary's share of episodes while a
        canary runs (and no pin), else the promoted/pinned version."""
        policy, canary, gate = self.require(), self._canary, self.gate
        if gate is None or canary is None or episode_id is None or self._pinned is not None:
            return policy
        version = gate.assign(robot_id, episode_id, int(policy.version))
        return canary if version == int(canary.version) else policy

    def record_label(self, robot_id: str, episode_id: str, outcome: str) -> None:
        """A label arrived (operator or auto): it counts for the canary's arm that served the episode."""
        if self.gate is not None:
            arm = self.gate.record_label(robot_id, episode_id, outcome)
            if arm is not None:
                log.info("canary: %s/%s (%s) labelled %s", robot_id, episode_id, arm, outcome)

    def wait_ready(self, timeout: float) -> bool:
        return self._ready.wait(timeout)

    def refused(self) -> dict[int, str]:
        """Every refused version and why: load/validation failures and the registry's refusals."""
        out = dict(self._refused)
        if self.registry is not None:
            try:
                out.update({v: str(r.get("reason", "")) for v, r in self.registry.refused().items()})
            except OSError as e:
                log.warning("cannot read refused versions: %s", e)
        return out

    def status(self) -> dict:
        p = self._policy
        refused = self.refused()
        return {
            "version": None if p is None else int(p.version),
            "loaded_at": self._loaded_at,
            "swaps": self.swaps,
            "swap_failures": self.swap_failures,
            "last_swap": None if self.last_swap is None else asdict(self.last_swap),
            "last_swap_error": None if self.last_swap_error is None else asdict(self.last_swap_error),
            "refused_versions": sorted(refused),
            "refused": {str(v): why for v, why in sorted(refused.items())},
            "last_poll_error": self.last_poll_error,
            "promotion": self.promotion_status(),
        }

    def promotion_status(self) -> dict:
        canary = None if self.gate is None else self.gate.snapshot()
        view = None
        if canary is not None:
            decision = self.gate.decision()
            view = {**canary.to_json(), "prob_not_worse": None if decision is None else decision.prob_not_worse,
                    "state": "paused (pinned)" if decision is None else decision.reason,
                    "loaded": self._canary is not None}
        promoted = None
        if self.registry is not None:
            try:
                promoted = self.registry.promoted()
            except Exception as e:  # a corrupt PROMOTED file: shown, not fatal here
                log.warning("cannot read PROMOTED: %s", e)
        return {"enabled": self.gate is not None, "promoted": promoted, "pinned": self._pinned,
                "canary": view, "decisions": list(self.decisions),
                "config": self.promotion.model_dump()}

    # ------------------------------------------------------------------ watcher

    def start(self) -> None:
        if self.registry is not None:
            try:
                self._pinned = self.registry.pinned()
            except Exception as e:
                log.error("ignoring the pin: %s", e)
            if self.gate is not None:
                self.gate.pause(self._pinned is not None)
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
        """One poll: follow LATEST (no gate), the pin, or the gate. True if the serving version changed."""
        latest = self.loader.latest()
        self.last_poll_error = ""
        with self._lock:
            if self._pinned is not None:
                return self._serve(self._pinned)
            if self.gate is None:
                return self._follow_latest(latest)
            return self._gate_step(latest)

    def _follow_latest(self, latest: int | None) -> bool:
        if latest is None or latest in self._refused:
            return False
        current = self._policy
        if current is not None and int(current.version) == latest:
            return False
        if self.registry is not None and self.registry.is_refused(latest):
            return False  # refused by an earlier gated run: never served again
        return self._try_swap(latest, current)

    def _serve(self, version: int) -> bool:
        """Make ``version`` the version everyone gets (loaded and validated first)."""
        current = self._policy
        if version in self._refused or (current is not None and int(current.version) == version):
            return False
        return self._try_swap(version, current)

    def _try_swap(self, version: int, current: BasePolicy | None) -> bool:
        loaded = self._load_validated(version, current)
        if loaded is None:
            return False
        self._swap_in(*loaded)
        return True

    def _load_validated(self, version: int, base: BasePolicy | None) -> tuple[BasePolicy, float, float] | None:
        """Load and validate a version next to the serving one: (policy, load_ms, validate_ms), or
        None (and the version refused) if it fails."""
        t0 = time.perf_counter()
        load_ms = validate_ms = 0.0
        try:
            candidate = self.loader.load(version, base)
            load_ms = (time.perf_counter() - t0) * 1e3
            if int(candidate.version) != version:
                raise ValidationFailed(f"asked for version {version}, loaded {candidate.version}")
            t1 = time.perf_counter()
            self._worker.submit(self._validate, candidate).result()
            validate_ms = (time.perf_counter() - t1) * 1e3
        except Exception as e:
            self._refuse(version, e, load_ms, validate_ms)
            return None
        return candidate, load_ms, validate_ms

    def _swap_in(self, candidate: BasePolicy, load_ms: float = 0.0, validate_ms: float = 0.0) -> None:
        version = int(candidate.version)
        old = None if self._policy is None else int(self._policy.version)
        self._policy = candidate      # the swap: the next batch picks this reference up
        self._loaded_at = time.time()
        self.last_swap = SwapRecord(version, True, self._loaded_at, load_ms, validate_ms)
        self.swaps += 1
        self.metrics.swaps.inc()
        self.metrics.policy_version.set(version)
        self._ready.set()
        log.info("serving policy version %d (was %s; load %.1f ms, validate %.1f ms)",
                 version, old, load_ms, validate_ms)

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

    # ------------------------------------------------------------------ the gate

    def _gate_step(self, latest: int | None) -> bool:
        registry = self.registry
        promoted = registry.promoted()
        if promoted is None:
            return self._promote_first(latest)
        if self._serve(promoted):
            return True  # startup or after an unpin: the promoted version serves everyone again
        if self._policy is None or int(self._policy.version) != promoted:
            return False  # the promoted version does not load: keep trying, serve nothing new
        changed = False
        if self.gate.dirty and self.gate.canary is not None:
            self.gate.dirty = False
            registry.write_canary(self.gate.snapshot().to_json())
        decision = self.gate.decision()
        if decision is not None and decision.action != "continue":
            changed = self._conclude(decision)
        if self.gate.canary is None and latest is not None and latest > promoted:
            self._start_canary(self._next_candidate(latest, promoted))
        return changed

    def _next_candidate(self, latest: int, promoted: int) -> int:
        """The newest version, unless a canary was running when the server stopped (canary.json
        exists only while one runs): that one is finished first."""
        saved = self.registry.read_canary() or {}
        version = saved.get("version")
        if isinstance(version, int) and promoted < version <= latest and saved.get("control") == promoted:
            return version
        return latest

    def _promote_first(self, latest: int | None) -> bool:
        """No version promoted yet: the newest servable one is, with nothing to compare it against."""
        version = None if latest is None else self.registry.resume_version()
        if version is None or version in self._refused or not self._try_swap(version, self._policy):
            return False
        self.registry.set_promoted(version)
        self._record("promote", version, None, "the first version: nothing to compare it against")
        return True

    def _start_canary(self, candidate: int) -> None:
        registry, control = self.registry, int(self._policy.version)
        if candidate in self._refused or registry.is_refused(candidate):
            return
        ancestor = registry.refused_ancestor(candidate)
        if ancestor is not None:
            reason = f"descends from v{ancestor}, which was refused"
            registry.mark_refused(candidate, reason, ancestor=ancestor)
            self._record("rollback", candidate, None, reason)
            return
        loaded = self._load_validated(candidate, self._policy)
        if loaded is None:
            return
        saved = registry.read_canary()
        canary = Canary(version=candidate, control=control)
        if saved is not None and saved.get("version") == candidate and saved.get("control") == control:
            canary = Canary.from_json(saved)  # a restarted server resumes the canary's tallies
        self._canary = loaded[0]
        self.gate.start(canary)
        self.metrics.canary_version.set(candidate)
        registry.write_canary(canary.to_json())
        log.info("canary: v%d serves %.0f%% of new episodes next to v%d (%d/%d labels so far)", candidate,
                 100 * self.promotion.canary_fraction, control, canary.canary.n, canary.promoted.n)

    def _conclude(self, decision: Decision) -> bool:
        policy = self._canary
        self._canary = None               # first: no batch picks the canary up from here on
        canary = self.gate.end()
        stats = {"canary": asdict(canary.canary), "promoted": asdict(canary.promoted),
                 "prob_not_worse": decision.prob_not_worse, "control": canary.control}
        if decision.action == "promote":
            self.registry.set_promoted(canary.version)
            self._swap_in(policy)
        else:
            self.registry.mark_refused(canary.version, decision.reason, **stats)
        self.registry.write_canary(None)
        self.metrics.canary_version.set(-1)
        self._record(decision.action, canary.version, stats, decision.reason)
        return decision.action == "promote"

    def _record(self, action: str, version: int, stats: dict | None, reason: str) -> None:
        self.metrics.promotion_decisions.labels(action=action).inc()
        self.decisions.append({"action": action, "version": version, "at": time.time(), "reason": reason,
                               **(stats or {})})
        (log.info if action == "promote" else log.warning)("%s v%d: %s", "promoted" if action == "promote"
                                                           else "rolled back", version, reason)

    # ------------------------------------------------------------------ the operator's pin

    def pin(self, version: int) -> None:
        """Serve ``version`` to every episode and pause the gate (durable until unpin). Blocking:
        loads and validates the version first. Raises PinRefused."""
        registry = self._registry_for_pin()
        with self._lock:
            if version not in registry.versions():
                raise PinRefused(f"version {version}: no such version in {registry.root}")
            if version in self._refused or registry.is_refused(version):
                raise PinRefused(f"version {version} was refused: {self.refused().get(version, '')}")
            current = self._policy
            if current is None or int(current.version) != version:
                if not self._try_swap(version, current):
                    raise PinRefused(f"version {version} failed to load: {self._refused.get(version, '')}")
            registry.set_pinned(version)
            self._pinned = version
            if self.gate is not None:
                self.gate.pause(True)
        log.warning("operator pinned v%d: served to every robot, gating paused", version)

    def unpin(self) -> None:
        registry = self._registry_for_pin()
        with self._lock:
            registry.set_pinned(None)
            self._pinned = None
            if self.gate is not None:
                self.gate.pause(False)
        log.warning("operator unpinned: %s", "gating resumes" if self.gate else "following LATEST again")

    def _registry_for_pin(self) -> Any:
        if self.registry is None:
            raise PinRefused("pinning needs a checkpoint registry (this server's loader has none)")
        return self.registry
