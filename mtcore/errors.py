"""Errors a user can act on: each names the file (or config field) and the problem in one line."""

from __future__ import annotations


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


class EmbeddingMismatch(InputError):
    """A motion embedding file made for another model, frame count, token count or width."""
