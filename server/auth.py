"""Bearer-token auth as FastAPI dependencies, and the refusal to serve an open API to the network.

Two roles: ``robot`` (robots and the learner: /v1/act, status, label wait) and ``operator`` (the
operator page: commands, labels, robot list, frames). An empty token switches that role's check
off, which is only allowed while the server listens on loopback (see ``check_bind_allowed``).
Missing token -> 401, wrong token (including the other role's token) -> 403.
"""

from __future__ import annotations

import hmac
from typing import Literal

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from deployment.network import is_loopback
from deployment.server import ServerConfig

Role = Literal["robot", "operator"]
_bearer = HTTPBearer(auto_error=False)


class UnsafeBindError(RuntimeError):
    """The server would expose unauthenticated endpoints to the network."""


def check_bind_allowed(host: str, config: ServerConfig) -> None:
    """Raise UnsafeBindError if binding ``host`` would leave a role without a token."""
    if is_loopback(host):
        return
    missing = [name for name, tok in (("robot_token", config.robot_token),
                                      ("operator_token", config.operator_token)) if not tok]
    if missing:
        raise UnsafeBindError(
            f"refusing to listen on {host}: {' and '.join(missing)} not configured, so anyone on the "
            f"network could drive the robots. Set them (e.g. VLALOOP_SERVER__ROBOT_TOKEN=... "
            f"VLALOOP_SERVER__OPERATOR_TOKEN=...) or bind 127.0.0.1.")


def _token_for(config: ServerConfig, role: Role) -> str:
    return config.robot_token if role == "robot" else config.operator_token


def _check(request: Request, creds: HTTPAuthorizationCredentials | None, roles: tuple[Role, ...]) -> Role:
    config: ServerConfig = request.app.state.config.server
    tokens = {role: _token_for(config, role) for role in roles}
    for role, tok in tokens.items():
        if not tok:
            return role  # auth off for this role (loopback only, enforced at startup)
    if creds is None or not creds.credentials:
        raise HTTPException(401, f"missing bearer token ({' or '.join(roles)} token required)",
                            headers={"WWW-Authenticate": "Bearer"})
    for role, tok in tokens.items():
        if hmac.compare_digest(creds.credentials.encode(), tok.encode()):
            return role
    raise HTTPException(403, f"token not valid for this endpoint ({' or '.join(roles)} token required)")


# async on purpose: FastAPI runs a plain `def` dependency in its threadpool, which costs two thread
# hops per request (measured: the largest part of /v1/act's overhead); these never block.
async def require_robot(request: Request, creds: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> Role:
    return _check(request, creds, ("robot",))


async def require_operator(request: Request,
                     creds: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> Role:
    return _check(request, creds, ("operator",))


async def require_any(request: Request, creds: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> Role:
    return _check(request, creds, ("robot", "operator"))
