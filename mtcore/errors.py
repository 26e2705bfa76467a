"""Errors a user can act on: each names the file (or config field) and the problem in one line."""

from __future__ import annotations

import difflib
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
