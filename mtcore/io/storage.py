"""One storage layer for inputs and outputs: local folders and URLs (s3://, gs://, file://, ...), on fsspec.

Every file the system reads or writes goes through here: manifests and their media, the store's
artifacts, the catalogs' Parquet parts, claims and side files. A location is a local path or a
URL; `file://` URLs are local paths. Object stores are reached with fsspec (s3fs for `s3://`),
the filesystem layer pandas, DuckDB (`register_filesystem`) and pyarrow.dataset take as they are,
so one configured filesystem serves the pipeline and its readers.

Why fsspec + s3fs rather than pyarrow.fs or obstore: s3fs does the two conditional requests claims
need (create only if absent: `If-None-Match: *`; replace or delete only if unchanged: `If-Match`),
which pyarrow.fs does not expose; and the same object is what pandas and DuckDB are handed.

Atomicity: a local file is written under a hidden temporary name and renamed into place
(`mtcore.io.fileio.atomic_write`); an object is one PUT, or a multipart upload completed last
(files over 50 MiB): either way it is visible only when complete, with no rename.

Credentials and endpoints come from the standard AWS variables or profile (AWS_ACCESS_KEY_ID,
AWS_PROFILE, AWS_ENDPOINT_URL, ...), never from manifests or the command line, so they never reach
rows, logs or errors. Transient faults (a server restarting, a timeout) are retried by botocore
(`AWS_RETRY_MODE`, default "standard"; `AWS_MAX_ATTEMPTS`, default 10; connect and read timeouts
10 s and 60 s), not by this module.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import tempfile
import uuid
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path, PurePosixPath
from typing import Iterator

from mtcore.errors import InputError
from mtcore.io.locations import inside, is_url, join, located, normalize, parent, resolve  # noqa: F401  (re-exported)

def _s3_options() -> dict:
    """s3fs settings: no listings cache (other runs write the same prefixes) and botocore's own retries."""
    config = {
        "retries": {"max_attempts": int(os.environ.get("AWS_MAX_ATTEMPTS", "10")),
                    "mode": os.environ.get("AWS_RETRY_MODE", "standard")},
        "connect_timeout": float(os.environ.get("MT_S3_CONNECT_TIMEOUT", "10")),
        "read_timeout": float(os.environ.get("MT_S3_READ_TIMEOUT", "60")),
    }
    return {"use_listings_cache": False, "config_kwargs": config}


@lru_cache(maxsize=16)
def _filesystem(protocol: str):
    import fsspec

    if protocol in ("s3", "s3a"):
        import s3fs

        return s3fs.S3FileSystem(**_s3_options())
    return fsspec.filesystem(protocol)


def filesystem(location: str):
    """(fsspec filesystem, path in it) of a location; local paths use fsspec's local filesystem."""
    location = normalize(location)
    if not is_url(location):
        from fsspec.implementations.local import LocalFileSystem

        return LocalFileSystem(), location
    scheme, _, rest = location.partition("://")
    return _filesystem(scheme), rest


def scratch_dir() -> Path:
    """Where local copies of remote files live while a tool reads or writes them: `MT_SCRATCH`, else the
    temp folder (Ray workers set MT_SCRATCH to Ray's own temp folder). Copies are removed after use."""
    folder = Path(os.environ.get("MT_SCRATCH") or tempfile.gettempdir())
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _scratch_file(suffix: str) -> Path:
    """A new scratch file name (hidden, unique) with `suffix`, in `scratch_dir()`."""
    return scratch_dir() / f".mt-{uuid.uuid4().hex}{suffix}"


def reason(exc: BaseException) -> str:
    """The first line of an error's own words (its strerror, else its text, else its type)."""
    text = (getattr(exc, "strerror", None) or str(exc) or type(exc).__name__).strip().splitlines()
    return text[0] if text else type(exc).__name__


@dataclass(frozen=True)
class Stat:
    """What `Storage.stat` reports of a file."""

    size: int
    mtime: float
    """Last modified, seconds since the epoch (an object's LastModified)."""
    token: str
    """Changes whenever the content is replaced: an object's ETag, a local file's inode and mtime."""


