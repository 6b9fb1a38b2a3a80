"""Looks at a socket that never block nor yield: for the worker's connections (workers.py) and the app's
check that a client is still there (api/http/client.py)."""
import functools
import select
import socket


def readable_now(sock: socket.socket) -> bool:
    """Bytes, or the peer's close, wait on `sock`. A socket closed meanwhile counts as readable: the read
    that follows says what happened."""
    try:
        return bool(unpatched_select()([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


@functools.cache
def unpatched_select():
    """The system's select: gevent's would yield to the loop even with a zero timeout. Looked up once
    (after the worker's monkey-patching), not on every request."""
    try:
        from gevent import monkey
    except ImportError:
        return select.select
    return monkey.get_original("select", "select")
