"""Choosing the samples of a dataset from a table of transfers: a quality gate, the best seed per pair,
and leak-free splits.

The gate is a DuckDB SQL condition over the table's columns (metrics and labels), so users write what
they would write in a query (`motion_fidelity >= 0.6 AND frame_change > 0.01`); an unknown column is
refused naming it and listing the valid ones. Splits are assigned per group by hash: reproducible, and
stable as the dataset grows (a group's split depends on the group alone).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc

from mtcore.errors import InputError

PAIR_COLUMNS = ("model_id", "inversion_config", "transfer_config", "reference_id", "target_id")
"""What makes a pair: the same reference and target under one model and pair of configs (seeds vary)."""
SPLIT_BY = ("reference", "target", "both")
_SPLIT_NAME = re.compile(r"[a-z][a-z0-9_]*")


class ConditionError(InputError):
    """A `--where` or `retry.where` condition that cannot run on the table (unknown column, bad SQL)."""


def _duckdb():
    import duckdb  # imported here: planning and the core do not need it

    return duckdb


def _connect(table: pa.Table):
    """A DuckDB connection that sees `table` as `samples` and nothing else: a condition comes from a
    manifest or a command line, and must not read files (`read_text('~/.aws/credentials')`) or load
    extensions."""
    con = _duckdb().connect(config={"enable_external_access": False, "autoload_known_extensions": False,
                                    "autoinstall_known_extensions": False})
    con.register("samples", table)
    return con


def filter_rows(table: pa.Table, where: str, label: str = "--where") -> pa.Table:
    """The rows of `table` for which the SQL condition `where` is true (NULL counts as false)."""
    duckdb = _duckdb()
    con = _connect(table)
    try:
        return con.sql(f"SELECT * FROM samples WHERE coalesce(({where}), false)").to_arrow_table()
    except duckdb.BinderException as exc:
        column = re.search(r'column "?([^"\s]+)"? not found', str(exc), re.I)
        name = column.group(1) if column else None
        valid = ", ".join(table.column_names)
        problem = f"unknown column {name!r}" if name else str(exc).splitlines()[0]
        raise ConditionError(label, f"{problem} in {where!r}; valid columns: {valid}") from None
    except duckdb.Error as exc:
        raise ConditionError(label, f"{str(exc).splitlines()[0]} in {where!r}") from None
    finally:
        con.close()


def conjuncts(where: str) -> list[str]:
    """The top-level AND terms of a condition (outside parentheses and quotes), to count what each drops."""
    terms, depth, quote, start, i = [], 0, None, 0, 0
    while i < len(where):
        ch = where[i]
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif depth == 0 and re.match(r"\s+and\s+", where[i:], re.I) and not _in_between(where[start:i]):
            terms.append(where[start:i].strip())
            i += len(re.match(r"\s+and\s+", where[i:], re.I).group(0))
            start = i
            continue
        i += 1
    terms.append(where[start:].strip())
    return [t for t in terms if t]


def _in_between(term: str) -> bool:
    """`x BETWEEN a AND b`: that AND belongs to the BETWEEN."""
    return re.search(r"\bbetween\s+\S+\s*$", term, re.I) is not None


@dataclass
class Gate:
    """What a condition kept and what each of its terms dropped (a row may fail several terms)."""

    where: str
    kept: int
    dropped: int
    terms: list[tuple[str, int]]
    """(term, rows that fail it), for each top-level AND term."""


def gate(table: pa.Table, where: str | None, label: str = "--where") -> tuple[pa.Table, Gate | None]:
    """Rows passing `where` (all rows when None) and the gate's counts."""
    if not where:
        return table, None
    kept = filter_rows(table, where, label)
    counts = [(where, table.num_rows - kept.num_rows)]
    terms = conjuncts(where)
    if len(terms) > 1:
        try:
            counts = [(term, table.num_rows - filter_rows(table, term, label).num_rows) for term in terms]
        except ConditionError:  # a split the simple splitter got wrong (AND inside CASE ...): the whole only
            pass
    return kept, Gate(where, kept.num_rows, table.num_rows - kept.num_rows, counts)


