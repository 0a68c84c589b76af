"""The uvicorn settings every vlaloop server runs with (``vlaloop serve`` and the in-process
``bench.harness.ServerThread`` alike), so a test exercises what production runs.

* Header and body timeouts: uvicorn has neither (only an idle keep-alive timeout), so 100
  connections that never finish their headers were held for as long as the clients liked. The
  HTTP protocol here closes a connection whose request headers are not complete within
  ``server.header_timeout_s`` of its first byte (or of the connection opening), answering 408, and one
  whose body has not fully arrived within ``server.body_timeout_s`` of the headers.
* WebSocket frames: no permessage-deflate (an 8 KB compressed frame inflated to an 8.3 MB image) and
  no frame larger than ``server.max_body_bytes``.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import uvicorn

from deployment.server import ServerConfig

log = logging.getLogger(__name__)
TIMEOUT_RESPONSE = b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


def guarded_http_protocol(header_timeout_s: float, body_timeout_s: float) -> type:
    """uvicorn's httptools protocol with a deadline on each request's headers and on its body."""
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class GuardedHttpToolsProtocol(HttpToolsProtocol):
        _deadline: asyncio.TimerHandle | None = None

        def _arm(self, seconds: float, phase: str) -> None:
            self._disarm()
            self._deadline = self.loop.call_later(seconds, self._expired, phase)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _expired(self, phase: str) -> None:
            self._deadline = None
            if self.transport.is_closing():
                return
            if phase == "headers":  # no response can have started: nothing reached the app yet
                self.transport.write(TIMEOUT_RESPONSE)
            log.info("closing a connection from %s: request %s not complete in time", self.client, phase)
            self.transport.close()

        def connection_made(self, transport: Any) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm(header_timeout_s, "headers")

        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm(header_timeout_s, "headers")  # a keep-alive connection's next request

        def on_headers_complete(self) -> None:
            super().on_headers_complete()
            self._arm(body_timeout_s, "body")

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._disarm()  # the app has it all; uvicorn's keep-alive timeout covers the idle time after

        def handle_websocket_upgrade(self) -> None:
            self._disarm()  # the WebSocket protocol takes the connection over
            super().handle_websocket_upgrade()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return GuardedHttpToolsProtocol


def uvicorn_config(app: Any, server: ServerConfig, **kw: Any) -> uvicorn.Config:
    """uvicorn.Config for `app` with the limits above; `kw`: logging and shutdown options."""
    try:
        http: Any = guarded_http_protocol(server.header_timeout_s, server.body_timeout_s)
    except ImportError:  # no httptools: h11, bounded in event size but without the header deadline
        log.warning("httptools is not installed: HTTP header/body timeouts are off")
        http = "h11"
    return uvicorn.Config(app, http=http, ws_per_message_deflate=False, ws_max_size=server.max_body_bytes,
                          timeout_keep_alive=server.keep_alive_s, h11_max_incomplete_event_size=64 * 1024,
                          **kw)
