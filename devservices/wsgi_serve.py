"""Serve any WSGI application (``module:attribute``) with the standard library, for OpenStack APIs in tests.

    python wsgi_serve.py placement.wsgi.api:application 127.0.0.1 0 --threads [-- APP ARGS...]

Port 0 picks a free port. Once the socket is bound and the application imported, ``LISTENING <port>`` is printed
on stdout (flushed), which is what the runner waits for. Arguments after ``--`` become the application's
``sys.argv[1:]``: several OpenStack WSGI modules parse ``sys.argv`` with oslo.config at import time, so this
script's own arguments must not be visible to them.

Runs in the services virtualenv (not the project's): standard library only.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import socketserver
import sys
from collections.abc import Callable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer


class _QuietHandler(WSGIRequestHandler):
    access_log = False

    def log_message(self, format: str, *args: Any) -> None:
        if self.access_log:
            super().log_message(format, *args)


class _ThreadingWSGIServer(socketserver.ThreadingMixIn, WSGIServer):
    daemon_threads = True
    # The default backlog (5) drops connections when a benchmark or several test workers hit the server at once.
    request_queue_size = 128


def _load(spec: str) -> Callable[..., Any]:
    module_name, _, attr = spec.partition(":")
    module = importlib.import_module(module_name)
    app = getattr(module, attr or "application")
    return app() if isinstance(app, type) else app


def main(argv: list[str] | None = None) -> int:
    # This script's directory (devservices) holds the openstack package, which would shadow the openstacksdk package
    # that some services import (nova.utils does).
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
    argv = list(sys.argv[1:] if argv is None else argv)
    app_args: list[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, app_args = argv[:cut], argv[cut + 1 :]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("app", help="module:attribute of the WSGI application")
    parser.add_argument("host", nargs="?", default="127.0.0.1")
    parser.add_argument("port", nargs="?", type=int, default=0)
    parser.add_argument("--threads", action="store_true", help="serve each request in its own thread")
    parser.add_argument("--access-log", action="store_true", help="log every request on stderr")
    args = parser.parse_args(argv)

    sys.argv = [sys.argv[0], *app_args]
    server_class: type[WSGIServer] = _ThreadingWSGIServer if args.threads else WSGIServer
    _QuietHandler.access_log = args.access_log
    server = server_class((args.host, args.port), _QuietHandler)
    server.set_app(_load(args.app))

    def _stop(signum: int, frame: Any) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, _stop)
    print(f"LISTENING {server.server_address[1]}", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except (KeyboardInterrupt, SystemExit):
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
