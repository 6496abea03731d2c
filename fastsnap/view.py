"""The JSON view of fastsnap's result records: what ``--format json``, the REST bodies and the Python API's
``to_dict()`` return is a record's fields as they are (nested records and lists included), so a record needs no
view code of its own."""

from __future__ import annotations

from dataclasses import Field, asdict
from typing import Any, ClassVar


class AsDict:
    """Mixed into a dataclass: ``to_dict()`` is :func:`dataclasses.asdict` of it."""

    __dataclass_fields__: ClassVar[dict[str, Field[Any]]]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
