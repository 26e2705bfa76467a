"""Prefect's temporary server for one command, started the moment the command starts.

Without PREFECT_API_URL, Prefect starts a temporary server when a flow first needs its API: after the
command has imported the pipeline and checked its manifest, and by importing Prefect's whole server
application into the command's own process first (3.4 s here) only to start the same application in a
subprocess. A run whose plan finds nothing to do spent most of its 9.6 s on that, one step after the
other. `TemporaryServer` starts that very subprocess (Prefect's own command line: uvicorn serving
`prefect.server.api.server:create_app`, UI off, on a free loopback port, on the same PREFECT_HOME
database) before anything else, so it boots while the command imports and checks its inputs, and the
command then talks to it as to a configured server (`settings()`). The record of the run is the same
flow run in the same database. It stops with the command. A configured PREFECT_API_URL is used as it is.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from typing import Iterator

PORT_IN_USE = 3
"""uvicorn's exit status when its port was taken meanwhile (then another port is tried)."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TemporaryServer:
    """A Prefect API server in a subprocess for the life of this process (see the module)."""

    def __init__(self):
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self._spawn()
        atexit.register(self.stop)

    def _spawn(self) -> None:
        import importlib.util
        from pathlib import Path

        package = Path(importlib.util.find_spec("prefect").origin).parent  # found, not imported (1 s)
        self.port = _free_port()
        env = {**os.environ, "PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
        self.log = tempfile.TemporaryFile()  # its errors, for the message if it fails (a pipe could fill and block it)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "--app-dir", str(package.parent), "--factory",
             "prefect.server.api.server:create_app", "--host", "127.0.0.1", "--port", str(self.port),
             "--log-level", "error", "--lifespan", "on"],
            env=env, stdout=subprocess.DEVNULL, stderr=self.log)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    def wait(self, timeout: float | None = None) -> str:
        """Until the server answers its health check; its API URL. RuntimeError (with the server's own
        last lines) if it exits or does not answer within `timeout` seconds (default: Prefect's
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS)."""
        if timeout is None:
            timeout = float(os.environ.get("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180"))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            code = self.proc.poll()
            if code == PORT_IN_USE:
                self._spawn()
                continue
            if code is not None:
                self.log.seek(0)
                tail = self.log.read().decode(errors="replace").strip().splitlines()[-3:]
                raise RuntimeError(f"Prefect's temporary server exited ({code}): {' '.join(tail)}")
            try:
                with urllib.request.urlopen(f"{self.api_url}/health", timeout=2) as response:
                    if response.status == 200:
                        return self.api_url
            except (urllib.error.URLError, ConnectionError, OSError):
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"Prefect's temporary server did not answer within {timeout:.0f} s "
                           "(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS)")

    @contextlib.contextmanager
    def settings(self) -> Iterator[str]:
        """Within: Prefect's client uses this server (as a configured one); its API URL."""
        from prefect.settings import PREFECT_API_URL, temporary_settings

        url = self.wait()
        # Prefect links each flow run to the UI of a configured server; this one serves no UI
        logger = logging.getLogger("prefect.flow_runs")
        dead_link = _DropLine(f"View at http://127.0.0.1:{self.port}/")
        logger.addFilter(dead_link)
        try:
            with temporary_settings(updates={PREFECT_API_URL: url}):
                yield url
        finally:
            logger.removeFilter(dead_link)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class _DropLine(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(self.prefix)


def early_server() -> TemporaryServer | None:
    """A TemporaryServer started now, unless PREFECT_API_URL names a server (None then)."""
    if os.environ.get("PREFECT_API_URL"):
        return None
    return TemporaryServer()


@contextlib.contextmanager
def using(server: TemporaryServer | None) -> Iterator[None]:
    """Within: flows use `server` (nothing changes for None: the configured server)."""
    if server is None:
        yield
        return
    with server.settings():
        yield


__all__ = ["TemporaryServer", "early_server", "using"]
