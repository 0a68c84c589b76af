"""HTTP to the inference server (docs/architecture.md, "Wire protocol").

``ServerClient``: keep-alive httpx calls (msgpack for /v1/act, JSON for status and labels).
``ActionLink``: the background request thread. The control loop hands it the newest
observation and never waits on the network itself; the link sends one request at a time, keeps
the connection alive with cheap /healthz probes while idle, and reports a dead server (``down``)
so the watchdog can hold the arm within a control period.

Dead or busy? A refused or reset connection (the server process is gone) counts at once. A probe
that merely times out does not: on a loaded machine a 200 ms probe can miss while the server is
fine. The server is declared gone only when it has answered nothing -- no probe, no /v1/act
reply -- for ``silence_s``. Meanwhile the arm is safe anyway: the control loop's watchdog holds
it as soon as no fresh action arrives, whatever the link thinks.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from dataclasses import dataclass

import httpx

from protocol.codec import CodecError, packb, unpackb
from protocol.messages import ActRequest, ActResponse

log = logging.getLogger(__name__)

MSGPACK = "application/msgpack"
PROBE_OK, PROBE_SLOW, PROBE_GONE = "ok", "slow", "gone"


class ServerUnavailable(RuntimeError):
    """No answer: connection refused/reset, timeout, 5xx."""


class ServerSlow(ServerUnavailable):
    """Connected, but no answer within the timeout (the server is busy or hung, not gone)."""


class ServerRefused(RuntimeError):
    """The server answered but refused the request (4xx); the text holds its reason."""

    def __init__(self, message: str, status_code: int | None = None):
        super().__init__(message)
        self.status_code = status_code  # 401: no token, 403: a wrong one (server/auth.py)


class ServerClient:
    def __init__(self, base_url: str, token: str = "", robot_id: str = "", timeout_s: float = 2.0):
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        # Short connect timeout: a dead server must be noticed within a control period.
        self._http = httpx.Client(base_url=base_url.rstrip("/"), headers=headers,
                                  timeout=httpx.Timeout(timeout_s, connect=min(timeout_s, 0.5)),
                                  limits=httpx.Limits(max_keepalive_connections=2, max_connections=4))
        self.robot_id = robot_id

    def close(self) -> None:
        self._http.close()

    def _request(self, method: str, path: str, timeout: float | None = None, **kw) -> httpx.Response:
        try:
            kwargs = dict(kw)
            if timeout is not None:
                kwargs["timeout"] = httpx.Timeout(timeout, connect=min(timeout, 0.5))
            r = self._http.request(method, path, **kwargs)
        except httpx.TimeoutException as e:  # read, write, pool or connect: slow, not (yet) gone
            raise ServerSlow(f"{method} {path}: {type(e).__name__}: {e}") from None
        except httpx.HTTPError as e:  # refused, reset, timeout, protocol error
            raise ServerUnavailable(f"{method} {path}: {type(e).__name__}: {e}") from None
        if r.status_code == 503:  # up, but no policy loaded (yet): not a dead server
            raise ServerRefused(f"{method} {path}: HTTP 503 (not ready): {r.text[:200]}", 503)
        if r.status_code >= 500:
            raise ServerUnavailable(f"{method} {path}: HTTP {r.status_code}: {r.text[:200]}")
        if r.status_code >= 400:
            raise ServerRefused(f"{method} {path}: HTTP {r.status_code}: {r.text[:500]}", r.status_code)
        return r

    # ---------------------------------------------------------------- inference
    def act(self, req: ActRequest, timeout: float | None = None) -> ActResponse:
        r = self._request("POST", "/v1/act", timeout=timeout, content=packb(req.to_wire()),
                          headers={"Content-Type": MSGPACK, "Accept": MSGPACK})
        try:
            return ActResponse.model_validate(unpackb(r.content))
        except (CodecError, ValueError) as e:
            raise ServerRefused(f"/v1/act answered something that is not an ActResponse: {e}") from None

    def healthz(self, timeout: float = 0.5) -> bool:
        """The server process answers (liveness)."""
        return self.probe(timeout) == PROBE_OK

    def probe(self, timeout: float = 0.5) -> str:
        """/healthz: PROBE_OK, PROBE_SLOW (no answer in time) or PROBE_GONE (refused, reset, 5xx)."""
        try:
            self._request("GET", "/healthz", timeout=timeout)
            return PROBE_OK
        except ServerSlow:
            return PROBE_SLOW
        except (ServerUnavailable, ServerRefused):
            return PROBE_GONE

    def ready(self, timeout: float = 1.0, teleop_only: bool = False) -> bool:
        """The server answers and has a policy loaded (/readyz); with ``teleop_only`` (recording
        demonstrations) a server without a checkpoint that serves teleop ("teleop only") will do."""
        try:
            self._request("GET", "/readyz", timeout=timeout)
            return True
        except ServerRefused as e:
            return teleop_only and '"teleop_only":true' in str(e).replace(" ", "")
        except ServerUnavailable:
            return False

    def learner_phase(self, timeout: float = 1.0) -> str | None:
        """The learner's phase as the server reports it in /v1/policy (None when unknown)."""
        try:
            phase = self._request("GET", "/v1/policy", timeout=timeout).json().get("learner_phase")
        except (ServerUnavailable, ServerRefused, ValueError):
            return None
        return phase if isinstance(phase, str) else None

    # ---------------------------------------------------------------- robot status and labels
    def post_status(self, status: dict, timeout: float = 1.0) -> None:
        self._request("POST", f"/v1/robots/{self.robot_id}/status", timeout=timeout, json=status)

    def post_awaiting(self, episode_id: str, auto_outcome: str | None, n_steps: int,
                      timeout: float = 2.0) -> None:
        self._request("POST", f"/v1/robots/{self.robot_id}/episodes/{episode_id}/awaiting",
                      timeout=timeout, json={"auto_outcome": auto_outcome, "n_steps": n_steps})

    def takeover_wanted(self, episode_id: str, driving: bool, wait_s: float) -> bool:
        """Long-poll the page's take-over of ``episode_id``: its state as soon as it differs from
        ``driving`` (or after ``wait_s``). Raises ServerRefused (e.g. 404 on a server without it)."""
        r = self._request("GET", f"/v1/robots/{self.robot_id}/teleop/wanted", timeout=wait_s + 5.0,
                          params={"episode_id": episode_id, "driving": driving, "wait_s": wait_s})
        return bool(r.json()["driving"])

    def next_episode(self, waiting: bool, wait_s: float, offer: dict | None = None) -> dict:
        """What the operator set for the next episode: ``{"ready": bool, "task": str | None,
        "instruction": str | None}``. ``waiting``: this robot waits for the operator's "ready" (scene
        reset); the call long-polls up to ``wait_s`` for it. ``offer``: the tasks this robot may be
        given, for the page."""
        r = self._request("POST", f"/v1/robots/{self.robot_id}/next_episode", timeout=wait_s + 5.0,
                          json={"waiting": waiting, "wait_s": wait_s, **(offer or {})})
        return r.json()

    def wait_label(self, episode_id: str, timeout_s: float) -> dict | None:
        """Long-poll the operator's label: the label dict, or None if ``timeout_s`` passed."""
        r = self._request("GET", f"/v1/robots/{self.robot_id}/label", timeout=timeout_s + 5.0,
                          params={"episode_id": episode_id, "timeout_s": timeout_s})
        if r.status_code == 204:
            return None
        return r.json()


