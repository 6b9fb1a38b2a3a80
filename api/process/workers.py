"""gunicorn's gevent worker with one change, once workers have sockets of their own (gunicorn.conf.py's
`_own_socket`).

gunicorn accepts one connection per turn of a worker's loop when several workers share a socket, so
that one worker does not take the whole accept queue. A socket of the worker's own has no one to share
with, and at one per turn a busy loop took over a second to accept a burst of new connections from
nginx (warm-up, 4x the connections), which then waited past SERVE_MAX_QUEUE_WAIT and were refused.
It also ends, at a graceful stop, the connections that wait for their next request (below), which
gunicorn leaves open until its graceful time-out.

Runs in the gunicorn master too (it loads the worker class): nothing here imports TensorFlow or Flask.
"""
import gevent
from gevent.server import StreamServer
from gunicorn.http import parser as http_parser
from gunicorn.http.unreader import SocketUnreader
from gunicorn.workers import ggevent

from api.process.sockets import readable_now

OWN_SOCKETS: set[int] = set()
"""File descriptors of sockets that only this worker accepts from."""
OWN_NAMES: set[str] = set()
"""Their addresses (paths), as gunicorn names the listener a request came in on."""


class _Server(StreamServer):
    """A StreamServer that keeps gevent's accept batch when the worker has a socket of its own."""

    @property
    def max_accept(self) -> int:
        return self.__dict__.get("_max_accept", StreamServer.max_accept)

    @max_accept.setter
    def max_accept(self, value: int) -> None:
        # With sockets of their own, the shared socket is nginx's fallback while a worker is gone: the
        # survivor takes what waits there in batches too, rather than one connection per loop turn.
        self.__dict__["_max_accept"] = StreamServer.max_accept if OWN_SOCKETS else value


class GeventWorker(ggevent.GeventWorker):
    def run(self):
        ggevent.StreamServer = _Server  # the name gunicorn's run() builds its servers with, in this worker
        http_parser.SocketUnreader = IdleAwareUnreader  # the name its parsers build their readers with
        super().run()

    def timeout_ctx(self):
        return _NextRequest(self.cfg.keepalive)

    def handle_exit(self, sig, frame):
        super().handle_exit(sig, frame)
        gevent.spawn(self._close_idle)  # not in the signal handler: killing greenlets switches

    def _close_idle(self):
        closed = close_idle_connections()
        if closed:
            self.log.info("stopping: closed %d connection(s) idle between requests", closed)

    def handle_request(self, listener_name, req, sock, addr):
        if OWN_NAMES and listener_name not in OWN_NAMES:
            # A request on the shared socket (nginx's fallback while a worker is gone) closes its
            # connection: nginx would cache it, and when this worker dies too, every request retried at
            # that instant picks one of those dead cached connections before nginx has seen them close
            # (measured: 3 to 29 of ~40,000 requests lost under SIGKILL every 5 s). A new connection to a
            # local socket costs tens of microseconds, and only while a worker is gone.
            req.must_close = True
        return super().handle_request(listener_name, req, sock, addr)


# -- a graceful stop ends the connections that are idle between requests ------------------------------
#
# gunicorn's gevent worker stops accepting at SIGTERM, then waits until every connection's greenlet has
# ended or the graceful time-out (30 s) has passed. A keep-alive connection idle between requests (nginx
# keeps up to 512 to each worker) ends only when its client closes it or after `keepalive` (90 s), so
# every stop, reload and recycle took the whole graceful time-out (gunicorn#3227, #2297; measured: one
# worker stopped 30.0 s after SIGTERM with one idle connection open, 4.0 s without). Go's
# http.Server.Shutdown does what is done here: close the connections that have read nothing of a next
# request, let the ones with a request in hand finish. A client that sent its request in that same
# instant sees the connection closed and retries: nginx does (`proxy_next_upstream error
# non_idempotent`, nginx/proxy.conf.j2); HTTP/1.1 lets a server close an idle connection at any time
# (RFC 9112 section 9.5, "Failures and Timeouts").