def per_pair_column(spec: str) -> str:
    """The COLUMN of `best:COLUMN` (checked before any work)."""
    mode, _, column = spec.partition(":")
    if mode != "best" or not re.fullmatch(r"[a-z][a-z0-9_]*", column):
        raise ConditionError("--per-pair", f"must be best:COLUMN (e.g. best:motion_fidelity), got {spec!r}")
    return column


def best_per_pair(table: pa.Table, spec: str) -> tuple[pa.Table, int]:
    """`best:COLUMN`: per pair, the row with the highest COLUMN (ties: the lowest seed); rows dropped."""
    column = per_pair_column(spec)
    if column not in table.column_names:
        raise ConditionError("--per-pair", f"unknown column {column!r}; valid columns: {', '.join(table.column_names)}")
    if table.num_rows == 0:
        return table, 0
    con = _connect(table)
    partition = ", ".join(PAIR_COLUMNS)
    best = con.sql(f'SELECT * FROM samples QUALIFY row_number() OVER (PARTITION BY {partition} '
                       f'ORDER BY "{column}" DESC NULLS LAST, seed) = 1').to_arrow_table()
    con.close()
    return best, table.num_rows - best.num_rows


def parse_split(text: str | None) -> dict[str, float]:
    """`train=0.9,val=0.05,test=0.05` -> {name: fraction}; fractions positive and summing to 1."""
    if not text:
        return {"train": 1.0}
    fractions: dict[str, float] = {}
    for part in text.split(","):
        name, _, value = part.partition("=")
        name = name.strip()
        if not _SPLIT_NAME.fullmatch(name) or name in fractions:
            raise InputError("--split", f"split name {name!r} must be lower-case letters, digits and '_', once each")
        try:
            fraction = float(value)
        except ValueError:
            raise InputError("--split", f"{part.strip()!r}: the fraction must be a number") from None
        if not fraction > 0:
            raise InputError("--split", f"{name}: fractions must be positive, got {value.strip()}")
        fractions[name] = fraction
    if abs(sum(fractions.values()) - 1.0) > 1e-6:
        raise InputError("--split", f"fractions must sum to 1, got {sum(fractions.values()):g} ({text})")
    return fractions


def split_of(group: str, fractions: dict[str, float], salt: str) -> str:
    """A group's split: a uniform draw from sha256(salt, group), placed on the cumulative fractions."""
    u = int(hashlib.sha256(f"{salt}\0{group}".encode()).hexdigest()[:15], 16) / 16**15
    total = 0.0
    for name, fraction in fractions.items():
        total += fraction
        if u < total:
            return name
    return name  # rounding at the top end


def assign_splits(table: pa.Table, fractions: dict[str, float], by: str) -> tuple[pa.Table, int]:
    """`table` with a `split` column; with `both`, rows whose reference and target fall in different
    splits are dropped (returned: how many). Groups are content (sha256), so one video under two ids
    still lands in one split."""
    if by not in SPLIT_BY:
        raise InputError("--split-by", f"must be one of {', '.join(SPLIT_BY)}, got {by!r}")

    def splits(column: str, salt: str) -> pa.Array:
        groups = table.column(column)
        unique = pc.unique(groups)
        names = pa.array([split_of(g, fractions, salt) for g in unique.to_pylist()], pa.string())
        return pc.take(names, pc.index_in(groups, unique))

    if by == "reference":
        split = splits("reference_sha256", "reference")
    elif by == "target":
        split = splits("target_sha256", "target")
    else:
        ref, tgt = splits("reference_sha256", "reference"), splits("target_sha256", "target")
        same = pc.equal(ref, tgt)
        crossed = table.num_rows - pc.sum(same).as_py() if table.num_rows else 0
        return table.filter(same).append_column("split", ref.filter(same)), crossed
    return table.append_column("split", split), 0


__all__ = ["ConditionError", "Gate", "filter_rows", "conjuncts", "gate", "best_per_pair", "per_pair_column", "parse_split",
           "split_of", "assign_splits", "PAIR_COLUMNS", "SPLIT_BY"]
