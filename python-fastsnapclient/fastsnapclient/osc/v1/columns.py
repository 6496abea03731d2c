"""Columns shared by the commands: cliff's formattable columns, so that ``-f table`` reads well while ``-f json``
and ``-f yaml`` keep the service's values (numbers, lists and objects) as they are."""

from __future__ import annotations

import datetime

from cliff import columns
from osc_lib.cli import format_columns

DictColumn = format_columns.DictColumn
ListColumn = format_columns.ListColumn
ListDictColumn = format_columns.ListDictColumn


class TimeColumn(columns.FormattableColumn[float | str | None]):
    """A time the service gives in seconds since the epoch: ISO 8601 (UTC) in a table, the number in JSON (a list
    row of a job without it gets '' from osc-lib's get_dict_properties)."""

    def human_readable(self) -> str:
        if not isinstance(self._value, int | float):  # absent (get_dict_properties gives '') or unknown
            return "" if self._value is None else str(self._value)
        return datetime.datetime.fromtimestamp(float(self._value), datetime.UTC).isoformat(timespec="seconds")

    def machine_readable(self) -> float | str | None:
        return self._value

