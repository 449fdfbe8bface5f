"""A small SOQL builder. Field and object names are validated identifiers; values are typed literals,
never pasted text. The only strings that reach a query come from the config (status values), escaped."""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime

from crmsync import ConfigError

_NAME = re.compile(r"^[A-Za-z](?:[A-Za-z0-9]|_(?!_))*(?:__c|__r)?$")  # no double underscore except the suffix
_MAX_LEN = 80


def name(value: str, what: str = "field") -> str:
    """Return ``value`` if it is a valid Salesforce API name, else raise ConfigError naming it."""
    if not isinstance(value, str) or len(value) > _MAX_LEN or not _NAME.match(value) or value.endswith("_"):
        raise ConfigError(
            f"Salesforce: {value!r} is not a valid {what} API name (letters, digits and single underscores, "
            "starting with a letter, custom names ending in __c). Use the API Name shown in Object Manager."
        )
    return value


def datetime_literal(value: datetime) -> str:
    """SOQL datetime literal: unquoted, UTC, whole seconds rounded down (so a filter never misses a record)."""
    if value.tzinfo is None:
        raise ValueError("naive datetime: pass an aware (UTC) datetime")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def string_literal(value: str) -> str:
    """Quoted, escaped SOQL string literal (for config values such as picklist labels)."""
    escaped = value.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n").replace("\r", "\\r")
    return f"'{escaped}'"


def select(obj: str, fields: Iterable[str], where: str = "", order_by: Iterable[str] = (), limit: int | None = None) -> str:
    """``SELECT ... FROM obj [WHERE where] [ORDER BY ...] [LIMIT n]``; ``where`` must be built from this module."""
    cols = list(dict.fromkeys(name(f) for f in fields))  # de-duplicated, order kept
    q = f"SELECT {', '.join(cols)} FROM {name(obj, 'object')}"
    if where:
        q += f" WHERE {where}"
    order = [name(f) for f in order_by]
    if order:
        q += " ORDER BY " + ", ".join(f"{f} ASC" for f in order)
    if limit is not None:
        q += f" LIMIT {int(limit)}"
    return q
