"""Rich tables for what the controller answers. Every value is data: it goes in as ``Text``, never as markup,
so brackets in a label and colons in a PCI bus id (``00000000:AB:00.0``) print as they are."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

from controller.cli.common import console


def text(value: Any) -> str:
    """A value as a table shows it: ``-`` for nothing, lists joined, timestamps to the second."""
    if value is None or value == "" or value == [] or value == {}:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list | tuple):
        return ", ".join(text(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def when(value: Any) -> str:
    """An ISO timestamp as ``YYYY-MM-DD HH:MM:SS`` (UTC as the API gives it)."""
    if not isinstance(value, str) or len(value) < 19 or value[10] != "T":
        return text(value)
    return f"{value[:10]} {value[11:19]}"


def table(columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> Table:
    out = Table(box=box.SIMPLE_HEAD, title=Text(title) if title else None, title_justify="left")
    for column in columns:
        out.add_column(column, overflow="fold")
    for row in rows:
        out.add_row(*(Text(text(value)) for value in row))
    return out


def fields(pairs: Iterable[tuple[str, Any]], title: str | None = None) -> Table:
    """A two-column ``name  value`` table for one resource."""
    out = Table(
        box=None, show_header=False, title=Text(title) if title else None, title_justify="left", padding=(0, 2, 0, 0)
    )
    out.add_column(style="bold", no_wrap=True)
    out.add_column(overflow="fold")
    for name, value in pairs:
        out.add_row(Text(name), Text(text(value)))
    return out


def show(*renderables: Any) -> None:
    for renderable in renderables:
        console.print(renderable, highlight=False)


def say(message: str) -> None:
    """One line of data on stdout (no markup, no highlighting)."""
    console.print(Text(message), highlight=False, soft_wrap=True)
