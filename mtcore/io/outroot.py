"""Whether an output root can take a run, from the driver and from every worker.

`check_output_root` refuses, before any work, an OUT that cannot be written (a local folder that cannot
be created or is nearly full; a bucket that does not exist, or credentials that may not write). The
probe (`write_probe` by the driver, `check_probe` in each worker before it loads a model) finds a worker
that does not see the OUT the driver sees, e.g. a local OUT on a cluster whose hosts share no
filesystem, and says in one line what to do.
"""

from __future__ import annotations

import os
import shutil
import socket
import uuid
from pathlib import Path

from mtcore.errors import InputError
from mtcore.io.storage import is_url, normalize, reason, storage


def check_output_root(out: str | os.PathLike, min_free_bytes: int = 0) -> str:
    """Make sure `out` can take a run's files; its canonical location (absolute path or URL).

    A local folder must be (or be creatable as) a folder where a file can be written and renamed, with at
    least `min_free_bytes` free; an object-store prefix must take a small object, written and removed
    (its bucket exists, the credentials may write). InputError names the location and why.
    """
    if is_url(out):
        location = normalize(out)
        store = storage(location)
        name = f".write-probe-{uuid.uuid4().hex}"
        try:
            store.write_bytes(name, b"ok")
            store.delete(name)
        except Exception as exc:  # missing bucket, no credentials, endpoint down (after the client's retries)
            raise InputError(location, f"cannot be written ({reason(exc)})") from None
        return location
    from mtcore.io.fileio import _tag, atomic_write

    out = Path(normalize(out))
    try:
        out.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise InputError(out, "exists and is not a folder") from None
    except OSError as exc:
        raise InputError(out, f"cannot be created ({exc.strerror or exc})") from None
    # each call probes under its own name, one a killed run's cleanup takes for a stale temporary:
    # runs started together on one folder must not rename over, or remove, each other's probe
    try:
        probe = atomic_write(out / f".write-probe.tmp-{_tag()}", lambda tmp: tmp.write_bytes(b"ok"))
        probe.unlink()
    except OSError as exc:
        raise InputError(out, f"cannot be written ({exc.strerror or exc})") from None
    free = shutil.disk_usage(out).free
    if free < min_free_bytes:
        raise InputError(out, f"only {free / 2**20:.0f} MiB free, at least {min_free_bytes / 2**20:.0f} MiB needed "
                              "(--min-free-mb)")
    return str(out)


# ------------------------------------------------------------------------------ the reach probe
PROBE_FOLDER = ".probe"


def write_probe(out: str, run_id: str) -> str:
    """The driver's probe in OUT, which every worker must read back before loading a model; its name."""
    name = f"{PROBE_FOLDER}/{run_id}"
    storage(out).write_bytes(name, run_id.encode())
    return name


def check_probe(out: str, name: str, expected: str) -> str | None:
    """None when this process sees the driver's probe in OUT; else one line saying what is wrong and what to do."""
    host = socket.gethostname()
    try:
        found = storage(out).read_bytes(name).decode(errors="replace")
    except FileNotFoundError:
        found = None
    except Exception as exc:  # unreachable endpoint, no credentials, ...
        return (f"a worker on host {host} cannot reach the output {out} ({reason(exc)}): give every node "
                "the storage endpoint and credentials (AWS_* variables, profile or role)")
    if found == expected:
        return None
    if not is_url(out):
        return (f"a worker on host {host} does not see the output folder {out} that the driver wrote: on a "
                "cluster of several hosts, OUT must be object storage (--out s3://bucket/prefix) or a shared "
                "filesystem mounted at the same path on every node")
    return f"a worker on host {host} does not see the driver's probe in {out}: is it the same storage endpoint?"


def remove_probe(out: str, name: str) -> None:
    storage(out).delete(name)


__all__ = ["check_output_root", "write_probe", "check_probe", "remove_probe"]
