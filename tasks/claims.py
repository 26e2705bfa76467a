"""Claims: at most one run computes a key at a time, even when several runs share one OUT.

Why a claim per key and not one lock per OUT: people share output roots (a nightly dataset, a
team's evaluation folder), and two runs of different manifests into one OUT should both make
progress; two runs of the same manifest should split the work, not queue behind each other.

What is claimed is a key of a claim: one per inversion, and for transfers and metrics one per key
range, not per video (tasks.transfer.transfer_claim: 16 ranges of each embedding's transfers;
metrics_claim: 256 ranges), so a run of a million transfers creates a bounded number of claims
(16 per reference) instead of a million. A run holds a range's claim as long as any of its items
in that range is in flight; another run skips the range meanwhile and takes it once released.

A claim is a file OUT/claims/<key[:2]>/<key> holding who owns it (host, pid, run id), created only
if absent: O_CREAT | O_EXCL on a local or shared filesystem (atomic on POSIX and on NFSv3+), a PUT
with `If-None-Match: *` on object storage (S3 answers 412 to every contender but one). Its owner
refreshes it (heartbeat: a new mtime locally; on object storage a PUT with `If-Match` on the ETag
it last wrote, so a claim another run has broken is never overwritten). A claim is stale when its
owner is a process on this host that no longer exists, or when it has not been refreshed for `ttl`
seconds (an owner on another host, or a hung one). A stale claim is broken so that one contender
wins: locally by renaming it aside, on object storage by overwriting it with `If-Match` on the
stale ETag. A run releases a claim after the key's rows are in the catalog, so whoever sees a claim
disappear can trust the catalog.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from pathlib import Path

from mtcore.io.fileio import process_alive
from mtcore.io.storage import storage

TTL_SECONDS = 300.0
HEARTBEAT_SECONDS = 30.0


class Claims:
    """The claims one run holds in OUT, with a heartbeat thread that keeps them fresh."""

    def __init__(self, out: str | os.PathLike, run_id: str, ttl: float = TTL_SECONDS):
        self.store = storage(str(out))
        self.root = Path(self.store.path("claims")) if not self.store.remote else None
        self.run_id, self.ttl = run_id, ttl
        self.owner = {"host": socket.gethostname(), "pid": os.getpid(), "run_id": run_id}
        self.held: dict[str, int] = {}
        """Claim key -> how many of this run's items hold it (a claim covers a range of keys)."""
        self.created = 0
        """Claims this run has created (a measure of the requests claims cost)."""
        self._tokens: dict[str, str] = {}  # object stores: the ETag of each claim as this run last wrote it
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._heartbeat, name="claims-heartbeat", daemon=True)
        self._thread.start()

    @staticmethod
    def rel(key: str) -> str:
        return f"claims/{key[:2]}/{key}"

    def path(self, key: str) -> Path:
        """The claim file of `key` (local OUT)."""
        return self.root / key[:2] / key

    def claim(self, key: str) -> bool:
        """Take the claim on `key` (True), or False if another live run holds it. A claim this run holds
        already is taken once more (each take is given back by one `release`)."""
        with self._lock:
            if key in self.held:
                self.held[key] += 1
                return True
        if self.store.remote:
            return self._claim_object(key)
        path = self.path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(3):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                if not self._break_if_stale(key):
                    return False
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(self.owner, f)
            self._hold(key)
            return True
        return False

    def _hold(self, key: str, token: str | None = None) -> None:
        with self._lock:
            self.held[key] = 1
            self.created += 1
            if token is not None:
                self._tokens[key] = token

    def _claim_object(self, key: str) -> bool:
        rel, body = self.rel(key), json.dumps(self.owner).encode()
        for _ in range(3):
            token = self.store.create_exclusive(rel, body)
            if token:
                self._hold(key, token)
                return True
            stat = self.store.stat(rel)
            if stat is None:
                continue  # released meanwhile: try again
            info = _owner(self.store, rel)
            if info is None:
                continue
            if not self._stale_at(stat.mtime, info):
                return False
            # break it: only the contender whose If-Match still sees the stale ETag wins
            token = self.store.replace_if(rel, body, stat.token)
            if token:
                self._hold(key, token)
                return True
            return False
        return False

    def holder(self, key: str) -> dict | None:
        """Who holds `key` now (None when nobody, or when the claim is stale)."""
        if self.store.remote:
            stat = self.store.stat(self.rel(key))
            info = _owner(self.store, self.rel(key)) if stat else None
            return None if info is None or self._stale_at(stat.mtime, info) else info
        path = self.path(key)
        info = _owner(self.store, self.rel(key))
        if info is None or self._stale(path, info):
            return None
        return info

    def release(self, keys) -> None:
        """Give up claims (after their rows are in the catalog): one take of each key listed (a key listed
        twice gives back two); the claim itself goes when its last take is given back."""
        for key in keys:
            with self._lock:
                if key not in self.held:
                    continue
                self.held[key] -= 1
                if self.held[key] > 0:
                    continue
                del self.held[key]
                token = self._tokens.pop(key, None)
            if self.store.remote:
                if token:  # only if still ours: a claim broken as stale belongs to its new owner
                    self.store.delete_if(self.rel(key), token)
            else:
                self.path(key).unlink(missing_ok=True)

    def close(self) -> None:
        """Stop the heartbeat and release every claim still held."""
        self._stop.set()
        self._thread.join(timeout=5)
        with self._lock:
            for key in self.held:
                self.held[key] = 1
            keys = list(self.held)
        self.release(keys)

    def __enter__(self) -> "Claims":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------ staleness
    def _stale_at(self, mtime: float, info: dict) -> bool:
        if info.get("host") == self.owner["host"] and not process_alive(int(info.get("pid", -1))):
            return True
        return time.time() - mtime > self.ttl

    def _stale(self, path: Path, info: dict) -> bool:
        try:
            return self._stale_at(path.stat().st_mtime, info)
        except FileNotFoundError:
            return True

    def _break_if_stale(self, key: str) -> bool:
        path = self.path(key)
        info = _owner(self.store, self.rel(key))
        if info is not None and not self._stale(path, info):
            return False
        aside = path.with_name(f".{path.name}.stale-{uuid.uuid4().hex}")
        try:
            os.rename(path, aside)  # only one contender's rename succeeds
        except FileNotFoundError:
            return True  # already gone: try to claim
        aside.unlink(missing_ok=True)
        return True

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            with self._lock:
                keys = list(self.held)
            now = time.time()
            body = json.dumps(self.owner).encode()
            for key in keys:
                try:
                    if not self.store.remote:
                        os.utime(self.path(key), (now, now))
                        continue
                    with self._lock:
                        token = self._tokens.get(key)
                    fresh = self.store.replace_if(self.rel(key), body, token) if token else None
                    if fresh:
                        with self._lock:
                            if key in self.held:
                                self._tokens[key] = fresh
                except FileNotFoundError:
                    pass
                except OSError:  # a storage hiccup: the next beat tries again, long before the TTL
                    pass


