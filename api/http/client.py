"""Whether the client of a request is still there: nginx closes its upstream connection when its own
client aborts, and a request nobody waits for should not cost an inference (api.batching drops it)."""
import functools
import select
import socket
from typing import Callable


def socket_closed(sock: socket.socket | None) -> Callable[[], bool] | None:
    """A check that the peer of `sock` hung up (nginx closes its upstream when its client aborts).

    Readable with nothing to read means end of file; readable with bytes is a pipelined request, alive.
    """
    if sock is None:
        return None
    poll = _unpatched_select()

    def gone() -> bool:
        try:
            readable, _, _ = poll([sock], [], [], 0)
            return bool(readable) and sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except (OSError, ValueError):
            return True

    return gone


@functools.cache
def _unpatched_select():
    """The system's select: gevent's would yield to the loop even with a zero timeout. Looked up once
    (after the worker's monkey-patching), not on every request."""
    try:
        from gevent import monkey
    except ImportError:
        return select.select
    return monkey.get_original("select", "select")
