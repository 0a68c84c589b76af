"""Which addresses are loopback, and whether a process may listen where it is told to.

An empty token switches a check off; that is only allowed while the socket listens on loopback,
so nothing unauthenticated is reachable from the network (the server's roles: server/auth.py;
the learner's ingest: ``learner_bind_refusal``).
"""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a hostname, an interface name or "*": assume it is reachable from the network


def zmq_bind_host(endpoint: str) -> str | None:
    """The host a ZeroMQ bind endpoint listens on ("tcp://HOST:PORT"); None for transports that
    never leave the machine (ipc://, inproc://)."""
    transport, _, address = endpoint.partition("://")
    if transport in ("ipc", "inproc"):
        return None
    return address.rpartition(":")[0] or address


def learner_bind_refusal(bind: str, token: str) -> str | None:
    """Why the learner must not listen on `bind` (robots' hellos unchecked on the network), or None."""
    host = zmq_bind_host(bind)
    if token or host is None or is_loopback(host):
        return None
    return (f"refusing to listen on {bind}: learner.token is not configured, so anyone on the network "
            f"could write episodes into the store. Set it (e.g. VLALOOP_LEARNER__TOKEN=..., and the robots' "
            f"robot.token to the same) or bind tcp://127.0.0.1:PORT.")
