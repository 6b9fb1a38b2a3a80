"""gunicorn's gevent worker with one change, once workers have sockets of their own (gunicorn.conf.py's
`_own_socket`).

gunicorn accepts one connection per turn of a worker's loop when several workers share a socket, so
that one worker does not take the whole accept queue. A socket of the worker's own has no one to share
with, and at one per turn a busy loop took over a second to accept a burst of new connections from
nginx (warm-up, 4x the connections), which then waited past SERVE_MAX_QUEUE_WAIT and were refused.
Runs in the gunicorn master too (it loads the worker class): nothing here imports TensorFlow or Flask.
"""
from gevent.server import StreamServer
from gunicorn.workers import ggevent

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
        super().run()

    def handle_request(self, listener_name, req, sock, addr):
        if OWN_NAMES and listener_name not in OWN_NAMES:
            # A request on the shared socket (nginx's fallback while a worker is gone) closes its
            # connection: nginx would cache it, and when this worker dies too, every request retried at
            # that instant picks one of those dead cached connections before nginx has seen them close
            # (measured: 3 to 29 of ~40,000 requests lost under SIGKILL every 5 s). A new connection to a
            # local socket costs tens of microseconds, and only while a worker is gone.
            req.must_close = True
        return super().handle_request(listener_name, req, sock, addr)
