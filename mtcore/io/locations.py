"""Locations: a local path or a URL (s3://bucket/prefix, gs://..., file:// for local paths), as strings.

Pure functions of the text (no I/O): canonical form, joining, parents, resolving a manifest's relative
media paths, and whether one location lies inside another (the manifests' `allow_outside` rule).
"""

from __future__ import annotations

import os
import posixpath
from pathlib import Path

_LOCAL_SCHEMES = ("file",)


def is_url(location: str | os.PathLike) -> bool:
    """True for a URL other than file:// (those are local paths)."""
    text = str(location)
    scheme, sep, _ = text.partition("://")
    return bool(sep) and scheme.isidentifier() and scheme.lower() not in _LOCAL_SCHEMES


def normalize(location: str | os.PathLike) -> str:
    """A location in canonical form: an absolute normalised local path, or a URL without a trailing '/'."""
    text = str(location)
    if text.lower().startswith("file://"):
        text = text[len("file://"):]
    if not is_url(text):
        return os.path.abspath(os.path.expanduser(text))
    scheme, _, rest = text.partition("://")
    rest = posixpath.normpath(rest) if rest.strip("/") else rest
    return f"{scheme.lower()}://{rest.rstrip('/')}"


def located(location: str) -> Path | str:
    """A location as callers hold it: a Path when local, the URL (a str) otherwise."""
    return location if is_url(location) else Path(location)


def join(base: str | os.PathLike, *parts: str) -> str:
    """`base` / parts (posix-style for URLs)."""
    base = str(base)
    if is_url(base):
        return "/".join([base.rstrip("/"), *(p.strip("/") for p in parts if p)])
    return os.path.join(base, *parts)


def parent(location: str | os.PathLike) -> str:
    """The folder holding a file (a URL's prefix for URLs)."""
    text = normalize(location)
    if is_url(text):
        return text.rsplit("/", 1)[0]
    return os.path.dirname(text)


def resolve(value: str, folder: str) -> str:
    """A media path of a manifest in `folder`: URLs and absolute paths as they are, others relative to it."""
    if is_url(value) or value.lower().startswith("file://"):
        return normalize(value)
    if is_url(folder):
        if value.startswith("/") or value.startswith("~"):
            return os.path.normpath(os.path.expanduser(value))
        scheme, _, rest = folder.partition("://")
        return f"{scheme}://{posixpath.normpath(posixpath.join(rest, value))}"
    return os.path.normpath(os.path.join(folder, os.path.expanduser(value)))


def inside(location: str, folder: str) -> bool:
    """Whether `location` is `folder` or below it (lexically; links are the caller's to follow)."""
    location, folder = str(location), str(folder)
    if is_url(location) != is_url(folder):
        return False
    sep = "/" if is_url(folder) else os.sep
    return location == folder or location.startswith(folder.rstrip(sep) + sep)


__all__ = ["is_url", "normalize", "located", "join", "parent", "resolve", "inside"]
