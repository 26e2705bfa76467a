"""A restartable local S3 server (moto) for multi-host tests and benchmarks.

Usage::

    python tests/s3server.py --host 10.231.0.1 --port 9000 --bucket media \\
        [--bucket more] [--down-seconds 3] [--stats /path/stats.json] [--verbose]

Prints ``ready http://HOST:PORT`` once the buckets exist and the port accepts
connections.  Signals:

* ``SIGUSR1`` - restart: close the listening socket *and* every open client
  connection (clients keep HTTP/1.1 connections alive, so closing only the
  listener would not be noticed), stay down ``--down-seconds``, then listen
  again on the same address and print ``restarted``.  moto's backends are
  process-global, so buckets and objects survive, like a real server
  restarting on top of its disk.
* ``SIGUSR2`` - write the request counts by HTTP method, e.g.
  ``{"GET": 12, "PUT": 3, "HEAD": 1}``, as JSON to ``--stats`` (atomically).
* ``SIGTERM`` / ``SIGINT`` - write the stats (if ``--stats``), stop, exit 0.

Bucket creation at start-up is not counted.  Clients need::

    AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
    AWS_DEFAULT_REGION=us-east-1 AWS_ENDPOINT_URL=http://HOST:PORT

Why not ``moto.server.ThreadedMotoServer``: its ``stop()`` shuts down the
accept loop but neither closes the listening socket (new connections would hang
in the backlog instead of being refused) nor the kept-alive client connections,
and it does not let us wrap the WSGI app to count requests.  So this script
builds the same app (``DomainDispatcherApplication(create_backend_app)`` with
``MotoRequestHandler``) and serves it with werkzeug's threaded server itself;
``allow_reuse_address`` (SO_REUSEADDR) lets it rebind the port immediately.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import signal
import socket
import sys
import threading

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
from werkzeug.serving import ThreadedWSGIServer

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


def client_env(host: str, port: int) -> dict[str, str]:
    """Environment variables that point AWS clients (boto3, s3fs) at this server."""
    return {**CREDENTIALS, "AWS_ENDPOINT_URL": f"http://{host}:{port}"}


class CountingApp:
    """WSGI middleware counting requests by HTTP method."""

    def __init__(self, app) -> None:
        self.app = app
        self.counts: collections.Counter[str] = collections.Counter()
        self._lock = threading.Lock()

    def __call__(self, environ, start_response):
        with self._lock:
            self.counts[environ.get("REQUEST_METHOD", "?")] += 1
        return self.app(environ, start_response)

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(sorted(self.counts.items()))

    def reset(self) -> None:
        with self._lock:
            self.counts.clear()


class Server(ThreadedWSGIServer):
    """werkzeug's threaded server that can drop all client connections."""

    def __init__(self, host: str, port: int, app) -> None:
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        super().__init__(host, port, app, handler=MotoRequestHandler)

    def process_request_thread(self, request, client_address) -> None:
        with self._conns_lock:
            self._conns.add(request)
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._conns_lock:
                self._conns.discard(request)

    def close_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class Listener:
    """One listening incarnation: a :class:`Server` on a serving thread."""

    def __init__(self, host: str, port: int, app) -> None:
        self.server = Server(host, port, app)
        self.thread = threading.Thread(target=self.server.serve_forever, name="s3server", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()  # ends serve_forever
        self.server.server_close()  # closes the listening socket: connects are refused
        self.server.close_connections()  # kept-alive clients see the drop too
        self.thread.join(timeout=10)


def write_stats(app: CountingApp, path: str | None) -> None:
    if not path:
        return
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(app.snapshot(), f)
    os.replace(tmp, path)


def create_buckets(host: str, port: int, buckets: list[str]) -> None:
    import boto3

    s3 = boto3.client(
        "s3",
        endpoint_url=f"http://{host}:{port}",
        region_name=CREDENTIALS["AWS_DEFAULT_REGION"],
        aws_access_key_id=CREDENTIALS["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
    )
    for bucket in buckets:
        s3.create_bucket(Bucket=bucket)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--bucket", action="append", default=[], help="bucket to create (repeatable)")
    parser.add_argument("--down-seconds", type=float, default=3.0, help="downtime of a SIGUSR1 restart")
    parser.add_argument("--stats", help="file that SIGUSR2 / exit write request counts to")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args(argv)

    if not args.verbose:
        logging.getLogger("werkzeug").setLevel(logging.WARNING)

    # Block the signals before any thread starts (threads inherit the mask) and
    # handle them synchronously in the main thread with sigwait.
    handled = {signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, handled)

    app = CountingApp(DomainDispatcherApplication(create_backend_app))
    listener = Listener(args.host, args.port, app)
    create_buckets(args.host, args.port, args.bucket)
    app.reset()
    print(f"ready http://{args.host}:{args.port}", flush=True)

    while True:
        sig = signal.sigwait(handled)
        if sig == signal.SIGUSR2:
            write_stats(app, args.stats)
        elif sig == signal.SIGUSR1:
            listener.stop()
            listener = None
            # Stay down, but still honour a SIGTERM arriving meanwhile.
            if signal.sigtimedwait({signal.SIGTERM, signal.SIGINT}, args.down_seconds) is not None:
                break
            listener = Listener(args.host, args.port, app)
            print("restarted", flush=True)
        else:
            break
    if listener is not None:
        listener.stop()
    write_stats(app, args.stats)
    return 0


if __name__ == "__main__":
    sys.exit(main())
