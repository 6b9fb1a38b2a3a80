"""Render nginx's config from the settings: one template set for instances and for local runs.

    keras-serving render-nginx OUT_DIR [--local]

Writes OUT_DIR/site.conf (with proxy.conf and errors.conf beside it); with --local also
OUT_DIR/nginx.conf, a main config that runs nginx under OUT_DIR as its prefix, in the foreground.
Every value comes from api.settings (SERVE_* variables).
"""
import argparse
import getpass
import os
from pathlib import Path

import jinja2

from api.settings import Settings

TEMPLATES = Path(__file__).resolve().parents[2] / "nginx"  # the repository's nginx/ folder


def context(settings: Settings, out_dir: Path, access_log: str, error_log: str) -> dict:
    return {
        "host": settings.host, "port": settings.port, "status_port": settings.status_port,
        "socket": settings.socket_path if not settings.bind else settings.bind.removeprefix("unix:"),
        "worker_sockets": settings.worker_socket_paths,
        "max_body_bytes": settings.max_body_bytes, "gzip_min_bytes": settings.gzip_min_bytes,
        "body_buffer_bytes": min(settings.max_body_bytes, 4 * 1024 * 1024),
        "request_timeout": _seconds(settings.request_timeout), "upstream_tries": settings.upstream_tries,
        "next_upstream_tries": len(settings.worker_socket_paths) + settings.upstream_tries,
        "client_rate": settings.client_rate, "client_burst": settings.client_burst,
        "client_connections": settings.client_connections, "trusted_proxies": settings.trusted_proxies,
        "client_keepalive": settings.client_keepalive, "upstream_keepalive": settings.upstream_keepalive,
        "gunicorn_keepalive": settings.keepalive,
        "cors_origins": settings.cors_origins,
        "access_log": access_log, "error_log": error_log, "prefix": out_dir,
        "site_conf": out_dir / "site.conf", "proxy_conf": out_dir / "proxy.conf",
        "errors_conf": out_dir / "errors.conf",
        "run_as_user": getpass.getuser() if os.geteuid() == 0 else "",
        "nginx_workers": 1,
    }


def _seconds(value: float) -> str:
    return f"{value:g}"


def render(settings: Settings, out_dir: Path, *, local: bool, access_log: str | None = None,
           error_log: str = "stderr") -> Path:
    """Write the config files; returns the one to start nginx with (local) or to include (site)."""
    out_dir = out_dir.resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
                             trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True)
    values = context(settings, out_dir, access_log or str(out_dir / "access.log"), error_log)
    names = ["site.conf", "proxy.conf", "errors.conf"] + (["nginx.conf"] if local else [])
    for name in names:
        (out_dir / name).write_text(env.get_template(name + ".j2").render(values))
    return out_dir / ("nginx.conf" if local else "site.conf")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--local", action="store_true", help="also write a main nginx.conf for a private prefix")
    args = parser.parse_args(argv)
    print(render(Settings(), args.out_dir, local=args.local))


if __name__ == "__main__":
    main()
