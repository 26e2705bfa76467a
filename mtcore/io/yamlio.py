"""Reading YAML for people: a SafeLoader that refuses repeated keys, and errors that name the line.

Plain PyYAML silently keeps the last of two equal keys; a manifest with `seeds:` twice is a mistake
to report, not to guess at.
"""

from __future__ import annotations

from typing import Any

import yaml

from mtcore.errors import ProblemsError


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that refuses repeated mapping keys (plain PyYAML silently keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen = set()
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue  # "<<: *anchor" merges may legitimately be overridden
            key = self.construct_object(key_node, deep=deep)
            if not isinstance(key, (str, int, float, bool)):
                continue  # unhashable keys are refused by the base constructor
            if key in seen:
                raise yaml.constructor.ConstructorError(None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep)


def parse_yaml(label: str, data: bytes, error: type[ProblemsError] = ProblemsError) -> Any:
    """The YAML document in `data`; `error(label, [one line with the line and column])` if it is not valid."""
    try:
        return yaml.load(data, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        at = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        raise error(label, [f"{label}: {at}{problem}"]) from None