class _Stopping(Exception):
    """Thrown into a connection's greenlet that waits for its next request when the worker stops."""


class _Awaiting:
    """A connection between `timeout_ctx`'s start (gunicorn's keep-alive loop, before it parses the next
    request) and the first bytes of that request. `idle`: blocked on the socket for them right now."""

    __slots__ = ("greenlet", "idle")

    def __init__(self, greenlet):
        self.greenlet, self.idle = greenlet, False


_AWAITING: dict = {}
"""greenlet -> _Awaiting, for the connections of this worker that have read nothing of a next request."""


class _NextRequest:
    """`timeout_ctx` of the keep-alive loop: gunicorn's own keep-alive time-out, and the connection
    counted as awaiting its next request until its first bytes arrive (`IdleAwareUnreader`)."""

    __slots__ = ("timeout", "awaiting")

    def __init__(self, seconds: float):
        self.timeout = gevent.Timeout(seconds, False)

    def __enter__(self):
        current = gevent.getcurrent()
        self.awaiting = _AWAITING[current] = _Awaiting(current)
        return self.timeout.__enter__()

    def __exit__(self, *exc):
        if _AWAITING.get(self.awaiting.greenlet) is self.awaiting:
            del _AWAITING[self.awaiting.greenlet]
        return self.timeout.__exit__(*exc)


class IdleAwareUnreader(SocketUnreader):
    """gunicorn's socket reader, which knows when its connection waits for the first bytes of a request.

    Once the worker stops, such a connection reads end-of-stream instead of blocking: gunicorn's
    keep-alive loop then ends as if the client had closed, and closes the socket. Bytes already here
    (buffered or on the socket) are read as always, so a request that has arrived is served.

    No poll before the read: gevent's recv tries the socket first and yields to the loop only when it
    would block, so a request already here is read without a switch, and `_end_if_still_idle`, which
    runs from the loop, cannot come in between (a poll per request was 1.5% of a worker's CPU, py-spy
    at 32 connections, docs/performance.md)."""

    def read(self, size=None, read_ahead=None):
        awaiting = _AWAITING.get(gevent.getcurrent())
        if awaiting is not None:
            self.buf.seek(0, 2)
            if self.buf.tell():  # a pipelined request is here already: it runs to its answer
                del _AWAITING[awaiting.greenlet]
        return super().read(size, read_ahead)

    def chunk(self, size_hint=None):
        awaiting = _AWAITING.get(gevent.getcurrent())
        if awaiting is None:
            return super().chunk(size_hint)
        if _STOPPING and not readable_now(self.sock):
            return b""
        awaiting.idle = True
        try:
            data = super().chunk(size_hint)
        except _Stopping:
            return b""
        finally:
            awaiting.idle = False
        _AWAITING.pop(awaiting.greenlet, None)  # a request has begun (or the client closed): no longer idle
        return data


_STOPPING = False
"""This worker stops (gunicorn's `alive` turned off), where the reader can see it: one worker a process."""


def close_idle_connections() -> int:
    """From now on, end every connection of this worker as soon as it waits for a next request, and end
    those blocked waiting now. Returns how many of those (for the log)."""
    global _STOPPING
    _STOPPING = True
    idle = [awaiting for awaiting in list(_AWAITING.values()) if awaiting.idle]
    loop = gevent.get_hub().loop
    for awaiting in idle:
        loop.run_callback(_end_if_still_idle, awaiting)
    return len(idle)


def _end_if_still_idle(awaiting: _Awaiting) -> None:
    """Run by the event loop: a connection whose request began meanwhile (its read returned) is left to
    finish it; gevent.kill would throw into it wherever it waits next, mid-request included."""
    if awaiting.idle and not awaiting.greenlet.dead:
        awaiting.greenlet.throw(_Stopping())
