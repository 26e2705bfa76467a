"""Streaming between stages: the invert stage settles embeddings one by one, and a transfer stage running
at the same time starts a reference's transfers as soon as its embedding is stored (as the streaming
executors of Ray Data and NeMo Curator do), instead of waiting for every inversion to end."""

from __future__ import annotations

import threading


class EmbeddingFeed:
    """Embedding keys as they are settled: ok (error None) or failed (its one-line error)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._events: list[tuple[str, str | None]] = []
        self._closed = False
        self._listeners: list = []
        self._settled: set[str] = set()

    def listen(self, fn) -> None:
        """Call `fn(key, error)` at each publish, in the publisher's thread, before any `take` sees it."""
        self._listeners.append(fn)

    def publish(self, key: str, error: str | None = None) -> None:
        """The embedding `key` is stored (error None) or failed for good. An embedding is settled once: a
        later publish of the same key (cached, then found again as made by another run) is ignored."""
        if key in self._settled:
            return
        self._settled.add(key)
        for fn in self._listeners:
            fn(key, error)
        with self._cond:
            self._events.append((key, error))
            self._cond.notify_all()

    def close(self) -> None:
        """No more embeddings will be settled (the invert stage has ended, or failed)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def take(self) -> tuple[list[tuple[str, str | None]], bool]:
        """Wait for settled embeddings or the end; (what was settled since the last take, closed)."""
        with self._cond:
            while not self._events and not self._closed:
                self._cond.wait()
            events, self._events = self._events, []
            return events, self._closed and not self._events


__all__ = ["EmbeddingFeed"]
