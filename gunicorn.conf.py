"""gunicorn settings and hooks. Values come from api.settings (SERVE_* variables), nowhere else.

Check with `gunicorn --check-config -c gunicorn.conf.py wsgi:app`. This file runs in the master:
it must not import TensorFlow (TensorFlow is not fork-safe: tensorflow#2448, gunicorn#1891).
"""
import functools
import os
import shutil
import signal

from gunicorn import glogging

from api.process import arbiter, devices, markers, worker as worker_hooks
from api.settings import Settings

settings = Settings()
settings.run_dir.mkdir(parents=True, exist_ok=True)  # pidfile, socket and readiness markers live here
# Before anything imports prometheus_client, which reads it once: the workers inherit it at the fork.
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(settings.metrics_dir)
settings.metrics_dir.mkdir(exist_ok=True)  # `--check-config` builds the app without on_starting

# -- Server socket ---------------------------------------------------------------------------------
bind = [settings.bind_address]  # a unix socket nginx proxies to, unless SERVE_BIND says otherwise
umask = 0o007  # the socket: owner and group (nginx's) only
pidfile = str(settings.run_dir / "gunicorn.pid")
backlog = 2048  # connections queued while every worker is busy or still warming up
control_socket = str((settings.run_dir / "gunicorn.ctl").resolve())  # per instance, not one per user

# -- Worker processes -----------------------------------------------------------------------------
workers = settings.workers  # one model copy each; more than the cores (or one per GPU) only adds contention
# gevent (default): an event loop parses requests while the batch runs on a native thread (api/batching.py)
worker_class = "api.process.workers.GeventWorker" if settings.worker_class == "gevent" else settings.worker_class
worker_connections = settings.worker_connections
threads = settings.threads  # gthread only
timeout = settings.timeout  # also bounds model load + warm-up: the loading worker heartbeats meanwhile
graceful_timeout = settings.graceful_timeout
keepalive = settings.keepalive  # longer than nginx's upstream keepalive_timeout: nginx closes first

# -- Server mechanics -----------------------------------------------------------------------------
preload_app = False  # the model must load after the fork, in each worker
sendfile = False  # answers are one write (api/process/worker.py): sendfile would skip the held headers
limit_request_line = 8190
limit_request_fields = 100

# -- Logging --------------------------------------------------------------------------------------
# JSON lines (api/logs.py). gunicorn's own access log is off: the app writes the one access line per
# request, with the route, model version and instances gunicorn cannot see.
loglevel = settings.log_level
accesslog = None
errorlog = "-"
logconfig_dict = {
    "version": 1,
    "disable_existing_loggers": False,
    "root": {"level": "WARNING", "handlers": ["error"]},
    "formatters": {"json": {"()": "api.logs.JsonFormatter"}},
    "handlers": {"error": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stderr"},
                 "access": {"class": "logging.StreamHandler", "formatter": "json", "stream": "ext://sys.stdout"}},
    "loggers": {"gunicorn.error": {"level": settings.log_level.upper(), "handlers": ["error"], "propagate": False},
                "api": {"level": settings.log_level.upper(), "handlers": ["error"], "propagate": False},
                "api.access": {"level": "INFO", "handlers": ["access"], "propagate": False}},
}



class Logger(glogging.Logger):
    """gunicorn's logger with its access line off for good: with `logconfig_dict` set, gunicorn builds
    every request's access atoms (7% of a worker's CPU under load) before its logger drops the line."""

    def _compute_access_log_enabled(self):
        return False


logger_class = Logger

# -- Process naming -------------------------------------------------------------------------------
proc_name = "keras-serving"


# -- Server hooks ---------------------------------------------------------------------------------
def on_starting(server):
    """Forget readiness and metrics left by an earlier run: those pids are gone. List the GPUs, once."""
    markers.clear_markers(settings.run_dir)
    shutil.rmtree(settings.metrics_dir, ignore_errors=True)
    settings.metrics_dir.mkdir(parents=True)
    server.gpus = devices.visible_gpus(settings.device)
    if server.gpus:
        server.log.info("workers spread over GPUs %s", ",".join(server.gpus))