class Storage:
    """A root location (local folder or URL) and the files under it, named by relative posix paths."""

    def __init__(self, root: str | os.PathLike):
        self.root = normalize(root)
        self.remote = is_url(self.root)
        self.fs, self._base = filesystem(self.root)

    def __repr__(self) -> str:
        return f"Storage({self.root!r})"

    def uri(self, rel: str = "") -> str:
        """The user-facing location of `rel` (a local path or a URL)."""
        return join(self.root, rel) if rel else self.root

    def path(self, rel: str = "") -> str:
        """The path of `rel` inside the filesystem (no scheme)."""
        return posixpath.join(self._base, rel) if self.remote and rel else (
            os.path.join(self._base, rel) if rel else self._base)

    # ---------------------------------------------------------------- reading
    def exists(self, rel: str) -> bool:
        if not self.remote:
            return os.path.isfile(self.path(rel))
        return bool(self.fs.exists(self.path(rel)))

    def existing(self, rels: list[str], prefix: str = "") -> set[str]:
        """The subset of `rels` that exist: one check per file when few (or local), else one listing of `prefix`."""
        if not self.remote or len(rels) <= 32 or not prefix:
            return {r for r in rels if self.exists(r)}
        listed = set(self.files(prefix))
        return {r for r in rels if r in listed}

    def read_bytes(self, rel: str) -> bytes:
        return self.fs.cat_file(self.path(rel))

    def stat(self, rel: str) -> Stat | None:
        """Size, modification time and change token of a file, or None when absent."""
        if not self.remote:
            try:
                st = os.stat(self.path(rel))
            except FileNotFoundError:
                return None
            return Stat(st.st_size, st.st_mtime, f"{st.st_ino}-{st.st_mtime_ns}")
        try:
            info = self.fs.info(self.path(rel))
        except FileNotFoundError:
            return None
        modified = info.get("LastModified")
        mtime = modified.timestamp() if hasattr(modified, "timestamp") else float(info.get("mtime", 0.0))
        return Stat(int(info.get("size") or 0), mtime, str(info.get("ETag", "")))

    def files(self, prefix: str) -> list[str]:
        """Every file under the folder `prefix`, as relative paths, sorted (one listing on object stores)."""
        if not self.remote:
            folder = Path(self.path(prefix))
            if not folder.is_dir():
                return []
            return sorted(p.relative_to(self._base).as_posix() for p in folder.rglob("*") if p.is_file())
        try:
            found = self.fs.find(self.path(prefix))
        except FileNotFoundError:
            return []
        base = self._base.rstrip("/") + "/"
        return sorted(p[len(base):] for p in found if p.startswith(base))

    def names(self, folder: str) -> list[str]:
        """The names of the files directly in `folder` (not below it); one listing (per 1,000 on object stores)."""
        if not self.remote:
            try:
                with os.scandir(self.path(folder)) as entries:
                    return [e.name for e in entries if e.is_file()]
            except (FileNotFoundError, NotADirectoryError):
                return []
        try:
            found = self.fs.ls(self.path(folder), detail=True)
        except FileNotFoundError:
            return []
        return [PurePosixPath(f["name"]).name for f in found if f.get("type") == "file"]

    @contextlib.contextmanager
    def reading(self, rel: str) -> Iterator[Path]:
        """A local path to read `rel` from: the file itself when local, else a copy removed afterwards."""
        with local_copy(self.uri(rel)) as path:
            yield path

    # ---------------------------------------------------------------- writing
    def write_bytes(self, rel: str, data: bytes) -> str:
        """Write a file whole (atomic: rename locally, one PUT on object stores); its location."""
        if not self.remote:
            from mtcore.io.fileio import atomic_write

            atomic_write(self.path(rel), lambda tmp: tmp.write_bytes(data), suffix=".tmp")
        else:
            self.fs.pipe_file(self.path(rel), data)
        return self.uri(rel)

    @contextlib.contextmanager
    def writing(self, rel: str, suffix: str | None = None) -> Iterator[Path]:
        """A local temporary path to write `rel` to; on success it becomes `rel` whole (renamed locally,
        uploaded as one object remotely), on error it is removed. `suffix` defaults to rel's own (ffmpeg
        picks the container from it)."""
        suffix = posixpath.splitext(rel)[1] if suffix is None else suffix
        if not self.remote:
            from mtcore.io.fileio import atomic_path

            with atomic_path(self.path(rel), suffix) as tmp:
                yield tmp
            return
        tmp = _scratch_file(suffix)
        try:
            yield tmp
            self.fs.put_file(str(tmp), self.path(rel))
        finally:
            tmp.unlink(missing_ok=True)

    def put_file(self, rel: str, local: str | os.PathLike) -> str:
        """Copy a local file to `rel` (atomically, as `writing`; on object stores uploaded as it is)."""
        if self.remote:
            self.fs.put_file(str(local), self.path(rel))
        else:
            with self.writing(rel) as tmp:
                shutil.copyfile(local, tmp)
        return self.uri(rel)

    def create_exclusive(self, rel: str, data: bytes) -> str | None:
        """Create `rel` only if it does not exist (O_EXCL locally, `If-None-Match: *` on object stores): its
        change token (an object's ETag), or None when it existed."""
        if not self.remote:
            path = self.path(rel)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                return None
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            return "local"
        return self._conditional("put_object", rel, IfNoneMatch="*", Body=data)

    def replace_if(self, rel: str, data: bytes, token: str) -> str | None:
        """Object stores: overwrite `rel` only while its ETag is still `token` (`If-Match`): the new ETag,
        or None if it changed or vanished meanwhile (another writer won)."""
        return self._conditional("put_object", rel, IfMatch=token, Body=data)

    def delete_if(self, rel: str, token: str) -> bool:
        """Object stores: delete `rel` only while its ETag is still `token`."""
        return self._conditional("delete_object", rel, IfMatch=token) is not None

    def _conditional(self, op: str, rel: str, **kw) -> str | None:
        """One conditional S3 request; the ETag it returns ("deleted" for a delete), None when its
        precondition failed (412) or a concurrent request conflicted (409)."""
        if not self.remote:
            raise NotImplementedError("conditional requests are for object stores")
        bucket, _, key = self.path(rel).partition("/")
        try:
            response = self.fs.call_s3(op, Bucket=bucket, Key=key, **kw)
        except FileNotFoundError:
            return None
        except FileExistsError:  # s3fs's word for 412 on If-None-Match
            return None
        except OSError as exc:
            text = str(exc).lower()
            if "pre-condition" in text or "precondition" in text or "conditional request conflict" in text:
                return None
            raise
        return str(response.get("ETag") or "deleted")

    def delete(self, rel: str) -> None:
        """Remove a file (no error if absent)."""
        if not self.remote:
            Path(self.path(rel)).unlink(missing_ok=True)
            return
        try:
            self.fs.rm_file(self.path(rel))
        except FileNotFoundError:
            pass

    def delete_tree(self, prefix: str) -> None:
        """Remove a folder and everything under it."""
        if not self.remote:
            shutil.rmtree(self.path(prefix), ignore_errors=True)
            return
        files = [self.path(r) for r in self.files(prefix)]
        if files:
            self.fs.rm(files)


