"""How the commands print: rich tables on a terminal, plain aligned text otherwise."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import click
from rich import box
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

_STATUS_STYLES = {
    "paid": "green",
    "pending": "yellow",
    "refused": "red",
    "error": "red",
    "inconsistent": "red",
    "expired": "dim",
    "refunded": "magenta",
    "live": "green",
    "voided": "dim",
}


@dataclass(frozen=True)
class Column:
    """A table column; numbers are right-aligned."""

    header: str
    right: bool = False


def tokens(count: int) -> str:
    """A token count with thousands separators."""
    return f"{count:,}"


def signed(count: int) -> str:
    """A token movement with its sign (none for 0) and thousands separators."""
    return f"{count:+,}" if count else "0"


def money(amount: Decimal, currency: str | None) -> str:
    """An amount with its currency code."""
    return f"{amount} {(currency or '').upper()}".strip()


def when(moment: datetime | None, never: str = "never") -> str:
    """A UTC date and time to the minute; ``never`` for None."""
    return never if moment is None else moment.strftime("%Y-%m-%d %H:%M")


def day(moment: datetime | None, never: str = "never") -> str:
    """A UTC date; ``never`` for None."""
    return never if moment is None else moment.strftime("%Y-%m-%d")


def output_for(ctx: click.Context) -> Output:
    """The output of a command, styled as ``--rich``/``--plain`` (before the command) asked."""
    rich: bool | None = ctx.find_root().meta.get("usercredits.rich")
    return Output(rich)


class Output:
    """Writes headings, paragraphs, tables and progress, styled only on a terminal.

    ``rich=None`` decides by whether standard output is a terminal."""

    def __init__(self, rich: bool | None = None) -> None:
        self.rich = sys.stdout.isatty() if rich is None else rich
        self._console = Console(highlight=False) if self.rich else None
        self._err = Console(stderr=True, highlight=False) if self.rich else None

    def heading(self, title: str) -> None:
        if self._console is not None:
            self._console.print()
            self._console.rule(Text(title, style="bold cyan"), align="left")
        else:
            click.echo(f"\n== {title} ==")

    def line(self, text: str = "", style: str | None = None) -> None:
        if self._console is not None:
            self._console.print(Text(text, style=style or ""))
        else:
            click.echo(text)

    def notice(self, text: str) -> None:
        """A remark about how the command runs, on standard error."""
        if self._err is not None:
            self._err.print(Text(text, style="yellow"))
        else:
            click.echo(text, err=True)

    def table(
        self, title: str | None, columns: Sequence[Column], rows: Sequence[Sequence[str]]
    ) -> None:
        if self._console is not None:
            if title:
                self._console.print(Text(title, style="bold"))
            table = Table(
                box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False, collapse_padding=True
            )
            for column in columns:
                table.add_column(
                    column.header, justify="right" if column.right else "left", no_wrap=True
                )
            for row in rows:
                table.add_row(*(Text(cell, style=_STATUS_STYLES.get(cell, "")) for cell in row))
            self._console.print(table)
            return
        widths = [
            max([len(c.header), *(len(row[i]) for row in rows)]) for i, c in enumerate(columns)
        ]

        def render(cells: Sequence[str]) -> str:
            return "  ".join(
                cell.rjust(width) if column.right else cell.ljust(width)
                for cell, width, column in zip(cells, widths, columns, strict=True)
            ).rstrip()

        if title:
            click.echo(title)
        click.echo(render([c.header for c in columns]))
        click.echo(render(["-" * w for w in widths]))
        for row in rows:
            click.echo(render(row))

    @contextmanager
    def progress(self, description: str, total: int | None) -> Iterator[Callable[[], None]]:
        """A progress bar on a terminal (nothing otherwise); yields the function to advance it."""
        if self._err is None:
            yield lambda: None
            return
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
        )
        with Progress(*columns, console=self._err, transient=False) as bar:
            task = bar.add_task(description, total=total)
            yield lambda: bar.advance(task)
