"""Two simulated hosts on one Linux machine, for multi-node tests.

Why
---
Some failures only show up when a cluster really spans machines: a Ray node
dies while the head keeps running, a worker writes a scratch file to its own
``/tmp`` that another node never sees, an object store on "the other machine"
goes away for a few seconds.  Running two Ray nodes as two processes on one
machine hides all of that, because they share one network stack (everything is
``127.0.0.1``) and one ``/tmp`` (so a local path written by one node is
readable by the other, and Ray's ``/tmp/ray`` session directory is shared).

Design
------
Each :class:`Host` is a pair of Linux namespaces:

* a **network namespace** (``ip netns add``) with its own ``lo`` and one end of
  a veth pair.  :func:`two_hosts` connects A (``10.231.0.1/24``) and
  B (``10.231.0.2/24``); those addresses exist only inside the namespaces, so
  the root namespace and concurrent test runs are unaffected;
* a **mount namespace** with a private tmpfs mounted on ``/tmp``.  Everything
  else (the repository, the virtualenv, ``/root/.ray/auth_token``,
  ``/dev/shm``) stays shared.

A *holder* process keeps both namespaces alive::

    ip netns exec NS unshare --mount --propagation private \\
        sh -c 'mount -t tmpfs tmpfs /tmp && exec sleep infinity'

and every command of that host runs as ``nsenter --target HOLDER --mount --net
-- CMD``, so all processes of one host see the same ``/tmp`` and network.
``nsenter`` execs the command directly (no fork for these namespace types), so
the pid of the returned :class:`subprocess.Popen` is the command's own pid.
Children are started with ``start_new_session=True`` so their whole process
group can be signalled.

Teardown (:meth:`Host.close`, run by :func:`two_hosts` also on exceptions and
``KeyboardInterrupt``) SIGTERMs every tracked process group *and* every process
whose network namespace is the host's (this catches daemons that Ray
re-parents or puts in new sessions), SIGKILLs whatever is left after a short
grace period, kills the holder (which frees the tmpfs) and runs
``ip netns del`` (which also destroys the veth pair).  :func:`cleanup_stale`
removes namespaces left by a run that was SIGKILLed.

Gotchas
-------
* pytest's ``tmp_path`` lives under the machine's ``/tmp``, which a host does
  *not* see (a host sees its own tmpfs there).  Pass paths outside ``/tmp`` to
  processes running in a host, or use :attr:`Host.tmp_root` to reach a host's
  ``/tmp`` from the test process.
* ``nsenter --mount`` resets the working directory to ``/``; :meth:`Host.popen`
  therefore passes ``--wd`` (the ``cwd`` argument, default: the caller's cwd).
  nsenter opens that directory *before* entering the namespaces, so a ``cwd``
  under ``/tmp`` would be the machine's ``/tmp``, not the host's.
* Ray's ``ray start --address`` (unlike ``--head`` and ``ray.init``) does not
  switch to token auth by itself when ``~/.ray/auth_token`` exists and is then
  rejected by the head; :func:`ray_env` sets ``RAY_AUTH_MODE=token`` for it.
* ``ray start --block`` drains for up to 30 s on SIGTERM; :func:`ray_env`
  sets ``RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S=0`` so teardown takes ~1-3 s.
* ``/dev/shm`` is shared, so both Ray nodes' object stores share its capacity;
  :func:`ray_head`/:func:`ray_node` cap each at ``object_store_memory``.
* Ray's token auth: ``~/.ray/auth_token`` is outside ``/tmp`` and therefore
  shared by both hosts, so the head, the worker node and drivers agree on it.
* Node death detection speed is governed by the GCS health checks on the
  head; pass :data:`FAST_HEALTH_CHECK_ENV` as ``env`` to :func:`ray_head` to
  notice a dead raylet within a couple of seconds.

Usage::

    from tests import hosts

    reason = hosts.available()
    if reason:
        pytest.skip(reason)
    with hosts.two_hosts() as (a, b):
        hosts.ray_head(a, env=hosts.FAST_HEALTH_CHECK_ENV)
        hosts.ray_node(b, f"{a.ip}:6379", resources={"mt_host_b": 1})
        hosts.wait_nodes(a, f"{a.ip}:6379", 2)
        ...
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

__all__ = [
    "FAST_HEALTH_CHECK_ENV",
    "Host",
    "available",
    "cleanup_stale",
    "kill_raylet",
    "ray_head",
    "ray_node",
    "ray_env",
    "ray_nodes",
    "two_hosts",
    "wait_nodes",
]

#: Folder of the running interpreter (the project's virtualenv ``bin``).
VENV_BIN = Path(sys.executable).parent
PYTHON = str(VENV_BIN / "python")
RAY = str(VENV_BIN / "ray")

#: Prefix of every namespace this module creates: ``mth-<pid>-<n>-<a|b>``.
NS_PREFIX = "mth-"
SUBNET_PREFIX = "10.231.0"
HOST_A_IP = f"{SUBNET_PREFIX}.1"
HOST_B_IP = f"{SUBNET_PREFIX}.2"

#: Default Ray object store per node (``/dev/shm`` is shared by both hosts).
DEFAULT_OBJECT_STORE_MEMORY = 512 * 1024**2

#: Env for :func:`ray_head` that makes the GCS declare a dead raylet quickly.
#: The GCS marks a node dead after ``failure_threshold`` failed health checks
#: ``period_ms`` apart.  Ray 2.60's defaults (initial delay 5 s, period 3 s,
#: timeout 10 s, threshold 5) took 12-14 s after a raylet SIGKILL here; with
#: these values :func:`wait_nodes` saw the node dead after 1.3 s (including
#: the query's own Python start-up).
FAST_HEALTH_CHECK_ENV: dict[str, str] = {
    "RAY_health_check_initial_delay_ms": "1000",
    "RAY_health_check_period_ms": "500",
    "RAY_health_check_timeout_ms": "500",
    "RAY_health_check_failure_threshold": "3",
}

_counter = itertools.count()


def _kept_under_tmp() -> list[str]:
    """The project checkout and the virtualenv, where they lie under /tmp (outermost paths only)."""
    candidates = sorted({os.path.realpath(p) for p in (Path(__file__).resolve().parents[1], sys.prefix)})
    kept: list[str] = []
    for path in candidates:
        if path.startswith("/tmp/") and not any(path.startswith(k + "/") for k in kept):
            kept.append(path)
    return kept


def _sh(args: Sequence[str], check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
    """Run a short administrative command in the root namespaces."""
    proc = subprocess.run(list(args), capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr.strip()}")
    return proc


def _alive(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def _signal(pid: int, sig: int, group: bool = False) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        (os.killpg if group else os.kill)(pid, sig)


def _netns_inode(name: str) -> int | None:
    try:
        return os.stat(f"/var/run/netns/{name}").st_ino
    except FileNotFoundError:
        return None


def _pids_in_netns(inode: int) -> list[int]:
    """Pids of live processes whose network namespace has this inode."""
    pids = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry.name}/ns/net").st_ino == inode:
                pids.append(int(entry.name))
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
    return [p for p in pids if p != os.getpid() and _alive(p)]


def _cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except (FileNotFoundError, ProcessLookupError):
        return []


class Host:
    """One simulated host: a network namespace plus a private ``/tmp``.

    Create hosts with :func:`two_hosts`; a bare ``Host(name, ip)`` only creates
    the namespaces and holder (no addresses, no veth) and must be closed.
    """

    def __init__(self, name: str, ip: str) -> None:
        self.name = name
        self.ip = ip
        self.procs: list[subprocess.Popen] = []
        self._seen: set[int] = set()  # every pid pids() ever reported
        self.holder: subprocess.Popen | None = None
        _sh(["ip", "netns", "add", name])
        self.netns_inode = _netns_inode(name)
        try:
            self._start_holder()
        except BaseException:
            self.close(grace=0)
            raise

    # ------------------------------------------------------------- setup
    def _start_holder(self, timeout: float = 10) -> None:
        # What lives under the machine's /tmp and the host still needs (a checkout and its virtualenv
        # cloned under /tmp, as CI may do) is moved aside, then back on top of the host's own tmpfs.
        keep = _kept_under_tmp()
        lines = ["set -e"]
        for i, path in enumerate(keep):
            lines += [f"stage{i}=$(mktemp -d /var/tmp/mth-keep.XXXXXX)", f'mount --bind {shlex.quote(path)} "$stage{i}"']
        lines.append("mount -t tmpfs -o mode=1777 tmpfs /tmp")
        for i, path in enumerate(keep):
            lines += [f"mkdir -p {shlex.quote(path)}", f'mount --move "$stage{i}" {shlex.quote(path)}', f'rmdir "$stage{i}"']
        lines.append("exec sleep infinity")
        script = "\n".join(lines)
        self.holder = subprocess.Popen(
            ["ip", "netns", "exec", self.name, "unshare", "--mount", "--propagation", "private", "sh", "-c", script],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        # ip -> unshare -> sh -> sleep all exec in place: the pid stays the same
        # and reaches "sleep" only once the tmpfs is mounted.
        deadline = time.monotonic() + timeout
        while True:
            if self.holder.poll() is not None:
                err = self.holder.stderr.read().decode(errors="replace").strip()
                raise RuntimeError(f"holder of {self.name} exited ({self.holder.returncode}): {err}")
            try:
                with open(f"/proc/{self.holder.pid}/comm") as f:
                    if f.read().strip() == "sleep":
                        return
            except FileNotFoundError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"holder of {self.name} not ready after {timeout}s")
            time.sleep(0.01)

    # -------------------------------------------------------------- running
    def _wrap(self, args: Sequence[str], cwd: str | os.PathLike | None) -> list[str]:
        assert self.holder is not None, "host is closed"
        wd = os.fspath(cwd) if cwd is not None else os.getcwd()
        return ["nsenter", f"--target={self.holder.pid}", "--mount", "--net", f"--wd={wd}", "--", *map(str, args)]

    @staticmethod
    def _env(env: Mapping[str, str] | None) -> dict[str, str]:
        out = dict(os.environ if env is None else env)
        path = out.get("PATH", os.defpath)
        if str(VENV_BIN) not in path.split(os.pathsep):
            out["PATH"] = f"{VENV_BIN}{os.pathsep}{path}"
        return out

    def popen(self, args: Sequence[str], env: Mapping[str, str] | None = None, **kw) -> subprocess.Popen:
        """Start ``args`` inside this host (own session; tracked for teardown).

        ``env`` replaces the environment (default: ``os.environ``); the venv's
        ``bin`` is put on ``PATH``.  ``cwd`` is honoured (see module gotchas);
        other keywords go to :class:`subprocess.Popen`.
        """
        cwd = kw.pop("cwd", None)
        kw.setdefault("stdin", subprocess.DEVNULL)
        kw["start_new_session"] = True
        proc = subprocess.Popen(self._wrap(args, cwd), env=self._env(env), **kw)
        self.procs.append(proc)
        return proc

    def run(
        self,
        args: Sequence[str],
        env: Mapping[str, str] | None = None,
        timeout: float = 120,
        check: bool = False,
        **kw,
    ) -> subprocess.CompletedProcess:
        """Run ``args`` inside this host and wait; output is captured as text.

        On timeout the whole process group is killed and
        :class:`subprocess.TimeoutExpired` is raised.
        """
        if "stdout" not in kw and "stderr" not in kw:
            kw["stdout"] = kw["stderr"] = subprocess.PIPE
        kw.setdefault("text", True)
        proc = self.popen(args, env=env, **kw)
        try:
            out, err = proc.communicate(timeout=timeout)
        except BaseException:
            _signal(proc.pid, signal.SIGKILL, group=True)
            proc.communicate()
            raise
        finally:
            with contextlib.suppress(ValueError):
                self.procs.remove(proc)
        done = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        if check:
            done.check_returncode()
        return done

    # ---------------------------------------------------------- inspection
    @property
    def tmp_root(self) -> Path:
        """This host's ``/tmp`` as seen from the root namespace (via the holder)."""
        assert self.holder is not None, "host is closed"
        return Path(f"/proc/{self.holder.pid}/root/tmp")

    def listdir_tmp(self) -> list[str]:
        """Every non-directory entry under this host's ``/tmp``, relative, sorted (the checkout and
        virtualenv kept visible there, when they lie under the machine's /tmp, are not listed)."""
        root = self.tmp_root
        kept = {os.path.relpath(k, "/tmp") for k in _kept_under_tmp()}
        found = []
        for dirpath, dirs, files in os.walk(root):
            rel = os.path.relpath(dirpath, root)
            dirs[:] = [d for d in dirs if os.path.normpath(os.path.join(rel, d)) not in kept]
            found.extend(os.path.normpath(os.path.join(rel, f)) for f in files)
        return sorted(found)

    def pids(self) -> list[int]:
        """Live processes in this host's network namespace, holder excluded."""
        if self.netns_inode is None:
            return []
        holder = self.holder.pid if self.holder else -1
        pids = [p for p in _pids_in_netns(self.netns_inode) if p != holder]
        self._seen.update(pids)
        return pids

    # ------------------------------------------------------------ teardown
    def terminate(self) -> None:
        """SIGTERM tracked process groups and every other process of the host."""
        for proc in self.procs:
            if proc.poll() is None:
                _signal(proc.pid, signal.SIGTERM, group=True)
        for pid in self.pids():
            _signal(pid, signal.SIGTERM)

    def kill(self) -> None:
        """SIGKILL tracked process groups and every other process of the host."""
        for proc in self.procs:
            _signal(proc.pid, signal.SIGKILL, group=True)
        for pid in self.pids():
            _signal(pid, signal.SIGKILL)

    def _reap(self) -> None:
        for proc in self.procs:
            proc.poll()

    def wait_empty(self, timeout: float) -> bool:
        """Wait until no process (but the holder) is left; True on success."""
        deadline = time.monotonic() + timeout
        while True:
            self._reap()
            if not self.pids():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)

    def close(self, grace: float = 5.0) -> None:
        """Stop everything in this host and delete its namespaces."""
        self.terminate()
        if not self.wait_empty(grace):
            self.kill()
            self.wait_empty(10)
        self.destroy()

    def destroy(self) -> None:
        """Kill what is left (holder included) and delete the namespace."""
        for _ in range(3):
            self.kill()
            if self.wait_empty(5):
                break
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        if self.holder is not None:
            _signal(self.holder.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.holder.wait(timeout=5)
            if self.holder.stderr:
                self.holder.stderr.close()
            self.holder = None
        if _netns_inode(self.name) is not None:
            _sh(["ip", "netns", "del", self.name], check=False)
        # Daemons re-parented to init linger as zombies until init reaps them;
        # zombies have no namespace links, so wait on the pids seen earlier.
        deadline = time.monotonic() + 5
        while any(os.path.exists(f"/proc/{p}") for p in self._seen) and time.monotonic() < deadline:
            time.sleep(0.05)

    def __repr__(self) -> str:
        return f"Host({self.name!r}, ip={self.ip!r})"


@contextlib.contextmanager
def two_hosts(grace: float = 5.0) -> Iterator[tuple[Host, Host]]:
    """Two hosts A (10.231.0.1) and B (10.231.0.2) joined by a veth pair.

    Everything started in them is stopped and both namespaces are deleted on
    exit, also when the body raises (``KeyboardInterrupt`` included).
    """
    cleanup_stale()
    tag = f"{os.getpid()}-{next(_counter)}"
    hosts: list[Host] = []
    try:
        a = Host(f"{NS_PREFIX}{tag}-a", HOST_A_IP)
        hosts.append(a)
        b = Host(f"{NS_PREFIX}{tag}-b", HOST_B_IP)
        hosts.append(b)
        veth_a, veth_b = f"v{tag.replace('-', 'x')}a"[:15], f"v{tag.replace('-', 'x')}b"[:15]
        _sh(["ip", "link", "add", veth_a, "netns", a.name, "type", "veth", "peer", "name", veth_b, "netns", b.name])
        for host, dev in ((a, veth_a), (b, veth_b)):
            _sh(["ip", "-n", host.name, "link", "set", "lo", "up"])
            _sh(["ip", "-n", host.name, "addr", "add", f"{host.ip}/24", "dev", dev])
            _sh(["ip", "-n", host.name, "link", "set", dev, "up"])
        yield a, b
    finally:
        # Phased so both hosts get their grace period at the same time.
        for host in hosts:
            with contextlib.suppress(Exception):
                host.terminate()
        deadline = time.monotonic() + grace
        for host in hosts:
            with contextlib.suppress(Exception):
                host.wait_empty(max(0.0, deadline - time.monotonic()))
        for host in hosts:
            with contextlib.suppress(Exception):
                host.destroy()


def cleanup_stale() -> list[str]:
    """Delete namespaces left by earlier runs whose process no longer exists."""
    removed = []
    out = _sh(["ip", "netns", "list"], check=False).stdout
    for line in out.splitlines():
        name = line.split()[0] if line.split() else ""
        if not name.startswith(NS_PREFIX):
            continue
        try:
            owner = int(name[len(NS_PREFIX) :].split("-")[0])
        except ValueError:
            continue
        if owner == os.getpid() or _alive(owner):
            continue
        inode = _netns_inode(name)
        if inode is not None:
            for _ in range(3):
                pids = _pids_in_netns(inode)
                if not pids:
                    break
                for pid in pids:
                    _signal(pid, signal.SIGKILL)
                time.sleep(0.2)
        _sh(["ip", "netns", "del", name], check=False)
        removed.append(name)
    return removed


@functools.lru_cache(maxsize=1)
def available() -> str | None:
    """None if the harness can run here, else a reason for ``pytest.skip``."""
    if not sys.platform.startswith("linux"):
        return "needs Linux namespaces"
    if os.geteuid() != 0:
        return "needs root (ip netns / mount namespaces)"
    for tool in ("ip", "unshare", "nsenter", "mount"):
        if shutil.which(tool) is None:
            return f"{tool!r} not found"
    name = f"{NS_PREFIX}{os.getpid()}-probe"
    try:
        host = Host(name, "")
    except Exception as exc:  # noqa: BLE001 - any failure means "cannot run here"
        _sh(["ip", "netns", "del", name], check=False)
        return f"cannot create namespaces: {exc}"
    host.close(grace=0)
    return None


# ---------------------------------------------------------------------- Ray
def _token_available(env: Mapping[str, str]) -> bool:
    if env.get("RAY_AUTH_TOKEN"):
        return True
    path = env.get("RAY_AUTH_TOKEN_PATH") or os.path.join(os.path.expanduser("~"), ".ray", "auth_token")
    return os.path.isfile(path)


def ray_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``os.environ`` + ``env`` for Ray processes (head, node, drivers).

    Disables usage stats and pins ``RAY_AUTH_MODE``: ``ray start --head`` and
    ``ray.init`` switch to token auth on their own when ``~/.ray/auth_token``
    exists, but ``ray start --address`` (a worker node) does not and would be
    rejected by the head, so the mode is made explicit for every process.
    Also turns off the SIGTERM drain of ``ray start --block`` (which waits up
    to 30 s for the node to drain) so that teardown is quick; pass
    ``RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S`` in ``env`` to test draining.
    """
    out = dict(os.environ)
    out["RAY_USAGE_STATS_ENABLED"] = "0"
    out.setdefault("RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S", "0")
    out.update(env or {})
    if "RAY_AUTH_MODE" not in out and _token_available(out):
        out["RAY_AUTH_MODE"] = "token"
    return out


def _ray_start_args(
    host: Host,
    num_cpus: int,
    resources: Mapping[str, float] | None,
    object_store_memory: int | None,
    extra_args: Sequence[str],
) -> list[str]:
    args = [
        f"--node-ip-address={host.ip}",
        f"--num-cpus={num_cpus}",
        "--num-gpus=0",
        f"--resources={json.dumps(dict(resources or {}))}",
        "--disable-usage-stats",
    ]
    if object_store_memory:
        args.append(f"--object-store-memory={object_store_memory}")
    return [*args, *extra_args, "--block"]


def ray_head(
    host: Host,
    port: int = 6379,
    num_cpus: int = 1,
    resources: Mapping[str, float] | None = None,
    env: Mapping[str, str] | None = None,
    object_store_memory: int | None = DEFAULT_OBJECT_STORE_MEMORY,
    extra_args: Sequence[str] = (),
    log: str | os.PathLike | None = None,
) -> subprocess.Popen:
    """Start ``ray start --head --block`` in ``host``; returns at once.

    ``env`` is added to ``os.environ`` (e.g. :data:`FAST_HEALTH_CHECK_ENV`);
    ``log`` is a file (in the caller's view) that gets stdout+stderr, default
    discarded.  Follow with :func:`wait_nodes`.
    """
    args = [RAY, "start", "--head", f"--port={port}", "--include-dashboard=false"]
    args += _ray_start_args(host, num_cpus, resources, object_store_memory, extra_args)
    return _popen_logged(host, args, ray_env(env), log)


def ray_node(
    host: Host,
    head_address: str,
    num_cpus: int = 1,
    resources: Mapping[str, float] | None = None,
    env: Mapping[str, str] | None = None,
    object_store_memory: int | None = DEFAULT_OBJECT_STORE_MEMORY,
    extra_args: Sequence[str] = (),
    log: str | os.PathLike | None = None,
) -> subprocess.Popen:
    """Start ``ray start --address=HEAD --block`` in ``host``; returns at once."""
    args = [RAY, "start", f"--address={head_address}"]
    args += _ray_start_args(host, num_cpus, resources, object_store_memory, extra_args)
    return _popen_logged(host, args, ray_env(env), log)


def _popen_logged(host: Host, args: list[str], env: dict[str, str], log) -> subprocess.Popen:
    if log is None:
        return host.popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    with open(log, "ab") as f:
        return host.popen(args, env=env, stdout=f, stderr=subprocess.STDOUT)


# Polls the GCS directly (no driver, no job): prints the node list as JSON once
# exactly ``count`` nodes are alive, or the last state/error at the deadline.
_NODES_SNIPPET = r"""
import json, sys, time
address, count, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
from ray._raylet import GcsClient
deadline = time.monotonic() + timeout
client, nodes, error = None, [], None
while True:
    try:
        client = client or GcsClient(address=address)
        nodes = []
        for node_id, info in client.get_all_node_info(timeout=5).items():
            nodes.append({
                "node_id": node_id.hex(),
                "ip": info.node_manager_address,
                "alive": info.state == 0,
                "resources": dict(info.resources_total),
            })
        error = None
        if sum(n["alive"] for n in nodes) == count:
            print(json.dumps({"ok": True, "nodes": nodes}), flush=True)
            sys.exit(0)
    except Exception as exc:
        client, error = None, repr(exc)
    if time.monotonic() >= deadline:
        print(json.dumps({"ok": False, "nodes": nodes, "error": error}), flush=True)
        sys.exit(1)
    time.sleep(0.1)
"""


def ray_nodes(host: Host, address: str, count: int = -1, timeout: float = 0) -> dict:
    """Ask the GCS at ``address`` (from inside ``host``) for its node table.

    Polls until exactly ``count`` nodes are alive or ``timeout`` seconds pass;
    returns ``{"ok": bool, "nodes": [{"node_id", "ip", "alive", "resources"}],
    "error": str | None}``.  ``count=-1`` returns the first answer's state.
    """
    proc = host.run(
        [PYTHON, "-c", _NODES_SNIPPET, address, str(count), str(timeout)],
        env=ray_env(None),
        timeout=timeout + 60,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        return {"ok": False, "nodes": [], "error": f"rc={proc.returncode}: {proc.stderr.strip()[-2000:]}"}
    return json.loads(lines[-1])


def wait_nodes(host_a: Host, address: str, count: int, timeout: float = 120) -> list[dict]:
    """Wait until exactly ``count`` Ray nodes are alive; returns the node list.

    Queries run inside ``host_a`` (the head's host).  Use ``count`` lower than
    before to wait for a killed node to be declared dead.  Raises
    :class:`TimeoutError` with the last seen state otherwise.
    """
    state = ray_nodes(host_a, address, count, timeout)
    if not state["ok"]:
        raise TimeoutError(f"{count} alive Ray nodes not reached in {timeout}s: {state}")
    return state["nodes"]


def kill_raylet(host: Host) -> int:
    """SIGKILL the raylet of the Ray node running in ``host``; returns its pid."""
    for pid in host.pids():
        argv = _cmdline(pid)
        if argv and os.path.basename(argv[0]) == "raylet":
            _signal(pid, signal.SIGKILL)
            return pid
    raise LookupError(f"no raylet running in {host}")