def _owner(store, rel: str) -> dict | None:
    """The owner recorded in a claim (None when gone; {} when being written or damaged: judged by its age)."""
    try:
        return json.loads(store.read_bytes(rel))
    except FileNotFoundError:
        return None
    except (ValueError, OSError):
        return {}


def serve_claimed(pool, items: list, claims: Claims | None, keys_of, done_elsewhere, on_done, on_elsewhere,
                  commit, poll: float = 2.0) -> None:
    """Serve the items whose keys this run can claim and that no other run has finished meanwhile; wait
    for the others (another live run holds them), then count each as done elsewhere (its rows are in
    the catalog) or, if that run gave it up, do it.

    keys_of(item) -> its keys; done_elsewhere(items) -> the subset now done (one catalog read);
    on_done(item, rows | error) as `pool.map`; on_elsewhere(item) for items another run finished;
    commit() writes this run's pending rows and so releases their claims: it runs before waiting,
    or two runs each waiting on the other's uncommitted work would wait forever.
    Without `claims` (claims off) every item is served.
    """
    if claims is None:
        pool.map(items, on_done)
        return
    pending = list(items)
    while pending:
        mine, theirs = [], []
        for item in pending:
            taken = []
            for key in keys_of(item):
                if not claims.claim(key):
                    claims.release(taken)
                    theirs.append(item)
                    break
                taken.append(key)
            else:
                mine.append(item)
        # what another run finished since this run's plan (its rows committed, its claims released)
        # is not done again: a claim is taken only after its holder's rows are in the catalog
        finished = done_elsewhere(mine) if mine else []
        for item in finished:
            claims.release(keys_of(item))
            on_elsewhere(item)
        mine = [item for item in mine if item not in finished]
        pool.map(mine, on_done)
        commit()
        # (a range this run holds for an item still in flight elsewhere is not waited on: it is its own)
        while any(k not in claims.held and claims.holder(k) is not None
                  for k in {k for item in theirs for k in keys_of(item)}):
            time.sleep(poll)
        finished = done_elsewhere(theirs)
        for item in finished:
            on_elsewhere(item)
        pending = [item for item in theirs if item not in finished]
