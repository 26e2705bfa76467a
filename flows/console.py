"""What every `mt` command shares: one-line errors, progress bars, and printing a run's summary."""

from __future__ import annotations

import contextlib
import functools
import json
from typing import Callable

import typer


def parse_workers(text: str | None, option: str = "--workers") -> dict:
    """--workers N or MIN:MAX -> {"workers": N or MIN, "max_workers": 0 (fixed) or MAX}; both None when not
    given (a stage's pool then keeps the run's). InputError names the option."""
    from mtcore.errors import InputError

    if text is None:
        return {"workers": None, "max_workers": None}
    low, sep, high = str(text).partition(":")
    if not (low.strip().isdigit() and (not sep or high.strip().isdigit())) or int(low) < 1 or (sep and int(high) < int(low)):
        raise InputError(option, f"{text!r}: must be a count N or MIN:MAX with 1 <= MIN <= MAX, e.g. 2:8")
    return {"workers": int(low), "max_workers": int(high) if sep else 0}  # 0: a fixed pool


def fail(message: str, code: int = 2) -> None:
    """Print `error: <message>` (secrets redacted) on stderr and end the command with `code`."""
    from mtcore.errors import redact

    typer.secho(f"error: {redact(message)}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def guarded(command: Callable) -> Callable:
    """Decorate a command: user-input errors end it with their lines on stderr and exit status 2, no traceback."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        from mtcore.errors import InputError, ProblemsError, redact

        try:
            return command(*args, **kwargs)
        except ProblemsError as exc:
            for line in exc.problems:
                typer.secho(f"error: {redact(line)}", fg=typer.colors.RED, err=True)
            raise typer.Exit(2)
        except InputError as exc:
            fail(str(exc))
        except KeyboardInterrupt:
            fail("interrupted", 130)

    return wrapper


@contextlib.contextmanager
def local_input(location: str):
    """A local path for an input file named by a path or a URL (downloaded to scratch, removed after);
    an error about the scratch copy names the location the user gave."""
    from mtcore.errors import InputError
    from mtcore.io.fileio import require_file
    from mtcore.io.storage import is_url, local_copy

    if not is_url(location):
        require_file(location)  # a URL that cannot be fetched fails in local_copy, naming it
    with local_copy(location) as path:
        try:
            yield path
        except InputError as exc:
            if is_url(location) and exc.where == str(path):
                raise InputError(location, exc.problem) from None
            raise


def progress_bar(description: str, total: int):
    """A rich progress bar on stderr; returns (context manager, advance(step, total, loss=None))."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )
    task = bar.add_task(description, total=total, info="")

    def advance(step: int, total_: int, loss: float | None = None) -> None:
        bar.update(task, completed=step, info=f"loss {loss:.4f}" if loss is not None else "")

    return bar, advance


def print_summary(summary, as_json: bool = False) -> None:
    """A run's summary (tasks.results.RunSummary) for people, or as one JSON object."""
    if as_json:
        typer.echo(json.dumps(summary.to_json(), indent=2))
        return
    typer.echo("")
    typer.echo(f"run {summary.run_id} finished in {summary.wall_seconds:.1f} s")
    typer.echo(f"  inversions: {summary.inversions_computed} computed, {summary.inversions_cached} cached")
    typer.echo(f"  transfers:  {summary.transfers_computed} computed, {summary.transfers_cached} cached")
    colour = typer.colors.RED if summary.failed else None
    typer.secho(f"  failed:     {summary.failed}", fg=colour)
    typer.echo(f"  measured:   {summary.metrics_computed} transfers (catalog/metrics)")
    for error in summary.errors[:5]:
        typer.secho(f"    - {error}", fg=colour)
    for w in summary.workers:
        when = "" if not (w.joined_s or w.left_s is not None) else \
            f", served from {w.joined_s:.0f} s" + (f" to {w.left_s:.0f} s (left)" if w.left_s is not None else "")
        typer.echo(f"  worker {w.worker}: {w.items} items, model loaded {w.model_loads}x on {w.device}{when}")
    typer.echo(f"  catalogs:   {summary.catalogs}  (e.g. duckdb: SELECT * FROM "
               f"read_parquet('{summary.catalogs}/transfers/*.parquet'))")


def require_catalog(out: str, table: str | None = None) -> None:
    """InputError unless OUT (a folder or a URL) holds a catalog (with `table`, when given)."""
    from mtcore.data.catalog import part_files, SCHEMAS
    from mtcore.errors import InputError

    tables = [table] if table else list(SCHEMAS)
    if not any(part_files(out, t) for t in tables):
        where = f"catalog/{table}" if table else "catalog"
        raise InputError(out, f"no {where} here: is this the --out of an `mt run`?")
