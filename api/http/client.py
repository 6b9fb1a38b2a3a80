"""The client side of a request, as the app sees it: whether its client is still there (nginx closes its
upstream connection when its own client aborts, and a request nobody waits for should not cost an
inference: api.batching drops it), and reading off a body that was answered without being read."""
import socket
from typing import Callable

from api.process.sockets import readable_now


def socket_closed(sock: socket.socket | None) -> Callable[[], bool] | None:
    """A check that the peer of `sock` hung up (nginx closes its upstream when its client aborts).

    Readable with nothing to read means end of file; readable with bytes is a pipelined request, alive.
    """
    if sock is None:
        return None

    def gone() -> bool:
        try:
            return readable_now(sock) and sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
        except BlockingIOError:
            return False
        except (OSError, ValueError):
            return True

    return gone


_DISCARD_STEP = 1 << 20  # bytes per read of a body the answer did not need


def discard(stream, length: int) -> None:
    """Read off the `length` (bytes) of a request body that was answered without it (a 503 while the
    model had no room, a 404 for an unknown model), in reads of up to 1 MiB.

    Left to gunicorn, the body is drained 1 KiB a read before the connection serves its next request,
    and each of those reads copies what its reader holds again: ResNet50 at 4x its peak connections,
    whose clients send each refused 1.1 MB body again at once, spent about a third of the worker's
    Python time there (py-spy, docs/performance.md). nginx has buffered the body whole, so this read does
    not wait on the client. A read that fails leaves the rest to gunicorn, which then closes the connection.
    """
    try:
        while length > 0:
            chunk = stream.read(min(length, _DISCARD_STEP))
            if not chunk:
                return
            length -= len(chunk)
    except Exception:  # noqa: BLE001 - the answer is made; a connection gone is gunicorn's to close
        return
