"""Errors a user can act on: each names the file (or config field) and the problem in one line."""

from __future__ import annotations

import difflib
import os
import re
from typing import Iterable


class InputError(ValueError):
    """Bad user input: a missing or unreadable file, a wrong field, an embedding for another model.

    `where` is the file path or the config location ("demo.yaml: references[1].path").
    """

    def __init__(self, where: object, problem: str):
        self.where = str(where)
        self.problem = problem
        super().__init__(f"{self.where}: {problem}")

    def __reduce__(self):
        # Rebuild from (where, problem) so the error survives Ray/Prefect pickling intact.
        return (type(self), (self.where, self.problem))


class ProblemsError(InputError):
    """Several problems of one input, found together; `problems` holds them, one full line each."""

    def __init__(self, where: object, problems: list[str]):
        self.problems = list(problems)
        super().__init__(where, f"{len(self.problems)} problem(s)")

    def __str__(self) -> str:
        return "\n".join(self.problems)

    def __reduce__(self):
        # Exceptions cross process boundaries (Prefect, Ray) by pickle, which replays __init__ args.
        return type(self), (self.where, self.problems)


class EmbeddingMismatch(InputError):
    """A motion embedding file made for another model, frame count, token count or width."""


def did_you_mean(word: object, options: Iterable[str]) -> str:
    """' (did you mean 'x'?)' for the closest option, or '' when none is close."""
    close = difflib.get_close_matches(str(word), sorted(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


_SECRET_NAME = re.compile(r"TOKEN|SECRET|PASSWORD|PASSWD|API_KEY|ACCESS_KEY|CREDENTIAL", re.IGNORECASE)
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/\s:@]+(?::[^/\s@]*)?@")


def secret_values() -> list[str]:
    """The values of environment variables whose names say they are secrets (HF_TOKEN,
    AWS_SECRET_ACCESS_KEY, ...), 8 characters or longer, as `redact` hides them now."""
    return [value for name, value in os.environ.items() if len(value) >= 8 and _SECRET_NAME.search(name)]


def redact(text: str, secrets: list[str] | None = None) -> str:
    """`text` without secrets: credentials in URLs (scheme://user:password@host) and the values of
    environment variables whose names say they are secrets (`secret_values()`; a caller redacting many
    strings at once passes them, read once).

    Applied to every error and path the pipeline writes into catalogs and logs.
    """
    if "@" in text:
        text = _URL_CREDENTIALS.sub(lambda m: f"{m['scheme']}***@", text)
    for value in secret_values() if secrets is None else secrets:
        if value in text:
            text = text.replace(value, "***")
    return text
