"""Before the arm is touched: do the server and the learner take the robot's token?

A refused token never heals by retrying, so it ends the robot client at once with one line
(``TokenRefused``, exit 2) instead of minutes of 401s and refused hellos. A peer that is not up
yet is not an error: the client starts and waits for it as it always has (and the streamer stops
the client the moment the learner refuses its hello later, robot_client/streamer.py).
"""

from __future__ import annotations

import json
import logging
import struct
import time

import zmq
import zmq.utils.monitor

from protocol.codec import CodecError
from protocol.messages import Ack, Hello, decode_message, encode_message
from robot_client.server_client import ServerClient, ServerRefused, ServerUnavailable
from robot_client.streamer import learner_refusal

log = logging.getLogger(__name__)

AUTH_REFUSALS = (401, 403)  # server/auth.py: no token, a wrong token
_SEQ = struct.Struct("<Q")


class TokenRefused(RuntimeError):
    """The server or the learner refused the robot's token: a configuration error."""


def _reason(e: ServerRefused) -> str:
    text = str(e).split(": ", 2)[-1]
    try:
        return str(json.loads(text).get("detail", text))
    except (ValueError, AttributeError):
        return text


def check_server_token(client: ServerClient, url: str, timeout_s: float = 2.0) -> None:
    """Raises TokenRefused when the server answers 401/403 to the robot's first status post."""
    try:
        client.post_status({"state": "resetting", "detail": "starting"}, timeout=timeout_s)
    except ServerRefused as e:
        if e.status_code in AUTH_REFUSALS:
            raise TokenRefused(f"the server at {url} refused the robot's token ({_reason(e)}): set robot.token "
                               "(VLALOOP_ROBOT__TOKEN) to the server's server.robot_token") from None
        log.warning("server check: %s", e)
    except ServerUnavailable as e:
        log.warning("server not reachable yet (%s); the robot waits for it", e)


def check_learner_token(addr: str, robot_id: str, config_hash: str, token: str, timeout_s: float = 3.0) -> None:
    """One Hello on a throw-away connection. Raises TokenRefused when the learner refuses the token;
    returns when it accepts, refuses for another reason, or does not answer within `timeout_s`."""
    ctx = zmq.Context.instance()
    sock = ctx.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    monitor = sock.get_monitor_socket(zmq.EVENT_CONNECTED | zmq.EVENT_CONNECT_RETRIED)
    try:
        sock.connect(addr)
        if not _connected(monitor, timeout_s):
            log.warning("learner at %s not reachable yet; the robot waits for it", addr)
            return
        hello = Hello(robot_id=robot_id, config_hash=config_hash, token=token)
        sock.send_multipart([_SEQ.pack(0), encode_message(hello)])
        if not sock.poll(int(timeout_s * 1000)):
            log.warning("learner at %s did not answer the hello in %.1f s; the robot waits for it", addr, timeout_s)
            return
        ack = decode_message(sock.recv_multipart()[-1])
    except (CodecError, zmq.ZMQError) as e:
        log.warning("learner check at %s: %s", addr, e)
        return
    finally:
        sock.disable_monitor()
        monitor.close(linger=0)
        sock.close(linger=0)
    if isinstance(ack, Ack) and not ack.ok:
        refusal = learner_refusal(ack.error)
        if refusal:
            raise TokenRefused(f"{refusal} at {addr}")
        log.warning("learner at %s refused the hello: %s", addr, ack.error)


def _connected(monitor, timeout_s: float) -> bool:
    """True once the socket connected; False when the connection was refused (nothing listens)
    or `timeout_s` passed."""
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        if not monitor.poll(int(left * 1000) + 1):
            return False
        event = zmq.utils.monitor.recv_monitor_message(monitor)["event"]
        if event == zmq.EVENT_CONNECTED:
            return True
        if event == zmq.EVENT_CONNECT_RETRIED:
            return False
    return False
