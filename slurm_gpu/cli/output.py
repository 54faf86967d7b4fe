"""Output conventions shared by every command: ``--json`` documents and plain-text tables.

With ``--json`` a command prints exactly one JSON document: an object whose first key is
``"schema": "slurm-gpu.<command>/v1"``. Fields may be added within a version, never renamed or removed;
a breaking change bumps the version. Without ``--json`` it prints readable tables.
"""

from __future__ import annotations

import json
from typing import Any, Callable, Dict, Iterable, Mapping, Optional, Sequence

import click

SCHEMA_PREFIX = "slurm-gpu."


def schema_name(command: str, version: int = 1) -> str:
    """``slurm-gpu.<command>/v<version>``; ``command`` is dotted for subcommands (``sim.show``)."""
    return f"{SCHEMA_PREFIX}{command}/v{version}"


def json_option(func: Callable[..., Any]) -> Callable[..., Any]:
    """The ``--json`` flag, passed to the command as ``as_json``."""
    return click.option(
        "--json", "as_json", is_flag=True, default=False, help="Print one JSON document instead of tables."
    )(func)


def document(command: str, payload: Mapping[str, Any], version: int = 1) -> Dict[str, Any]:
    """A JSON document: the schema first, then the payload's keys in their order."""
    doc: Dict[str, Any] = {"schema": schema_name(command, version)}
    for key, value in payload.items():
        if key == "schema":
            raise ValueError("payload must not carry its own 'schema' key")
        doc[key] = value
    return doc


def emit_json(command: str, payload: Mapping[str, Any], version: int = 1) -> None:
    click.echo(json.dumps(document(command, payload, version), indent=2, default=_json_default))


def _json_default(value: Any) -> Any:
    # Tuples and frozen dataclasses reach here only through helpers that did not convert them.
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def cell(value: Any) -> str:
    """How one value looks in a table: ``-`` for missing, lists comma-joined."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ",".join(cell(v) for v in value) if value else "-"
    return str(value)


def format_table(headers: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """Left-aligned columns separated by two spaces; numbers right-aligned."""
    text_rows = [[cell(v) for v in row] for row in rows]
    numeric = [all(_is_number(r[i]) for r in text_rows) and bool(text_rows) for i in range(len(headers))]
    widths = [len(h) for h in headers]
    for row in text_rows:
        if len(row) != len(headers):
            raise ValueError(f"row has {len(row)} cells, table has {len(headers)} columns")
        widths = [max(w, len(c)) for w, c in zip(widths, row)]

    def line(cells: Sequence[str]) -> str:
        parts = [c.rjust(w) if num else c.ljust(w) for c, w, num in zip(cells, widths, numeric)]
        return "  ".join(parts).rstrip()

    out = [line(list(headers))]
    out.extend(line(r) for r in text_rows)
    return "\n".join(out)


def _is_number(text: str) -> bool:
    return text.lstrip("-").isdigit()


def emit_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], title: Optional[str] = None) -> None:
    if title:
        click.echo(title)
    click.echo(format_table(headers, rows))


def emit_pairs(pairs: Iterable[Sequence[Any]]) -> None:
    """``key: value`` lines, keys aligned."""
    items = [(str(k), cell(v)) for k, v in pairs]
    width = max((len(k) for k, _ in items), default=0)
    for key, value in items:
        click.echo(f"{(key + ':').ljust(width + 1)} {value}")
