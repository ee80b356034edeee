"""The `where` filter language: one neutral form that each engine translates into its own.

`parse_where` turns a `where` mapping into conditions (all must hold); store/edge.py and
store/client.py translate them into Qdrant Edge's and qdrant-client's filters.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from store.index import BadFilter


@dataclass(frozen=True)
class Exact:
    """The field equals this value."""

    key: str
    value: str | int | bool


@dataclass(frozen=True)
class AnyOf:
    """The field equals one of these values."""

    key: str
    values: tuple[str | int, ...]


@dataclass(frozen=True)
class Between:
    """The field lies in a range: ISO-8601 datetimes (dates=True) or numbers."""

    key: str
    bounds: Mapping[str, Any]  # any of gt, gte, lt, lte
    dates: bool


@dataclass(frozen=True)
class Words:
    """Every word of `text` occurs in the field (full-text, case-insensitive)."""

    key: str
    text: str


Condition = Exact | AnyOf | Between | Words
RANGE_KEYS = ("gt", "gte", "lt", "lte")


def parse_where(where: Mapping[str, Any] | None) -> list[Condition]:
    """The conditions of a `where` mapping (all must hold); BadFilter for other shapes.

    `{field: value}` exact, `{field: [v1, v2]}` any of, `{field: {"gte": x, "lte": y}}` a range
    (ISO-8601 strings, dates or datetimes = datetime range, numbers = numeric range),
    `{field: {"text": "some words"}}` all of the words.
    """
    conditions: list[Condition] = []
    for key, value in (where or {}).items():
        if isinstance(value, Mapping):
            if set(value) == {"text"}:
                conditions.append(Words(key, str(value["text"])))
                continue
            unknown = set(value) - set(RANGE_KEYS)
            if unknown or not value:
                raise BadFilter(
                    f"the filter on {key!r} has {sorted(map(str, unknown)) or 'no'} keys; use "
                    'gt/gte/lt/lte for a range or "text" for words'
                )
            bounds = {k: v for k, v in value.items() if v is not None}
            dates = any(isinstance(v, str | date) for v in bounds.values())
            if dates:
                bounds = {k: _iso(v, key) for k, v in bounds.items()}
            elif not all(isinstance(v, int | float) for v in bounds.values()):
                raise BadFilter(f"the range on {key!r} needs numbers or ISO-8601 dates")
            conditions.append(Between(key, bounds, dates))
        elif isinstance(value, list | tuple | set | frozenset):
            conditions.append(AnyOf(key, tuple(value)))
        elif isinstance(value, str | int | bool):
            conditions.append(Exact(key, value))
        else:
            raise BadFilter(f"the filter on {key!r} cannot match a {type(value).__name__}")
    return conditions


def _iso(value: Any, key: str) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day).isoformat()
    if isinstance(value, str):
        try:
            datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            raise BadFilter(f"the range on {key!r} has {value!r}, not an ISO-8601 date") from None
        return value
    raise BadFilter(f"the range on {key!r} mixes dates and numbers")
