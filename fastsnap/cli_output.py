"""What the ``fastsnap`` command prints: its results through cliff's formatters, and its progress bar.

The tables, JSON, YAML, CSV and values are drawn by the formatter classes cliff registers for its listers and
show commands (``cliff.formatter.list`` and ``cliff.formatter.show``), the ones the ``openstack`` client and the
fastsnap plugin for it draw with: ``-f``/``-c`` and the formatters' own options (``--noindent``, ``--max-width``,
``--quote``, ``--prefix``, ...) behave the same in both. The classes are named here rather than found through
their entry points, so that the choices (and the generated CLI reference) do not depend on which other formatter
plugins a host has installed.

A command prints one of:

- a :class:`Listing`: rows of the same columns (a cliff lister), e.g. ``stores``;
- a :class:`Record`: one object's fields (a cliff show command), e.g. ``snapshot``'s result. A field may hold a
  :class:`Rows` (``status``, ``flatten-status``: a report of several lists). The table format draws such a record
  as its plain fields in one table, then one titled table per list, so that each list reads as a table of its own;
  the other formats emit the record as cliff does (``-f json``: one object, each list as a JSON array).

``-c`` names a column of a listing or a field of a record (the keys ``--json`` prints). In tables a list or an
object in a cell reads ``a, b`` / ``k=v, k=v`` and an absent value ``-``; ``-f value``, ``csv`` and ``shell``
write lists and objects as JSON text, ``-f json`` and ``yaml`` as themselves.

:func:`add_output_options` adds ``--json``, ``-f``, ``-c`` and the formatter options to a subcommand's parser;
:func:`emit` draws a result as the parsed options ask. Both are pure (no service): the unit tests run them on fixed
data. :func:`progress_bar` is the snapshot's progress bar (tqdm), drawn only on a terminal and only for the
default, human output.
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TextIO

from cliff.columns import FormattableColumn
from cliff.formatters.base import ListFormatter, SingleFormatter
from cliff.formatters.commaseparated import CSVLister
from cliff.formatters.json_format import JSONFormatter
from cliff.formatters.shell import ShellFormatter
from cliff.formatters.table import TableFormatter
from cliff.formatters.value import ValueFormatter
from cliff.formatters.yaml_format import YAMLFormatter
from tqdm import tqdm

# cliff.formatter.list and cliff.formatter.show, as cliff's own setup registers them
LIST_FORMATTERS: dict[str, type[ListFormatter]] = {
    "table": TableFormatter, "json": JSONFormatter, "value": ValueFormatter, "yaml": YAMLFormatter,
    "csv": CSVLister}
RECORD_FORMATTERS: dict[str, type[SingleFormatter]] = {
    "table": TableFormatter, "json": JSONFormatter, "value": ValueFormatter, "yaml": YAMLFormatter,
    "shell": ShellFormatter}
DEFAULT_FORMAT = "table"
# formats that write every value as text: lists and objects go as JSON text, not as Python's repr
TEXT_FORMATS = frozenset({"value", "csv", "shell"})
ABSENT = "-"  # an absent value (None) in a table


class Cell(FormattableColumn[Any]):
    """A list or an object in a table cell: ``a, b`` / ``k=v, k=v`` for people, itself for JSON and YAML."""

    def human_readable(self) -> str:
        v = self._value
        if isinstance(v, Mapping):
            return ", ".join(f"{k}={_human(x)}" for k, x in sorted(v.items()))
        return ", ".join(_human(x) for x in v)


class Time(FormattableColumn[float | None]):
    """A time in seconds since the epoch: ISO 8601 in UTC in tables (as the ``openstack fastsnap`` plugin's
    TimeColumn), the number itself in every other format."""

    def human_readable(self) -> str:
        v = self._value
        return ABSENT if v is None else datetime.datetime.fromtimestamp(v, datetime.UTC).isoformat(timespec="seconds")


def _human(value: Any) -> str:
    return ABSENT if value is None else str(value)


@dataclass(frozen=True)
class Listing:
    """Rows of the same columns (the rows are the API's ``to_dict``; a key a row lacks prints as absent).
    ``cells`` wraps a column's values for the table (e.g. :class:`Time`); ``empty`` is what the table format says
    instead of an empty table (``--print-empty`` draws the empty table)."""

    columns: tuple[str, ...]
    rows: Sequence[Mapping[str, Any]]
    empty: str = "none"
    cells: Mapping[str, Callable[[Any], Any]] = field(default_factory=dict)


@dataclass(frozen=True)
class Rows(Listing):
    """A list in a :class:`Record` (a report's section): drawn under ``title`` in the table format."""

    title: str = ""


@dataclass(frozen=True)
class Record:
    """One object's fields, in the order they print. ``cells``: as in :class:`Listing`."""

    fields: Mapping[str, Any]
    cells: Mapping[str, Callable[[Any], Any]] = field(default_factory=dict)


Output = Listing | Record


def add_output_options(parser: argparse.ArgumentParser, columns: Sequence[str], *, record: bool,
                       json_help: str = "print the result as JSON (compact, keys sorted: the form scripts read)",
                       format_flags: Sequence[str] = ("-f", "--format", "--output-format")) -> None:
    """``--json``, ``-f``, ``-c`` and the formatters' own options, on ``parser`` (a subcommand's). ``columns``:
    what ``-c`` may name; ``record``: the command prints a :class:`Record` (else a :class:`Listing`);
    ``format_flags``: the output format's option strings (``snapshot``'s ``--format`` is the image's disk format,
    so there it is ``-f`` / ``--output-format`` only)."""
    formatters = RECORD_FORMATTERS if record else LIST_FORMATTERS
    group = parser.add_argument_group("output formatters", "how the result is printed (default: a table)")
    excl = group.add_mutually_exclusive_group()
    excl.add_argument("--json", action="store_true", help=json_help)
    excl.add_argument(*format_flags, dest="formatter", choices=sorted(formatters), default=None,
                      help=f"the output format (cliff's formatters), default {DEFAULT_FORMAT}")
    group.add_argument("-c", "--column", dest="columns", action="append", default=[], metavar="COLUMN",
                       choices=list(columns),
                       help=f"a {'field' if record else 'column'} to print (repeatable; default all): "
                            + ", ".join(columns))
    for cls in formatters.values():
        cls().add_argument_group(parser)


def check_output_options(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """Reject what argparse cannot express: ``-c`` with ``--json`` (which prints the whole object, unchanged)."""
    if getattr(args, "json", False) and getattr(args, "columns", None):
        parser.error(f"{args.command}: argument -c/--column: not allowed with argument --json (it prints the whole "
                     "result)")


def human_output(args: argparse.Namespace) -> bool:
    """The default output: neither ``--json`` nor ``-f`` was given (only it has a progress bar)."""
    return not getattr(args, "json", False) and getattr(args, "formatter", None) is None


def emit(output: Output, args: argparse.Namespace, stdout: TextIO | None = None) -> None:
    """Print ``output`` as ``args`` (parsed :func:`add_output_options`) ask: ``-f`` (default table), ``-c``."""
    out = sys.stdout if stdout is None else stdout
    fmt = args.formatter or DEFAULT_FORMAT
    if isinstance(output, Record):
        _emit_record(output, fmt, args, out)
    else:
        names = _selected(output.columns, args.columns)
        _emit_list(output, names, LIST_FORMATTERS[fmt](), fmt, args, out)


def _selected(names: Sequence[str], wanted: Sequence[str]) -> list[str]:
    """The names ``-c`` asked for, in the output's order (as cliff does); all when it asked for none."""
    return [n for n in names if n in wanted] if wanted else list(names)


def _value(value: Any, fmt: str, wrap: Callable[[Any], Any] | None = None) -> Any:
    """One value as format ``fmt`` takes it."""
    if fmt == "table":
        if wrap is not None:
            return wrap(value)
        if isinstance(value, list | tuple | Mapping):
            return Cell(value)
        return ABSENT if value is None else value
    if fmt in TEXT_FORMATS and isinstance(value, list | tuple | Mapping):
        return json.dumps(value, sort_keys=True)
    return value


def _emit_list(listing: Listing, names: Sequence[str], formatter: ListFormatter, fmt: str,
               args: argparse.Namespace, out: TextIO) -> None:
    if fmt == "table" and not listing.rows and not args.print_empty:
        out.write(f"{listing.empty}\n")
        return
    data = [[_value(row.get(n), fmt, listing.cells.get(n)) for n in names] for row in listing.rows]
    formatter.emit_list(names, data, out, args)


def _emit_record(record: Record, fmt: str, args: argparse.Namespace, out: TextIO) -> None:
    names = _selected(list(record.fields), args.columns)
    if fmt != "table":
        values = [_value(_plain(record.fields[n]), fmt) for n in names]
        RECORD_FORMATTERS[fmt]().emit_one(names, values, out, args)
        return
    table = TableFormatter()
    plain = [n for n in names if not isinstance(record.fields[n], Rows)]
    if plain:
        table.emit_one(plain, [_value(record.fields[n], fmt, record.cells.get(n)) for n in plain], out, args)
    started = bool(plain)
    for n in names:
        rows = record.fields[n]
        if isinstance(rows, Rows):
            if started:
                out.write("\n")
            out.write(f"{rows.title or n}:\n")
            _emit_list(rows, rows.columns, table, fmt, args, out)
            started = True


def _plain(value: Any) -> Any:
    """A record's field as the machine formats take it: a :class:`Rows` is its rows, as ``--json`` has them."""
    return [dict(r) for r in value.rows] if isinstance(value, Rows) else value


@contextmanager
def progress_bar(enabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    """The snapshot's ``progress(done, total)`` callback (bytes), drawing a tqdm bar on stderr; None (no bar, no
    cost) unless ``enabled`` and stderr is a terminal. The bar is closed when the block ends, also on an error."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    bars: list[tqdm[Any]] = []

    def show(done: int, total: int) -> None:
        if not bars:
            bars.append(tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr,
                             dynamic_ncols=True, mininterval=0.2))
        bar = bars[0]
        if bar.total != total:
            bar.total = total
        bar.update(done - bar.n)

    try:
        yield show
    finally:
        for bar in bars:
            bar.close()