def when_ready(server):
    """Three signals change meaning (api/process/arbiter.py): HUP is a ready-gated rolling restart, TERM drains
    before the graceful stop, and TTIN comes from a worker past SERVE_MAX_REQUESTS asking for a warm
    successor (gunicorn's own max_requests stays off: its worker exits before any successor is warm)."""
    server.handle_hup = functools.partial(arbiter.rolling_restart, server, settings.run_dir, settings.timeout)
    server.handle_term = functools.partial(arbiter.drain_then_stop, server, settings.run_dir,
                                           settings.drain_seconds)
    server.handle_ttin = functools.partial(arbiter.recycle_requested, server, settings.run_dir, settings.timeout)


def pre_fork(server, worker):
    """Decide, in the master, whether the new worker may take traffic before its model is warm, and its
    slot (its GPU and its own socket): a successor takes its predecessor's, else the lowest free one."""
    worker.accept_before_ready = arbiter.accepts_before_ready(server, settings.run_dir)
    successor_of = server.WORKERS.get(getattr(server, "replacing", None))
    worker.slot = successor_of.slot if successor_of is not None else devices.free_slot(
        {getattr(w, "slot", -1) for w in server.WORKERS.values()})


def post_fork(server, worker):
    gpu = devices.gpu_for(worker.slot, getattr(server, "gpus", []))
    if gpu is not None:  # before TensorFlow is imported: it reads the variable once, at start
        os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = str(settings.tf_log_level)  # read once, at TensorFlow's import
    if settings.tf_log_level == 3:
        worker_hooks.native_stderr_to(settings.run_dir / "tensorflow.log")
    worker_hooks.one_write_responses()
    worker_hooks.cached_date_header()
    worker_hooks.settle_config(worker.cfg)
    worker.recycler = worker_hooks.Recycler(settings.run_dir, settings.max_requests, settings.max_requests_jitter)


def post_request(worker, req, environ, resp):
    worker.recycler.served_one()


def post_worker_init(worker):
    from api.http.app import registry_of  # the app module is already imported in the worker: no new import cost

    registry = registry_of(worker.wsgi)
    if getattr(worker, "accept_before_ready", True):  # a cold start: listen at once, answer 503 meanwhile
        if settings.worker_socket_paths:
            worker.sockets.append(_own_socket(worker))
        registry.start()
    else:  # warm siblings serve: load first, then listen, and only then count as ready
        loader = registry.start(announce=False)
        while loader.is_alive():  # keep gunicorn's heartbeat going while the model loads
            worker.notify()
            loader.join(1.0)
        if settings.worker_socket_paths:
            worker.sockets.append(_own_socket(worker))
        registry.announce_ready()
    _drain_on(signal.SIGTERM, registry)


def _own_socket(worker):
    """This worker's slot socket, bound once the worker may take traffic. Binding replaces the path of a
    predecessor's socket (still open until it stops), so nginx's next connection reaches the successor."""
    from gunicorn.sock import UnixSocket

    listener = UnixSocket(str(settings.worker_socket_path(worker.slot)), worker.cfg, worker.log)
    if settings.worker_class != "gevent":
        return listener
    from gevent import socket as gevent_socket  # the gevent worker patched its sockets before this hook
    from api.process.workers import OWN_NAMES, OWN_SOCKETS

    own = gevent_socket.socket(listener.FAMILY, gevent_socket.SOCK_STREAM, fileno=listener.sock.detach())
    OWN_SOCKETS.add(own.fileno())
    OWN_NAMES.add(own.getsockname())
    return own


def _drain_on(signum, registry):
    """Turn readiness off before the worker's own graceful stop, so nothing new is routed to it."""
    previous = signal.getsignal(signum)

    def handler(sig, frame):
        if settings.worker_class == "gevent":
            # A signal handler can run inside an event-loop callback, where drain's locks may not block
            # (gevent's BlockingSwitchOutError killed a worker mid-reload, its requests with it): a
            # greenlet of its own, as gunicorn does for QUIT (gunicorn#1126).
            import gevent
            gevent.spawn(registry.drain)
        else:
            registry.drain()
        if callable(previous):
            previous(sig, frame)

    signal.signal(signum, handler)


def child_exit(server, worker):
    from api import metrics  # here, not at the top: after PROMETHEUS_MULTIPROC_DIR is set

    markers.forget(settings.run_dir, worker.pid)
    metrics.worker_exited(worker.pid)
    if not any(getattr(w, "slot", None) == worker.slot for w in server.WORKERS.values()):
        # nobody took the slot over: connecting now fails at once and nginx tries the next worker
        settings.worker_socket_path(worker.slot).unlink(missing_ok=True)


def on_exit(server):
    for path in settings.worker_socket_paths:
        path.unlink(missing_ok=True)