@lru_cache(maxsize=64)
def storage(root: str) -> Storage:
    """The Storage of a root location (one per process and root)."""
    return Storage(root)


# ------------------------------------------------------------------------------ single input files
def input_error(location: str, exc: BaseException) -> InputError:
    """The one-line error of an input that cannot be read."""
    if isinstance(exc, FileNotFoundError):
        return InputError(location, "file not found")
    if isinstance(exc, IsADirectoryError):
        return InputError(location, "not a file")
    return InputError(location, f"unreadable ({reason(exc)})")


def read_input(location: str | os.PathLike) -> bytes:
    """The bytes of an input file (local or URL); InputError names it when it cannot be read."""
    fs, path = filesystem(str(location))
    try:
        return fs.cat_file(path)
    except (OSError, ValueError) as exc:
        raise input_error(str(location), exc) from None


def sha256_input(location: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes (local or URL), streamed in 1 MiB chunks; OSError when unreadable."""
    from mtcore.io.fileio import sha256_file, sha256_stream

    if not is_url(location):
        return sha256_file(normalize(location))
    fs, path = filesystem(str(location))
    with fs.open(path, "rb") as f:
        return sha256_stream(f)


@contextlib.contextmanager
def writing_to(location: str | os.PathLike) -> Iterator[Path]:
    """A local temporary path whose file becomes `location` (a local path or a URL) whole on success
    (renamed locally, one upload remotely); removed on error."""
    where = normalize(location)
    with storage(parent(where)).writing(posixpath.basename(where) if is_url(where) else os.path.basename(where)) as tmp:
        yield tmp


@contextlib.contextmanager
def local_copy(location: str | os.PathLike) -> Iterator[Path]:
    """A local path for a file that may be remote: the path itself, or a scratch copy removed afterwards.
    A remote file that cannot be fetched raises InputError naming it."""
    if not is_url(location):
        yield Path(normalize(location))
        return
    fs, path = filesystem(str(location))
    tmp = _scratch_file(posixpath.splitext(path)[1])
    try:
        try:
            fs.get_file(path, str(tmp))
        except (OSError, ValueError) as exc:
            raise input_error(str(location), exc) from None
        yield tmp
    finally:
        tmp.unlink(missing_ok=True)


__all__ = ["Storage", "Stat", "storage", "filesystem", "scratch_dir", "read_input", "sha256_input",
           "local_copy", "writing_to", "input_error", "is_url", "located", "normalize", "join", "parent", "resolve", "inside"]
