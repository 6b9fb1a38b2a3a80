"""A local redis-server for the job queue, configured for jobs rather than for a cache.

`make serve-async` (api/process/async_stack.py) and the tests start it with `command(folder, port)`: the
distribution's redis-server with a config of its own under `folder`, never the system's, on 127.0.0.1.
"""
from pathlib import Path
from urllib.parse import urlparse

from api.process.stack import system_binary

# Why each line: an evicted job would vanish without a trace (rq#1955), so memory pressure must refuse
# writes instead; the append-only file, synced on every write, keeps every acknowledged submit and
# result across a restart or a crash of Redis; no RDB snapshots (the AOF is the record) so that no
# fork doubles the memory now and then.
CONFIG = """\
bind 127.0.0.1
port {port}
protected-mode yes
daemonize no
dir {folder}
logfile ""
save ""
appendonly yes
appendfsync {fsync}
appenddirname appendonly
maxmemory-policy noeviction
"""


def binary() -> str:
    return system_binary("redis-server", "/usr/bin/redis-server")


def port_of(url: str) -> int:
    """The port of a `redis://host:port/db` URL (6379 when it names none)."""
    return urlparse(url).port or 6379


def command(folder: Path, port: int, fsync: str = "always") -> list[str]:
    """redis-server's command line, its config written to `folder`/redis.conf (data in `folder` too)."""
    folder.mkdir(parents=True, exist_ok=True)
    conf = folder / "redis.conf"
    conf.write_text(CONFIG.format(port=port, folder=folder.resolve(), fsync=fsync))
    return [binary(), str(conf)]