@dataclass
class Reply:
    request: ActRequest
    response: ActResponse | None  # None: the request failed
    t_sent: float  # monotonic
    t_received: float  # monotonic
    error: str = ""
    late: bool = False  # no answer within the request timeout: abandoned, counts as a late reply


class ActionLink:
    """One background thread that owns all /v1/act traffic of a control loop."""

    def __init__(self, client: ServerClient, request_timeout_s: float, probe_interval_s: float,
                 silence_s: float = 1.0):
        self.client = client
        self.request_timeout_s = request_timeout_s
        self.probe_interval_s = probe_interval_s
        self.silence_s = silence_s  # no answer at all for this long (probes timing out): gone
        self.last_answer = time.monotonic()  # the server last answered anything (probe or /v1/act)
        self.slow_probes = 0  # probes that timed out without the server being declared gone
        self._cv = threading.Condition()
        self._pending: ActRequest | None = None
        self._replies: collections.deque[Reply] = collections.deque()
        self.reply_ready = threading.Event()
        self._down: str | None = None  # why the server is considered gone; None = reachable
        self.down_event = threading.Event()  # set the moment the server is found gone (wakes the loop)
        self._last_contact = 0.0
        self._stop = False
        self.in_flight: str | None = None  # request_id being sent now
        self.last_reply_ok = 0.0  # monotonic time of the last successful /v1/act reply
        self.requests = 0
        self.failures = 0
        self._thread = threading.Thread(target=self._run, name="action-link", daemon=True)

    def start(self) -> ActionLink:
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._cv:
            self._stop = True
            self._cv.notify_all()
        self._thread.join(timeout=5)

    @property
    def down(self) -> str | None:
        return self._down

    def _set_down(self, reason: str | None) -> None:
        self._down = reason
        if reason is None:
            self.down_event.clear()
        else:
            self.down_event.set()

    def submit(self, req: ActRequest) -> None:
        """Queue the newest observation; an older one not yet sent is replaced (it is stale)."""
        with self._cv:
            self._pending = req
            self._cv.notify_all()

    def take_replies(self) -> list[Reply]:
        with self._cv:
            out = list(self._replies)
            self._replies.clear()
            self.reply_ready.clear()
            return out

    def _run(self) -> None:
        while True:
            with self._cv:
                if not self._stop and self._pending is None:
                    self._cv.wait(timeout=self.probe_interval_s)
                if self._stop:
                    return
                req, self._pending = self._pending, None
                self.in_flight = req.request_id if req is not None else None
            if req is not None:
                self._send(req)
            elif time.monotonic() - self._last_contact >= self.probe_interval_s:
                self._probe()

    def _send(self, req: ActRequest) -> None:
        t0 = time.monotonic()
        self.requests += 1
        try:
            resp = self.client.act(req, timeout=self.request_timeout_s)
            reply = Reply(req, resp, t0, time.monotonic())
            self._last_contact = self.last_reply_ok = self.last_answer = reply.t_received
            self._set_down(None)
        except ServerSlow as e:  # abandoned so the link is free for a newer observation
            self.failures += 1
            reply = Reply(req, None, t0, time.monotonic(), error=str(e), late=True)
            self._last_contact = 0.0  # probe at once: slow, or hung?
        except ServerUnavailable as e:
            self.failures += 1
            self._set_down(str(e))
            reply = Reply(req, None, t0, time.monotonic(), error=str(e))
        except ServerRefused as e:  # the server is up but refused this request: not a dead link
            self.failures += 1
            self._last_contact = self.last_answer = time.monotonic()
            reply = Reply(req, None, t0, time.monotonic(), error=str(e))
            log.error("server refused /v1/act: %s", e)
        with self._cv:
            self.in_flight = None
            self._replies.append(reply)
            self.reply_ready.set()

    def _probe(self) -> None:
        result = self.client.probe(timeout=max(self.probe_interval_s, 0.2))
        now = time.monotonic()
        self._last_contact = now  # probe again after one interval, not in a spin
        if result == PROBE_OK:
            self.last_answer = now
            self._set_down(None)
        elif result == PROBE_GONE:
            self._set_down("server does not answer /healthz (connection refused or server error)")
        elif now - self.last_answer > self.silence_s:
            self._set_down(f"server silent for {now - self.last_answer:.1f} s (no /healthz or /v1/act answer)")
        else:
            self.slow_probes += 1  # busy, not gone: the watchdog holds the arm if actions stop coming
